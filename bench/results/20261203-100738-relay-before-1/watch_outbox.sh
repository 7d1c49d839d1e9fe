#!/bin/bash
# Samples the outbox table of the bench's aggregator database every 3 s.
export PGPASSWORD=postgres
P="/usr/lib/postgresql/15/bin/psql -h 127.0.0.1 -p 55432 -U postgres -At"
while true; do
  db=$($P -d postgres -c "select datname from pg_database where datname like 'bench_agg_%' order by oid desc limit 1")
  if [ -n "$db" ]; then
    $P -d "$db" -c "select now()::time(0), pg_relation_size('outbox')/8192 as pages, pg_relation_size('outbox_pkey')/8192 as ipages, n_live_tup, n_dead_tup, autovacuum_count, (select count(*) from outbox), pg_relation_size('tasks')/8192 tpages, (select n_dead_tup from pg_stat_user_tables where relname='tasks') tdead from pg_stat_user_tables where relname='outbox'" 2>/dev/null
  fi
  sleep 3
done
