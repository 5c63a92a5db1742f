-- The readings whose counter_steps() contribution new readings in [min_ts, max_ts] may have changed
-- run from the reading before min_ts to the second reading after max_ts (neighbours within 7 days, as
-- counter_steps() counts them): the hours to recompute. Parameters: device_id, min_ts, max_ts (plain
-- values, so partitions are pruned at plan time). Composed with {readings} and {id}.
SELECT coalesce((SELECT max(r.ts) FROM {readings} r
                 WHERE r.{id} = %(device_id)s AND r.ts < %(min_ts)s
                   AND r.ts >= counter_shift(%(min_ts)s, -168)), %(min_ts)s) AS first_ts,
       coalesce((SELECT max(a.ts) FROM (SELECT r.ts FROM {readings} r
                                        WHERE r.{id} = %(device_id)s AND r.ts > %(max_ts)s
                                          AND r.ts <= counter_shift(%(max_ts)s, 336)
                                        ORDER BY r.ts LIMIT 2) a), %(max_ts)s) AS last_ts;
