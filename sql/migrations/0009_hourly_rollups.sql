-- Hourly rollups: per device and hour, what an exact energy over any run of whole hours needs, kept
-- equal to the raw counter rules (counter_steps() of 0008) by the maintenance job (scheduler/rollups.py).
--
-- A row holds the readings of the bucket (hour, hour + 1 h], open at the start and closed at the end
-- like every window of the API (analytics, history buckets), so that a window's whole hours are a
-- run of rows. energy_kwh and the counts are sums of the readings' counter_steps() contributions
-- (a contribution depends only on the reading's neighbours, never on the window, so sums of hours
-- equal the raw sum). Sums are numeric (the float8 of each contribution made exact decimal): the
-- sum of hours then equals the sum of readings exactly, whatever the order of addition.
-- first_predecessor_ts: the reading the hour's first reading counts from (a window's baseline).
-- last_*: the hour's last reading and its contribution, the tail state of an in-order append: the
-- next reading may turn that reading from a reset into a glitch, so the append subtracts it and
-- adds it again as counter_steps() now judges it.
-- Partitioned by UTC day of `hour` like history; the retention job drops both alike.

-- The bucket of a reading: the start of the hour (h, h + 1 h] holding ts. Hours are absolute
-- time whatever the session's TimeZone, so this is truly IMMUTABLE (see counter_shift in 0008).
CREATE OR REPLACE FUNCTION rollup_hour(ts timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE COST 1
AS $$ SELECT date_bin('1 hour', ts - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00') $$;

CREATE TABLE meter_hourly_rollups (
    meter_id             text             NOT NULL,
    hour                 timestamptz      NOT NULL,
    readings             integer          NOT NULL,
    energy_kwh           numeric          NOT NULL,
    counter_resets       integer          NOT NULL,
    glitches             integer          NOT NULL,
    implausible_steps    integer          NOT NULL,
    first_ts             timestamptz      NOT NULL,
    first_kwh            double precision NOT NULL,
    first_predecessor_ts timestamptz,
    last_ts              timestamptz      NOT NULL,
    last_kwh             double precision NOT NULL,
    last_energy_kwh      numeric          NOT NULL,
    last_is_reset        boolean          NOT NULL,
    last_is_glitch       boolean          NOT NULL,
    last_is_implausible  boolean          NOT NULL,
    voltage_sum          numeric          NOT NULL,
    voltage_min          double precision NOT NULL,
    voltage_max          double precision NOT NULL,
    PRIMARY KEY (meter_id, hour)
) PARTITION BY RANGE (hour);

CREATE TABLE vehicle_hourly_rollups (
    vehicle_id           text             NOT NULL,
    hour                 timestamptz      NOT NULL,
    readings             integer          NOT NULL,
    energy_kwh           numeric          NOT NULL,
    counter_resets       integer          NOT NULL,
    glitches             integer          NOT NULL,
    implausible_steps    integer          NOT NULL,
    first_ts             timestamptz      NOT NULL,
    first_kwh            double precision NOT NULL,
    first_predecessor_ts timestamptz,
    last_ts              timestamptz      NOT NULL,
    last_kwh             double precision NOT NULL,
    last_energy_kwh      numeric          NOT NULL,
    last_is_reset        boolean          NOT NULL,
    last_is_glitch       boolean          NOT NULL,
    last_is_implausible  boolean          NOT NULL,
    battery_temp_sum     numeric          NOT NULL,
    battery_temp_max     double precision NOT NULL,
    soc_min              double precision NOT NULL,
    soc_max              double precision NOT NULL,
    soc_last             double precision NOT NULL,
    PRIMARY KEY (vehicle_id, hour)
) PARTITION BY RANGE (hour);

-- Dirty marks: one row per device and statement that inserted history rows (min_ts..max_ts: the
-- rows it inserted), written by a statement trigger in the same transaction (below), so the drain's
-- batch, a backfill or a psql INSERT all mark what they wrote. Append-only, so the drain never waits
-- for a row lock the maintenance job holds; the job deletes the marks it folded into the rollups in
-- the same transaction as the rollup rows, so a crash in between loses nothing.
CREATE TABLE rollup_marks (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind      text        NOT NULL CHECK (kind IN ('meter', 'vehicle')),
    device_id text        NOT NULL,
    min_ts    timestamptz NOT NULL,
    max_ts    timestamptz NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now()
);

-- Reads ask "has this device pending marks, from when?" (exact per-vehicle answers).
CREATE INDEX rollup_marks_device ON rollup_marks (kind, device_id, min_ts);
-- asOf of the fleet endpoints: the oldest pending mark.
CREATE INDEX rollup_marks_marked_at ON rollup_marks (marked_at);

-- The marking: an AFTER STATEMENT trigger with the statement's inserted rows as a transition table
-- (rows ON CONFLICT DO NOTHING skipped are not in it): one INSERT .. SELECT .. GROUP BY per
-- statement, however many rows it inserted.
CREATE FUNCTION mark_meter_rollups() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_marks (kind, device_id, min_ts, max_ts)
    SELECT 'meter', meter_id, min(ts), max(ts) FROM inserted_rows GROUP BY meter_id;
    RETURN NULL;
END;
$$;

CREATE FUNCTION mark_vehicle_rollups() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_marks (kind, device_id, min_ts, max_ts)
    SELECT 'vehicle', vehicle_id, min(ts), max(ts) FROM inserted_rows GROUP BY vehicle_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER meter_readings_mark_rollups AFTER INSERT ON meter_readings
    REFERENCING NEW TABLE AS inserted_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_meter_rollups();
CREATE TRIGGER vehicle_readings_mark_rollups AFTER INSERT ON vehicle_readings
    REFERENCING NEW TABLE AS inserted_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_vehicle_rollups();
