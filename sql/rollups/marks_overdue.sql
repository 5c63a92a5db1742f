-- Whether the oldest dirty mark has waited longer than `seconds`: the fold, held back while the drain
-- is behind (scheduler/rollups.py DrainFirst), then folds anyway. Parameter: seconds.
SELECT coalesce(min(marked_at) < now() - make_interval(secs => %(seconds)s), false) FROM rollup_marks;
