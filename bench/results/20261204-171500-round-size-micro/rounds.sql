SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan;
\timing on
-- rounds of N events over N quotes, insurer given, 1000 rounds
CREATE TEMP TABLE r AS SELECT (row_number() over (order by id) - 1) / :n AS g, id FROM (SELECT id FROM quotes ORDER BY id LIMIT :rounds * :n) x;
SELECT count(*) FROM (SELECT (apply_events_each('ch', array_agg(id), array_fill(:'a1'::text, ARRAY[:n]), array_agg(gen_random_uuid()), array_fill(1, ARRAY[:n]), array_fill('pending'::text, ARRAY[:n]), array_fill(NULL::jsonb, ARRAY[:n]), array_fill(NULL::text, ARRAY[:n]), array_fill('status'::text, ARRAY[:n]), array_fill('{}'::text, ARRAY[:n]), array_fill(1::int8, ARRAY[:n]))).* FROM r GROUP BY g) x;
SELECT count(*) FROM (SELECT (apply_events('ch', array_agg(id), array_fill(:'a2'::text, ARRAY[:n]), array_agg(gen_random_uuid()), array_fill(1, ARRAY[:n]), array_fill('pending'::text, ARRAY[:n]), array_fill(NULL::jsonb, ARRAY[:n]), array_fill(NULL::text, ARRAY[:n]), array_fill('status'::text, ARRAY[:n]), array_fill('{}'::text, ARRAY[:n]), array_fill(1::int8, ARRAY[:n]))).* FROM r GROUP BY g) x;
