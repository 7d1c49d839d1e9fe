-- Autovacuum in the background, not in bursts. At 233 quotes/s one autovacuum's VACUUM ANALYZE
-- of quote_events took a third of a core for a second; on a machine that busy every event
-- behind it waited, and that stall was the push latency's p99.

-- ANALYZE samples 30 000 rows and builds statistics of every column; for the JSON payloads,
-- which no query filters or joins on, that was most of its CPU (a 75 000-row copy of
-- quote_events: 170–220 ms, 54–61 ms without them).
ALTER TABLE quote_events ALTER COLUMN data SET STATISTICS 0;
ALTER TABLE quote_insurers ALTER COLUMN offer SET STATISTICS 0;

-- A longer pause between a vacuum's rounds of page work spreads the same work over seconds.
ALTER TABLE quote_events SET (autovacuum_vacuum_cost_delay = 20);

-- Each insurer's row is updated once or twice after it is inserted, and no indexed column
-- changes: with room left on its page the update is HOT (no new index entries, the old version
-- pruned with the page) and leaves less for the vacuum.
ALTER TABLE quote_insurers SET (fillfactor = 60, autovacuum_vacuum_cost_delay = 20);
ALTER TABLE quotes SET (fillfactor = 80, autovacuum_vacuum_cost_delay = 20);
