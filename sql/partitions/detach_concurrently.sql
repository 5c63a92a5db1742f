-- Detach without blocking readers or writers of the parent (two transactions; cannot run inside one).
ALTER TABLE {parent} DETACH PARTITION {partition} CONCURRENTLY
