-- Drop the tail cache of devices whose rollup rows are recomputed (the late path, the rebuild): a
-- late reading may have become one of the 2 readings before the frontier, so their next in-order
-- fold looks into raw history once and writes the tail again. Parameters: kind, device_ids (text[]).
DELETE FROM rollup_tails WHERE kind = %(kind)s AND device_id = ANY(%(device_ids)s::text[]);
