-- Per-connection staging tables for the drain: COPY lands here first so that the move into
-- the partitioned history can skip duplicates (COPY itself cannot ON CONFLICT).
CREATE TEMP TABLE IF NOT EXISTS meter_staging (
    meter_id        text,
    ts              timestamptz,
    kwh_consumed_ac double precision,
    voltage         double precision
) ON COMMIT DELETE ROWS;

CREATE TEMP TABLE IF NOT EXISTS vehicle_staging (
    vehicle_id       text,
    ts               timestamptz,
    soc              double precision,
    kwh_delivered_dc double precision,
    battery_temp     double precision
) ON COMMIT DELETE ROWS;
