-- Prior sums on the hourly rollups, so that a window of whole hours costs two rows per device.
--
-- The fleet endpoints summed every hourly row of the window for every device: 24 rows a device for a
-- day, 720 for 30 days, 480,000 rows for a day of a 20,000-device fleet. With prior sums a window's
-- figure is the difference of two rows:
--
--   prior_*: per device, the sum of the column over the device's rows before this one (in hour
--   order). For the device's first and last rows inside a window of whole hours,
--   figure(window) = last.prior_x + last.x - first.prior_x, exactly (numeric and integer sums).
--
-- Only differences between rows of one device mean anything: the retention job drops old partitions
-- and the sums go on from wherever they were. Kept by sql/rollups/*_cumulative.sql, which the fold,
-- the late path and the rebuild run after they change a device's rows (scheduler/rollups.py), in
-- the same transaction: a row they insert has NULL prior sums until then. A late reading three days
-- back rewrites the prior sums of the hours after it; the steady-load fold writes a row's once.
ALTER TABLE meter_hourly_rollups
    ADD COLUMN prior_readings          bigint,
    ADD COLUMN prior_energy_kwh        numeric,
    ADD COLUMN prior_counter_resets    bigint,
    ADD COLUMN prior_glitches          bigint,
    ADD COLUMN prior_implausible_steps bigint;

ALTER TABLE vehicle_hourly_rollups
    ADD COLUMN prior_readings          bigint,
    ADD COLUMN prior_energy_kwh        numeric,
    ADD COLUMN prior_counter_resets    bigint,
    ADD COLUMN prior_glitches          bigint,
    ADD COLUMN prior_implausible_steps bigint,
    ADD COLUMN prior_battery_temp_sum  numeric;

-- The rows already there.
UPDATE meter_hourly_rollups r SET
    prior_readings = s.prior_readings, prior_energy_kwh = s.prior_energy_kwh,
    prior_counter_resets = s.prior_counter_resets, prior_glitches = s.prior_glitches,
    prior_implausible_steps = s.prior_implausible_steps
FROM (
    SELECT meter_id, hour, coalesce(sum(readings) OVER w, 0) AS prior_readings,
           coalesce(sum(energy_kwh) OVER w, 0) AS prior_energy_kwh,
           coalesce(sum(counter_resets) OVER w, 0) AS prior_counter_resets,
           coalesce(sum(glitches) OVER w, 0) AS prior_glitches,
           coalesce(sum(implausible_steps) OVER w, 0) AS prior_implausible_steps
    FROM meter_hourly_rollups
    WINDOW w AS (PARTITION BY meter_id ORDER BY hour ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
) s
WHERE r.meter_id = s.meter_id AND r.hour = s.hour;

UPDATE vehicle_hourly_rollups r SET
    prior_readings = s.prior_readings, prior_energy_kwh = s.prior_energy_kwh,
    prior_counter_resets = s.prior_counter_resets, prior_glitches = s.prior_glitches,
    prior_implausible_steps = s.prior_implausible_steps, prior_battery_temp_sum = s.prior_battery_temp_sum
FROM (
    SELECT vehicle_id, hour, coalesce(sum(readings) OVER w, 0) AS prior_readings,
           coalesce(sum(energy_kwh) OVER w, 0) AS prior_energy_kwh,
           coalesce(sum(counter_resets) OVER w, 0) AS prior_counter_resets,
           coalesce(sum(glitches) OVER w, 0) AS prior_glitches,
           coalesce(sum(implausible_steps) OVER w, 0) AS prior_implausible_steps,
           coalesce(sum(battery_temp_sum) OVER w, 0) AS prior_battery_temp_sum
    FROM vehicle_hourly_rollups
    WINDOW w AS (PARTITION BY vehicle_id ORDER BY hour ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
) s
WHERE r.vehicle_id = s.vehicle_id AND r.hour = s.hour;

-- The fleet endpoints read every device's row of one hour (the window's first and last): by hour, not
-- by device. The fold's updates leave `hour` alone, so they can stay HOT.
CREATE INDEX meter_hourly_rollups_hour ON meter_hourly_rollups (hour);
CREATE INDEX vehicle_hourly_rollups_hour ON vehicle_hourly_rollups (hour);
