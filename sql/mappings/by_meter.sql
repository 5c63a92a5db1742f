-- Every vehicle fed by one meter (served by vehicle_meter_map_meter_id_idx).
SELECT vehicle_id, meter_id, created_at, updated_at
FROM vehicle_meter_map
WHERE meter_id = %(meter_id)s
ORDER BY vehicle_id;
