-- `apply_events` decides a round's events in memory and writes them in one statement. Event
-- by event (migration 0004) each stored event cost two statements and a completion three more,
-- each with its executor's start-up, and at 186 quotes/s that was nearly all of core-app's
-- database. Deciding in the service instead took six round trips a round where this takes one,
-- and under load each round trip waited for the CPU: the round's latency doubled at every load.
--
-- The quotes are locked first, in id order; their insurers and the event ids already logged are
-- read after that (a VOLATILE function's statements each take a fresh snapshot), so what is
-- decided on is what the previous holder of a lock committed. The events of quotes not stored
-- yet go the old way (`apply_events_each`), which parks them or waits for a quote being stored
-- right now, and so does a round of up to three events (see below). The answers are those of
-- migration 0004, event by event, in the order given.
ALTER FUNCTION apply_events(text, uuid[], text[], uuid[], int[], text[], jsonb[], text[], text[], text[], bigint[])
    RENAME TO apply_events_each;

-- The SSE `data` of a quote's `complete`: how many of its insurers offered, of how many.
CREATE FUNCTION complete_event_data(p_quote uuid, p_offers bigint, p_insurers bigint)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN jsonb_build_object('status', 'complete', 'quote_id', p_quote::text, 'offers', p_offers,
                              'insurers', p_insurers);
END
$$;

-- Migration 0004's, with its `data` from `complete_event_data`, as the set path's.
CREATE OR REPLACE FUNCTION complete_quote(p_channel text, p_quote uuid, p_seq bigint)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_data jsonb;
BEGIN
    SELECT complete_event_data(p_quote, count(*) FILTER (WHERE status = 'offer'), count(*))
    INTO v_data FROM quote_insurers WHERE quote_id = p_quote;
    INSERT INTO quote_events (quote_id, seq, name, data) VALUES (p_quote, p_seq, 'complete', v_data);
    UPDATE quotes SET next_seq = p_seq + 1, completed_at = now() WHERE id = p_quote;
    PERFORM pg_notify(p_channel, push_payload(p_quote, p_seq, 'complete', v_data));
END
$$;

CREATE FUNCTION apply_events(
    p_channel text, p_quotes uuid[], p_insurers text[], p_event_ids uuid[], p_versions int[], p_statuses text[],
    p_offers jsonb[], p_reasons text[], p_names text[], p_payloads text[], p_arrival_locks bigint[]
) RETURNS TABLE (out_applied text, out_seq bigint, out_completed boolean) LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off AS $$
DECLARE
    n int := coalesce(cardinality(p_quotes), 0);
    -- The locked quotes, by id; per quote its insurers' counts.
    q_ids uuid[];
    q_next bigint[];
    q_done boolean[];
    q_changed boolean[];
    q_pending int[];
    q_offers int[];
    q_count int[];
    -- Their insurers: key `<quote> <insurer>`, the quote's index, and the last event stored.
    i_keys text[];
    i_quote int[];
    i_display text[];
    i_status text[];
    i_version int[];
    i_last int[];
    seen uuid[];
    -- Per event: the answer.
    answers text[] := array_fill(NULL::text, ARRAY[n]);
    seqs bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    completes boolean[] := array_fill(false, ARRAY[n]);
    -- The log's new entries in push order: the event's index (NULL for `complete`), quote, seq,
    -- the insurer's index; for `complete`, the quote's offers and insurers.
    e_k int[] := '{}';
    e_quote uuid[] := '{}';
    e_seq bigint[] := '{}';
    e_insurer int[] := '{}';
    e_offers int[] := '{}';
    e_count int[] := '{}';
    -- Events of quotes not locked: their indexes, for `apply_events_each`.
    rest int[] := '{}';
    r_answers text[];
    r_seqs bigint[];
    r_completes boolean[];
    qi int;
    ii int;
    was text;
    pushed bigint;
BEGIN
    -- A round of up to three events, as a consumer keeping up gets, costs less event by event:
    -- this path's statements cost more than such a round saves. Two runs of a micro-benchmark
    -- (bench/results/20261204-171500-round-size-micro; ms for 1 000 rounds, event by event
    -- against this path): one event 374, 494 against 474, 592; two 468, 757 against 555, 798;
    -- three 686, 640 against 601, 736. Five events (200 rounds) 363 against 305, twenty 1 252
    -- against 810.
    IF n < 4 THEN
        RETURN QUERY SELECT * FROM apply_events_each(p_channel, p_quotes, p_insurers, p_event_ids, p_versions,
                                                     p_statuses, p_offers, p_reasons, p_names, p_payloads,
                                                     p_arrival_locks);
        RETURN;
    END IF;
    SELECT array_agg(id ORDER BY id), array_agg(next_seq ORDER BY id), array_agg(completed_at IS NOT NULL ORDER BY id)
    INTO q_ids, q_next, q_done
    FROM (SELECT id, next_seq, completed_at FROM quotes WHERE id = ANY(p_quotes) ORDER BY id FOR UPDATE) AS locked;
    q_ids := coalesce(q_ids, '{}');
    -- One statement for both reads (each statement has its executor's start-up).
    SELECT array_agg(quote_id::text || ' ' || insurer), array_agg(array_position(q_ids, quote_id)),
           array_agg(display_name), array_agg(status), array_agg(version),
           coalesce((SELECT array_agg(event_id) FROM quote_events WHERE event_id = ANY(p_event_ids)), '{}')
    INTO i_keys, i_quote, i_display, i_status, i_version, seen
    FROM quote_insurers WHERE quote_id = ANY(q_ids);
    q_changed := array_fill(false, ARRAY[cardinality(q_ids)]);
    q_pending := array_fill(0, ARRAY[cardinality(q_ids)]);
    q_offers := array_fill(0, ARRAY[cardinality(q_ids)]);
    q_count := array_fill(0, ARRAY[cardinality(q_ids)]);
    i_last := array_fill(NULL::int, ARRAY[coalesce(cardinality(i_keys), 0)]);
    FOR r IN 1 .. coalesce(cardinality(i_keys), 0) LOOP
        qi := i_quote[r];
        q_count[qi] := q_count[qi] + 1;
        q_pending[qi] := q_pending[qi] + (i_status[r] = 'pending')::int;
        q_offers[qi] := q_offers[qi] + (i_status[r] = 'offer')::int;
    END LOOP;

    FOR k IN 1 .. n LOOP
        qi := array_position(q_ids, p_quotes[k]);
        IF qi IS NULL THEN
            rest := rest || k;
            CONTINUE;
        END IF;
        ii := array_position(i_keys, p_quotes[k]::text || ' ' || p_insurers[k]);
        IF ii IS NULL THEN
            answers[k] := CASE WHEN q_done[qi] THEN 'late' ELSE 'unknown_insurer' END;
        ELSIF p_event_ids[k] = ANY(seen) THEN
            answers[k] := 'duplicate';
        ELSIF q_done[qi] THEN
            answers[k] := 'late';
        ELSIF p_versions[k] <= i_version[ii] THEN
            answers[k] := 'stale';
        ELSE
            was := i_status[ii];
            q_pending[qi] := q_pending[qi] - (was = 'pending')::int + (p_statuses[k] = 'pending')::int;
            q_offers[qi] := q_offers[qi] - (was = 'offer')::int + (p_statuses[k] = 'offer')::int;
            i_status[ii] := p_statuses[k];
            i_version[ii] := p_versions[k];
            i_last[ii] := k;
            seen := seen || p_event_ids[k];
            answers[k] := 'stored';
            seqs[k] := q_next[qi];
            e_k := e_k || k;
            e_quote := e_quote || p_quotes[k];
            e_seq := e_seq || q_next[qi];
            e_insurer := e_insurer || ii;
            e_offers := e_offers || NULL::int;
            e_count := e_count || NULL::int;
            q_next[qi] := q_next[qi] + 1;
            q_changed[qi] := true;
            IF q_pending[qi] = 0 THEN
                completes[k] := true;
                q_done[qi] := true;
                e_k := e_k || NULL::int;
                e_quote := e_quote || p_quotes[k];
                e_seq := e_seq || q_next[qi];
                e_insurer := e_insurer || NULL::int;
                e_offers := e_offers || q_offers[qi];
                e_count := e_count || q_count[qi];
                q_next[qi] := q_next[qi] + 1;
            END IF;
        END IF;
    END LOOP;

    IF cardinality(e_k) > 0 THEN
        -- One statement for the writes and the pushes (each statement has its executor start-up).
        -- Each update also names its rows' keys as an array: the plan kept is made at the first
        -- round, on nearly empty tables, and there it joins the round's rows to a scan of the
        -- whole index, which grows with the table; the array bounds that scan.
        WITH entry AS (
            SELECT e.ord, e.quote_id, e.seq, p_event_ids[e.k] AS event_id,
                   coalesce(p_names[e.k], 'complete') AS name,
                   CASE WHEN e.k IS NULL
                        THEN complete_event_data(e.quote_id, e.offers, e.count)
                        ELSE insurer_event_data(p_insurers[e.k], i_display[e.insurer], p_statuses[e.k],
                                                p_offers[e.k], p_reasons[e.k]) END AS data
            FROM unnest(e_k, e_quote, e_seq, e_insurer, e_offers, e_count) WITH ORDINALITY
                 AS e(k, quote_id, seq, insurer, offers, count, ord)
        ), logged AS (
            INSERT INTO quote_events (quote_id, seq, event_id, name, data)
            SELECT quote_id, seq, event_id, name, data FROM entry
        ), insurers AS (
            UPDATE quote_insurers i
            SET status = p_statuses[c.k], version = p_versions[c.k], offer = p_offers[c.k], reason = p_reasons[c.k],
                updated_at = now()
            FROM unnest(i_last) AS c(k)
            WHERE c.k IS NOT NULL AND i.quote_id = ANY(q_ids)
              AND i.quote_id = p_quotes[c.k] AND i.insurer = p_insurers[c.k]
        ), quotes AS (
            UPDATE quotes q
            SET next_seq = c.next_seq, completed_at = CASE WHEN c.done THEN now() END
            FROM unnest(q_ids, q_next, q_done, q_changed) AS c(id, next_seq, done, changed)
            WHERE c.changed AND q.id = ANY(q_ids) AND q.id = c.id
        )
        SELECT count(pg_notify(p_channel, push_payload(quote_id, seq, name, data)))
        INTO pushed
        FROM (SELECT quote_id, seq, name, data FROM entry ORDER BY ord) AS pushed;
    END IF;

    IF cardinality(rest) > 0 THEN
        SELECT array_agg(x.out_applied ORDER BY x.ord), array_agg(x.out_seq ORDER BY x.ord),
               array_agg(x.out_completed ORDER BY x.ord)
        INTO r_answers, r_seqs, r_completes
        FROM apply_events_each(
            p_channel,
            ARRAY(SELECT p_quotes[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o),
            ARRAY(SELECT p_insurers[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o),
            ARRAY(SELECT p_event_ids[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o),
            ARRAY(SELECT p_versions[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o),
            ARRAY(SELECT p_statuses[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o),
            ARRAY(SELECT p_offers[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o),
            ARRAY(SELECT p_reasons[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o),
            ARRAY(SELECT p_names[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o),
            ARRAY(SELECT p_payloads[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o),
            ARRAY(SELECT p_arrival_locks[k] FROM unnest(rest) WITH ORDINALITY AS r(k, o) ORDER BY o)
        ) WITH ORDINALITY AS x(out_applied, out_seq, out_completed, ord);
        FOR j IN 1 .. cardinality(rest) LOOP
            answers[rest[j]] := r_answers[j];
            seqs[rest[j]] := r_seqs[j];
            completes[rest[j]] := r_completes[j];
        END LOOP;
    END IF;

    FOR k IN 1 .. n LOOP
        out_applied := answers[k];
        out_seq := seqs[k];
        out_completed := completes[k];
        RETURN NEXT;
    END LOOP;
END
$$;
