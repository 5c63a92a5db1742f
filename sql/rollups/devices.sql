-- Every device of the kind that ever wrote a reading (the drain keeps a *_latest row for each): the
-- devices a rebuild goes through. No parameters. Composed with {latest} and {id}.
SELECT {id} FROM {latest} ORDER BY {id};
