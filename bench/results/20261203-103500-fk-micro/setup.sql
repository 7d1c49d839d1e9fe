INSERT INTO quotes (id, request_hash, deadline, expires_at)
SELECT gen_random_uuid(), '\x00', now() + interval '1 hour', now() + interval '1 hour' FROM generate_series(1, 1000);
INSERT INTO quote_insurers (quote_id, insurer, display_name)
SELECT q.id, i, i FROM quotes q, unnest(array['alfa','vsk','reso','rgs','ingos','sogaz']) i;
CREATE TABLE ev AS
SELECT row_number() OVER (ORDER BY random()) AS n, q.id AS quote, i AS insurer, gen_random_uuid() AS event_id
FROM quotes q, unnest(array['alfa','vsk','reso','rgs','ingos','sogaz']) i;
VACUUM ANALYZE;
CREATE TABLE rounds AS
SELECT (n - 1) / 16 AS r, array_agg(quote ORDER BY n) AS quotes, array_agg(insurer ORDER BY n) AS insurers,
       array_agg(event_id ORDER BY n) AS ids, array_agg(1 ORDER BY n) AS versions,
       array_agg('offer'::text ORDER BY n) AS statuses,
       array_agg('{"premium": {"amount": "12345.67", "currency": "RUB"}, "reference": "X-1"}'::jsonb ORDER BY n) AS offers,
       array_agg(NULL::text ORDER BY n) AS reasons, array_agg('offer'::text ORDER BY n) AS names,
       array_agg('{}'::text ORDER BY n) AS payloads, array_agg(1::bigint ORDER BY n) AS locks
FROM ev GROUP BY 1;
CREATE INDEX ON rounds (r);
