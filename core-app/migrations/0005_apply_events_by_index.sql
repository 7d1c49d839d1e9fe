-- `apply_events` plans its statements with sequential scans off. A plpgsql statement keeps
-- the generic plan it settles on after five runs until the next ANALYZE, and one made while
-- quote_events was analysed empty (a new database) looked for each event's duplicate by reading
-- the whole table: the locking read went from 16 to 108 buffers, and an event from about 190
-- to 390–630 µs of backend CPU. In a micro-benchmark that happened in 23 runs of 39, and in
-- none of 10 with this setting (116–188 µs; bench/results/20261203-103500-fk-micro). Every
-- statement in it finds its rows by key.
ALTER FUNCTION apply_events(text, uuid[], text[], uuid[], int[], text[], jsonb[], text[], text[], text[], bigint[])
    SET enable_seqscan = off;
