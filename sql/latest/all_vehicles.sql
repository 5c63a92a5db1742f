-- Every vehicle's durable latest reading, for rebuilding Redis after it lost its data.
SELECT vehicle_id, ts, soc, kwh_delivered_dc, battery_temp
FROM vehicle_latest;
