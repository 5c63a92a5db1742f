-- DC energy delivered into a vehicle's battery over the window (from_ts, to_ts], and its average
-- battery temperature. Parameters: vehicle_id, from_ts, to_ts, max_vehicle_power_kw.
--
-- Energy follows the one counter rule set, counter_steps() (sql/migrations/0008_counter_rules.sql),
-- like meter_energy.sql (numeric sums, equal to the rollups' exactly). The average temperature covers the readings
-- inside the window only, read from the covering primary key in a second index-only scan. Energies and the
-- average stay numeric for web/analytics.py to round exactly; the average is round(sum, 30) / count, the
-- expression analytics/vehicle_window.sql and fleet/vehicles.sql use too, so that all three round one quotient.
WITH steps AS (
    SELECT coalesce(sum(s.energy_kwh::numeric), 0)                 AS energy_kwh,
           count(*) FILTER (WHERE s.is_reset)                      AS counter_resets,
           count(*) FILTER (WHERE s.is_glitch)                     AS glitches,
           count(*) FILTER (WHERE s.is_implausible)                AS implausible_steps,
           count(*)                                                AS readings,
           min(s.predecessor_ts) FILTER (WHERE s.predecessor_ts <= %(from_ts)s) AS baseline_ts
    FROM counter_steps('vehicle', %(vehicle_id)s, %(from_ts)s, %(to_ts)s, %(max_vehicle_power_kw)s) s
)
SELECT steps.*,
       (SELECT round(sum(r.battery_temp::numeric), 30) / nullif(count(*), 0) FROM vehicle_readings r
        WHERE r.vehicle_id = %(vehicle_id)s AND r.ts > %(from_ts)s AND r.ts <= %(to_ts)s) AS avg_battery_temp
FROM steps;
