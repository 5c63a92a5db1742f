-- The mapping of one vehicle.
SELECT vehicle_id, meter_id, created_at, updated_at
FROM vehicle_meter_map
WHERE vehicle_id = %(vehicle_id)s;
