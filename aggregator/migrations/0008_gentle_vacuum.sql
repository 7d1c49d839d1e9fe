-- Autovacuum in the background, not in bursts (as core-app's 0007): no statistics on the JSON
-- payloads, which no query filters or joins on and which were most of ANALYZE's CPU, and a
-- longer pause between a vacuum's rounds of page work on the tables the pollers keep busy.
ALTER TABLE applications ALTER COLUMN request SET STATISTICS 0;
ALTER TABLE outbox ALTER COLUMN payload SET STATISTICS 0;
ALTER TABLE outbox ALTER COLUMN headers SET STATISTICS 0;
ALTER TABLE applications SET (autovacuum_vacuum_cost_delay = 20);
ALTER TABLE tasks SET (autovacuum_vacuum_cost_delay = 20);
