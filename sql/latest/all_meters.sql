-- Every meter's durable latest reading, for rebuilding Redis after it lost its data.
SELECT meter_id, ts, kwh_consumed_ac, voltage
FROM meter_latest;
