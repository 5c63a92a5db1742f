-- History of every reading, partitioned by UTC day on ts.
-- The primary key starts with the device id: it serves per-device range scans (analytics) and
-- lets the tables become Citus distributed tables (distribution column = device id) later.
-- It must include ts, the partition key, to be allowed on a partitioned table.

CREATE TABLE meter_readings (
    meter_id        text             NOT NULL,
    ts              timestamptz      NOT NULL,
    kwh_consumed_ac double precision NOT NULL,
    voltage         double precision NOT NULL,
    PRIMARY KEY (meter_id, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE vehicle_readings (
    vehicle_id       text             NOT NULL,
    ts               timestamptz      NOT NULL,
    soc              double precision NOT NULL,
    kwh_delivered_dc double precision NOT NULL,
    battery_temp     double precision NOT NULL,
    PRIMARY KEY (vehicle_id, ts)
) PARTITION BY RANGE (ts);
