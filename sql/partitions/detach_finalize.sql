-- Finish a DETACH ... CONCURRENTLY that was interrupted.
ALTER TABLE {parent} DETACH PARTITION {partition} FINALIZE
