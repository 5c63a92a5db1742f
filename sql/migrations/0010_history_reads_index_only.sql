-- Every history read is an index-only scan: the primary keys carry every value column.
-- 0004 put the counters (and the battery temperature) in the keys' leaf pages for the analytics;
-- the history API also returns soc (vehicles) and voltage (meters), so its raw pages, CSV and
-- bucket statistics still fetched one heap page per reading (a device's readings are spread over
-- the heap, one a minute among every other device's): 1,000 to 1,400 buffers for a day of one
-- vehicle, read from the OS cache whenever the day does not fit in shared_buffers. With these two
-- columns in the keys the same reads touch a few dozen contiguous index pages. The key is replaced,
-- not doubled (ingest still maintains one index per history table); it grows by 8 bytes a reading.
-- Cost of applying it: each partition's key is rebuilt under a lock that holds the drain (readings
-- wait in the stream meanwhile, none is lost; ingest answers 503 once BACKLOG_LIMIT is reached).
-- Index-only scans need the visibility map, which (auto)vacuum sets; pages written since the last
-- vacuum are read from the heap as before.

ALTER TABLE meter_readings DROP CONSTRAINT meter_readings_pkey;
ALTER TABLE meter_readings
    ADD CONSTRAINT meter_readings_pkey PRIMARY KEY (meter_id, ts) INCLUDE (kwh_consumed_ac, voltage);

ALTER TABLE vehicle_readings DROP CONSTRAINT vehicle_readings_pkey;
ALTER TABLE vehicle_readings
    ADD CONSTRAINT vehicle_readings_pkey PRIMARY KEY (vehicle_id, ts) INCLUDE (kwh_delivered_dc, battery_temp, soc);
