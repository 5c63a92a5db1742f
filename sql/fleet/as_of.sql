-- asOf of the fleet endpoints: every reading committed before it is in the rollups (the oldest
-- pending dirty mark's time, or now when none is pending). No parameters.
SELECT coalesce(min(marked_at), now()) FROM rollup_marks;
