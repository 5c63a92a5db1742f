-- The raw COPY floor: move staged rows into the partitioned history, duplicates ignored, nothing else.
INSERT INTO meter_readings SELECT * FROM meter_staging ON CONFLICT DO NOTHING;
INSERT INTO vehicle_readings SELECT * FROM vehicle_staging ON CONFLICT DO NOTHING;
