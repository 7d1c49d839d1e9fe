SET synchronous_commit = off;
SELECT pg_backend_pid() AS pid \gset
\setenv PID :pid
\! awk '{print "cpu_before", $14+$15}' /proc/$PID/stat
DO $$
DECLARE x record;
BEGIN
  FOR x IN SELECT * FROM rounds ORDER BY r LOOP
    PERFORM * FROM apply_events('bench_fk', x.quotes, x.insurers, x.ids, x.versions, x.statuses, x.offers, x.reasons, x.names, x.payloads, x.locks);
    COMMIT;
  END LOOP;
END $$;
\! awk '{print "cpu_after", $14+$15}' /proc/$PID/stat
SELECT count(*) AS events, count(*) FILTER (WHERE name = 'complete') AS completes FROM quote_events;
