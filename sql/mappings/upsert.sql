-- Map a vehicle to a meter, replacing the vehicle's earlier meter if it had one.
-- `created` is true for a new row (xmax = 0 on a freshly inserted tuple; an ON CONFLICT update
-- sets it), so one statement both writes and tells 201 from 200. updated_at moves only when
-- the meter actually changes.
INSERT INTO vehicle_meter_map AS m (vehicle_id, meter_id)
VALUES (%(vehicle_id)s, %(meter_id)s)
ON CONFLICT (vehicle_id) DO UPDATE
    SET meter_id = EXCLUDED.meter_id,
        updated_at = CASE WHEN m.meter_id = EXCLUDED.meter_id THEN m.updated_at ELSE now() END
RETURNING vehicle_id, meter_id, created_at, updated_at, (xmax = 0) AS created;
