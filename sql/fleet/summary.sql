-- The fleet's figures over the whole hours (from_ts, to_ts] in one row (GET /v1/analytics/fleet,
-- web/fleet.py). Composed: the placeholder in braces is sql/fleet/vehicles.sql, every mapped vehicle's figures.
-- Parameters: vehicles.sql's. A meter feeding several vehicles counts once (meters). The sums stay
-- exact (numeric) for web/fleet.py to round as every answer does; the percentiles interpolate
-- linearly between the closest ranks over the vehicles that have a ratio (percentile_cont, as
-- numpy's default).
-- Only the columns used here are named, so that Postgres drops the others' expressions (the averages).
WITH fleet AS MATERIALIZED (
    SELECT f.meter_id, f.ac, f.m_resets, f.m_glitches, f.m_implausible, f.dc, f.v_readings, f.temp_sum,
           f.v_resets, f.v_glitches, f.v_implausible, f.ratio, f.warnings
    FROM (
{vehicles}
    ) f
), meters AS (
    -- One row per meter (its figures are the same in every vehicle's row): hashed, not sorted.
    SELECT meter_id, min(ac) AS ac, min(m_resets) AS m_resets, min(m_glitches) AS m_glitches,
           min(m_implausible) AS m_implausible
    FROM fleet GROUP BY meter_id
), vehicles AS (
    SELECT count(*) AS vehicles, coalesce(sum(dc), 0) AS dc, coalesce(sum(v_readings), 0) AS readings,
           coalesce(sum(temp_sum), 0) AS temp_sum, coalesce(sum(v_resets), 0) AS v_resets,
           coalesce(sum(v_glitches), 0) AS v_glitches, coalesce(sum(v_implausible), 0) AS v_implausible,
           percentile_cont(ARRAY[0.1, 0.5, 0.9]) WITHIN GROUP (ORDER BY ratio::float8)
               FILTER (WHERE ratio IS NOT NULL) AS percentiles,
           count(ratio) AS with_ratio, coalesce(sum(warnings), 0) AS warnings,
           count(*) FILTER (WHERE warnings > 0) AS with_warnings
    FROM fleet
)
SELECT v.vehicles, m.meters, m.ac, v.dc, v.readings, v.temp_sum, m.m_resets, m.m_glitches, m.m_implausible,
       v.v_resets, v.v_glitches, v.v_implausible, v.percentiles, v.with_ratio, v.warnings, v.with_warnings
FROM vehicles v
CROSS JOIN (
    SELECT count(*) AS meters, coalesce(sum(ac), 0) AS ac, coalesce(sum(m_resets), 0) AS m_resets,
           coalesce(sum(m_glitches), 0) AS m_glitches, coalesce(sum(m_implausible), 0) AS m_implausible
    FROM meters
) m;
