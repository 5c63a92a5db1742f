-- For each history table: how many daily partitions exist after, before and on a given UTC day.
-- %(tables)s: the parent tables; %(today)s: the UTC day to count from.
SELECT parent,
       count(p.day) FILTER (WHERE p.day > %(today)s::date) AS ahead,
       count(p.day) FILTER (WHERE p.day < %(today)s::date) AS behind,
       count(p.day) FILTER (WHERE p.day = %(today)s::date) AS today
FROM unnest(%(tables)s::text[]) AS parent
LEFT JOIN LATERAL daily_partitions(parent::regclass) AS p ON true
GROUP BY parent
ORDER BY parent;
