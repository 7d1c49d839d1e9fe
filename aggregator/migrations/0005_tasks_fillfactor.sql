-- A held task's lease renewal changes no indexed column; room on each page lets Postgres
-- write it as a HOT update (no new index entries, no index bloat from a busy queue).
ALTER TABLE tasks SET (fillfactor = 80);
