-- Remove a vehicle's mapping; returns the removed row, none if there was no mapping.
DELETE FROM vehicle_meter_map
WHERE vehicle_id = %(vehicle_id)s
RETURNING vehicle_id;
