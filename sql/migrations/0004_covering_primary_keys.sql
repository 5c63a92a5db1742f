-- Covering primary keys for the analytics.
-- A performance query reads one device's counter (and battery temperature) over a window. A
-- device's readings are spread over the heap, one a minute among every other device's, so a plain
-- key costs one heap page per reading (1,440 a day). With the values stored in the key's leaf
-- pages (INCLUDE) the same query is an index-only scan of a few contiguous pages. The key is
-- replaced, not doubled: ingest still maintains exactly one index per history table.
-- Index-only scans need the visibility map, which (auto)vacuum sets; pages written since the last
-- vacuum are read from the heap as before.

ALTER TABLE meter_readings DROP CONSTRAINT meter_readings_pkey;
ALTER TABLE meter_readings
    ADD CONSTRAINT meter_readings_pkey PRIMARY KEY (meter_id, ts) INCLUDE (kwh_consumed_ac);

ALTER TABLE vehicle_readings DROP CONSTRAINT vehicle_readings_pkey;
ALTER TABLE vehicle_readings
    ADD CONSTRAINT vehicle_readings_pkey PRIMARY KEY (vehicle_id, ts) INCLUDE (kwh_delivered_dc, battery_temp);
