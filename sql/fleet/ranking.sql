-- A page of the fleet ranking (GET /v1/analytics/vehicles, web/fleet.py): every mapped vehicle's
-- figures over the whole hours (from_ts, to_ts], sorted by one of them. Composed: the placeholder in braces is
-- sql/fleet/vehicles.sql. Parameters: vehicles.sql's; sort ('efficiency', 'dcKwh', 'acKwh' or
-- 'avgBatteryTemp'), descending (boolean), limit (the page's rows + 1: one more says a page follows),
-- after_missing, after_value, after_id (the cursor's key of the last row seen, NULL for the first page).
-- The key: (missing, signed value, vehicle_id): vehicles without the figure come last in both orders,
-- the value is negated for a descending order, ids in code point order (COLLATE "C") break ties.
WITH fleet AS (
{vehicles}
), keyed AS (
    SELECT f.*, (CASE %(sort)s WHEN 'efficiency' THEN f.ratio WHEN 'dcKwh' THEN f.dc_kwh
                               WHEN 'acKwh' THEN f.ac_kwh ELSE f.avg_temp END)::float8 AS value
    FROM fleet f
), signed AS (
    SELECT k.*, (k.value IS NULL)::int AS missing,
           CASE WHEN k.value IS NULL THEN 0 WHEN %(descending)s THEN -k.value ELSE k.value END AS signed_value
    FROM keyed k
)
SELECT vehicle_id, meter_id, ac, m_resets, m_glitches, m_implausible, m_readings, m_baseline,
       dc, v_resets, v_glitches, v_implausible, v_readings, v_baseline, avg_quotient, missing, signed_value
FROM signed
WHERE %(after_missing)s::int IS NULL
   OR (missing, signed_value, vehicle_id COLLATE "C")
      > (%(after_missing)s::int, %(after_value)s::float8, %(after_id)s::text COLLATE "C")
ORDER BY missing, signed_value, vehicle_id COLLATE "C"
LIMIT %(limit)s;
