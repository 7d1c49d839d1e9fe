\set QUIET on
TRUNCATE quotes CASCADE; TRUNCATE early_events;
INSERT INTO quotes (id, request_hash, deadline, expires_at) SELECT gen_random_uuid(), 'h', now()+interval '1 min', now()+interval '1 min' FROM generate_series(1,20000);
INSERT INTO quote_insurers (quote_id, insurer, display_name) SELECT q.id, i, upper(i) FROM quotes q, unnest(array['alfa','vsk','reso','ingos','rgs','sogaz']) i;
INSERT INTO quote_events (quote_id, seq, event_id, name, data) SELECT q.id, s, gen_random_uuid(), 'status', '{"status":"pending"}' FROM quotes q, generate_series(1,3) s;
UPDATE quotes SET next_seq = 4;
VACUUM ANALYZE;
SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan;
PREPARE w(text, uuid[], int8[], uuid[], text[], text[], text[], text[], jsonb[], text[], int8[], int8[], uuid[], text[], text[], int4[], jsonb[], text[], uuid[], int8[], bool[]) AS
WITH entry AS (
             SELECT e.ord, e.quote_id, e.seq, e.event_id, e.name,
                    CASE WHEN e.name = 'complete'
                         THEN jsonb_build_object('status', 'complete', 'quote_id', e.quote_id::text,
                                                 'offers', e.offers, 'insurers', e.insurers)
                         ELSE insurer_event_data(e.insurer, e.display_name, e.status, e.offer, e.reason) END AS data
             FROM unnest($2::uuid[], $3::int8[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::jsonb[], $10::text[], $11::int8[], $12::int8[]) WITH ORDINALITY
                  AS e(quote_id, seq, event_id, name, insurer, display_name, status, offer, reason, offers, insurers, ord)
         ), logged AS (
             INSERT INTO quote_events (quote_id, seq, event_id, name, data)
             SELECT quote_id, seq, event_id, name, data FROM entry
         ), insurers AS (
             UPDATE quote_insurers i
             SET status = c.status, version = c.version, offer = c.offer, reason = c.reason, updated_at = now()
             FROM unnest($13::uuid[], $14::text[], $15::text[], $16::int4[], $17::jsonb[], $18::text[])
                  AS c(quote_id, insurer, status, version, offer, reason)
             WHERE i.quote_id = ANY($13) AND i.quote_id = c.quote_id AND i.insurer = c.insurer
         ), quotes AS (
             UPDATE quotes q
             SET next_seq = c.next_seq, completed_at = CASE WHEN c.completed THEN now() ELSE q.completed_at END
             FROM unnest($19::uuid[], $20::int8[], $21::bool[]) AS c(id, next_seq, completed)
             WHERE q.id = ANY($19) AND q.id = c.id
         )
         SELECT count(pg_notify($1, push_payload(quote_id, seq, name, data)))
         FROM (SELECT quote_id, seq, name, data FROM entry ORDER BY ord) AS pushed;
-- 30 events over 20 quotes: one event of insurer alfa per quote, version 1.
CREATE TEMP TABLE ev AS SELECT id AS quote_id, 4::int8 AS seq, gen_random_uuid() AS event_id, row_number() over () AS n FROM (SELECT id FROM quotes ORDER BY random() LIMIT 30) x;
\set QUIET off
SELECT array_agg(quote_id ORDER BY n) AS q, array_agg(seq ORDER BY n) AS s, array_agg(event_id ORDER BY n) AS e,
 array_agg('status'::text) AS nm, array_agg('alfa'::text) AS ins, array_agg('ALFA'::text) AS dn, array_agg('declined'::text) AS st,
 array_agg(NULL::jsonb) AS nj, array_agg('no'::text) AS rs, array_agg(NULL::int8) AS ni, array_agg(1) AS v, array_agg(5::int8) AS nx, array_agg(false) AS f FROM ev \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE w('ch', :'q', :'s', :'e', :'nm', :'ins', :'dn', :'st', :'nj', :'rs', :'ni', :'ni', :'q', :'ins', :'st', :'v', :'nj', :'rs', :'q', :'nx', :'f');
