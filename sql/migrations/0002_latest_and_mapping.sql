-- Durable copy of each device's newest reading (Redis holds the hot copy).
-- The drain only ever moves a row forward in time.

CREATE TABLE meter_latest (
    meter_id        text PRIMARY KEY,
    ts              timestamptz      NOT NULL,
    kwh_consumed_ac double precision NOT NULL,
    voltage         double precision NOT NULL,
    updated_at      timestamptz      NOT NULL DEFAULT now()
);

CREATE TABLE vehicle_latest (
    vehicle_id       text PRIMARY KEY,
    ts               timestamptz      NOT NULL,
    soc              double precision NOT NULL,
    kwh_delivered_dc double precision NOT NULL,
    battery_temp     double precision NOT NULL,
    updated_at       timestamptz      NOT NULL DEFAULT now()
);

-- Which meter feeds which vehicle: one meter per vehicle, a meter may feed several vehicles.
CREATE TABLE vehicle_meter_map (
    vehicle_id text PRIMARY KEY,
    meter_id   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX vehicle_meter_map_meter_id_idx ON vehicle_meter_map (meter_id);
