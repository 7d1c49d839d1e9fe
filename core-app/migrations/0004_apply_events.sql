-- Applies the aggregator's events in the database, a consumer round in one call: a round was
-- two or three statements per event, each a round trip, and under load the round's time went
-- into waiting for the CPU between them (a round of 128 events took 650 ms), so the backlog
-- grew with each round. Called as one statement it is one transaction; inside the caller's
-- transaction it is part of it. Every change to a quote happens under its row lock (see
-- `store::apply`).
--
-- The helpers are PL/pgSQL, not SQL: a SQL function called from PL/pgSQL is parsed and
-- planned again at every call (it is inlined only into a query's plan).

-- The SSE `data` of an insurer's status or offer event.
CREATE FUNCTION insurer_event_data(p_insurer text, p_display_name text, p_status text, p_offer jsonb, p_reason text)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN jsonb_build_object('insurer', p_insurer, 'display_name', p_display_name, 'status', p_status)
        || CASE WHEN p_offer IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('offer', p_offer) END
        || CASE WHEN p_reason IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('reason', p_reason) END;
END
$$;

-- The notification that pushes event `p_seq` of `p_quote` to every replica's streams:
-- `<quote> <seq> <name> <data>`, or the quote id alone (read the database) when that is too
-- large for a notification (Postgres refuses payloads of 8000 bytes and more).
-- `store::parse_push` reads it.
CREATE FUNCTION push_payload(p_quote uuid, p_seq bigint, p_name text, p_data jsonb)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    payload text := p_quote::text || ' ' || p_seq::text || ' ' || p_name || ' ' || p_data::text;
BEGIN
    RETURN CASE WHEN octet_length(payload) < 7900 THEN payload ELSE p_quote::text END;
END
$$;

-- Appends `complete` as event `p_seq`, marks the quote completed and pushes the event; the
-- quote row must be locked and no insurer pending.
CREATE FUNCTION complete_quote(p_channel text, p_quote uuid, p_seq bigint)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    data jsonb;
BEGIN
    SELECT jsonb_build_object('status', 'complete', 'quote_id', p_quote::text,
                              'offers', count(*) FILTER (WHERE status = 'offer'), 'insurers', count(*))
    INTO data FROM quote_insurers WHERE quote_id = p_quote;
    INSERT INTO quote_events (quote_id, seq, name, data) VALUES (p_quote, p_seq, 'complete', data);
    UPDATE quotes SET next_seq = p_seq + 1, completed_at = now() WHERE id = p_quote;
    PERFORM pg_notify(p_channel, push_payload(p_quote, p_seq, 'complete', data));
END
$$;

-- Applies one event exactly once. `out_applied` is `store::Applied`'s label; `out_seq` the
-- event's sequence number when stored. `p_payload` is the whole event's JSON, kept in
-- early_events when its quote is not stored yet (text: parsed only then).
--
-- The first statement locks the quote's row and the insurer's row; one that waited for a lock
-- re-reads both (Postgres re-checks locked rows at their newest version), so what it decides on
-- is what the previous holder committed. `seen` comes from the statement's snapshot and may
-- miss a duplicate applied meanwhile: the insurer's version then stops it as stale. A VOLATILE
-- function takes a fresh snapshot for each statement, as separate statements would.
CREATE FUNCTION apply_event(
    p_channel text, p_quote uuid, p_insurer text, p_event_id uuid, p_version int, p_status text,
    p_offer jsonb, p_reason text, p_name text, p_payload text, p_arrival_lock bigint,
    OUT out_applied text, OUT out_seq bigint, OUT out_completed boolean
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked record;
    quote_completed_at timestamptz;
    data jsonb;
    pending bigint;
BEGIN
    out_completed := false;
    SELECT q.next_seq, q.completed_at, i.display_name, i.version,
           EXISTS (SELECT 1 FROM quote_events WHERE event_id = p_event_id) AS seen
    INTO locked
    FROM quotes q JOIN quote_insurers i ON i.quote_id = q.id AND i.insurer = p_insurer
    WHERE q.id = p_quote
    FOR UPDATE OF q, i;
    IF NOT FOUND THEN
        SELECT completed_at INTO quote_completed_at FROM quotes WHERE id = p_quote FOR UPDATE;
        IF NOT FOUND THEN
            -- Not stored yet, or being stored right now by `create_quotes`, whose commit this
            -- statement could not see: wait for its arrival lock, then look again. Without it
            -- the event could land in early_events after the quote's creator took them, and
            -- never be applied.
            PERFORM pg_advisory_xact_lock(p_arrival_lock);
            SELECT completed_at INTO quote_completed_at FROM quotes WHERE id = p_quote FOR UPDATE;
            IF NOT FOUND THEN
                INSERT INTO early_events (event_id, quote_id, payload) VALUES (p_event_id, p_quote, p_payload::jsonb)
                ON CONFLICT DO NOTHING;
                out_applied := 'early';
                RETURN;
            END IF;
        END IF;
        IF EXISTS (SELECT 1 FROM quote_insurers WHERE quote_id = p_quote AND insurer = p_insurer) THEN
            -- Stored meanwhile: the normal path, under the quote's lock.
            SELECT a.out_applied, a.out_seq, a.out_completed INTO out_applied, out_seq, out_completed
            FROM apply_event(p_channel, p_quote, p_insurer, p_event_id, p_version, p_status, p_offer, p_reason,
                             p_name, p_payload, p_arrival_lock) AS a;
        ELSIF quote_completed_at IS NOT NULL THEN
            out_applied := 'late';
        ELSE
            out_applied := 'unknown_insurer';
        END IF;
        RETURN;
    END IF;
    IF locked.seen THEN
        out_applied := 'duplicate';
        RETURN;
    END IF;
    IF locked.completed_at IS NOT NULL THEN
        out_applied := 'late';
        RETURN;
    END IF;
    IF p_version <= locked.version THEN
        out_applied := 'stale';
        RETURN;
    END IF;
    data := insurer_event_data(p_insurer, locked.display_name, p_status, p_offer, p_reason);
    -- One statement for the writes and the push: inside a function too, each statement costs
    -- an executor start-up, the largest share of these small writes. Its own changes are
    -- invisible to its reads, hence "the other insurers" plus this one.
    WITH insurer AS (
        UPDATE quote_insurers SET status = p_status, version = p_version, offer = p_offer, reason = p_reason,
                                  updated_at = now()
        WHERE quote_id = p_quote AND insurer = p_insurer RETURNING 1
    ), event AS (
        INSERT INTO quote_events (quote_id, seq, event_id, name, data)
        VALUES (p_quote, locked.next_seq, p_event_id, p_name, data) RETURNING 1
    ), quote AS (
        UPDATE quotes SET next_seq = locked.next_seq + 1 WHERE id = p_quote RETURNING 1
    )
    SELECT (SELECT count(*) FROM quote_insurers WHERE quote_id = p_quote AND insurer <> p_insurer
                                                  AND status = 'pending')
         + CASE WHEN p_status = 'pending' THEN 1 ELSE 0 END
    INTO pending
    FROM (SELECT pg_notify(p_channel, push_payload(p_quote, locked.next_seq, p_name, data))) AS pushed;
    out_applied := 'stored';
    out_seq := locked.next_seq;
    IF pending = 0 THEN
        PERFORM complete_quote(p_channel, p_quote, locked.next_seq + 1);
        out_completed := true;
    END IF;
END
$$;

-- Applies events in the order given (the i-th of each array is event i); one row per event,
-- in that order.
--
-- A round whose events are all plain (each the first of its quote and insurer in the round, the
-- quote stored and open, the insurer its, the version newer, the event not seen) is applied set
-- by set: a handful of statements for the round instead of a few per event, since each
-- statement's executor start-up is most of what a small write costs. Any other round goes
-- event by event through `apply_event`, the rows already locked.
--
-- Joins go by index: the planner takes an array parameter for 10 rows, and against the small
-- tables of a fresh database a hash join over a sequential scan looks cheaper, a scan that then
-- grows with the table at every round.
CREATE FUNCTION apply_events(
    p_channel text, p_quotes uuid[], p_insurers text[], p_event_ids uuid[], p_versions int[], p_statuses text[],
    p_offers jsonb[], p_reasons text[], p_names text[], p_payloads text[], p_arrival_locks bigint[]
) RETURNS TABLE (out_applied text, out_seq bigint, out_completed boolean) LANGUAGE plpgsql VOLATILE
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
DECLARE
    n_events int := coalesce(cardinality(p_quotes), 0);
    plain boolean;
    seqs bigint[];
    quote_ids uuid[];
    lasts boolean[];
    completed uuid[] := '{}';
    done uuid;
    done_seq bigint;
BEGIN
    -- Locks the rows quote by quote, in id order (two rounds locking the same quotes wait, not
    -- deadlock), and reads them as locked: a row that was changed meanwhile is read at its
    -- newest version.
    SELECT count(*) = n_events AND count(DISTINCT (e.quote_id, e.insurer)) = n_events INTO plain
    FROM unnest(p_quotes, p_insurers, p_event_ids, p_versions) AS e (quote_id, insurer, event_id, version)
    JOIN (
        SELECT q.id, q.completed_at, i.insurer, i.version
        FROM quotes q JOIN quote_insurers i ON i.quote_id = q.id
        WHERE (q.id, i.insurer) IN (SELECT * FROM unnest(p_quotes, p_insurers))
        ORDER BY q.id, i.insurer
        FOR UPDATE OF q, i
    ) AS locked ON locked.id = e.quote_id AND locked.insurer = e.insurer
    WHERE locked.completed_at IS NULL AND locked.version < e.version
      AND NOT EXISTS (SELECT 1 FROM quote_events x WHERE x.event_id = e.event_id);
    IF n_events = 0 OR NOT plain THEN
        FOR i IN 1 .. n_events LOOP
            SELECT a.out_applied, a.out_seq, a.out_completed INTO out_applied, out_seq, out_completed
            FROM apply_event(p_channel, p_quotes[i], p_insurers[i], p_event_ids[i], p_versions[i], p_statuses[i],
                             p_offers[i], p_reasons[i], p_names[i], p_payloads[i], p_arrival_locks[i]) AS a;
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    -- One statement: sequence numbers follow the round's order within each quote; the pushes
    -- go out in that order too (a subquery's order holds for its outer query's rows).
    WITH e AS (
        SELECT * FROM unnest(p_quotes, p_insurers, p_event_ids, p_versions, p_statuses, p_offers, p_reasons, p_names)
                 WITH ORDINALITY AS e (quote_id, insurer, event_id, version, status, offer, reason, name, ord)
    ), numbered AS (
        SELECT e.*, q.next_seq + row_number() OVER (PARTITION BY e.quote_id ORDER BY e.ord) - 1 AS seq,
               insurer_event_data(e.insurer, i.display_name, e.status, e.offer, e.reason) AS data
        FROM e JOIN quotes q ON q.id = e.quote_id
               JOIN quote_insurers i ON i.quote_id = e.quote_id AND i.insurer = e.insurer
    ), insurers AS (
        UPDATE quote_insurers i
        SET status = r.status, version = r.version, offer = r.offer, reason = r.reason, updated_at = now()
        FROM numbered r WHERE i.quote_id = r.quote_id AND i.insurer = r.insurer
    ), stored AS (
        INSERT INTO quote_events (quote_id, seq, event_id, name, data)
        SELECT quote_id, seq, event_id, name, data FROM numbered
    ), moved AS (
        UPDATE quotes q SET next_seq = m.next_seq
        FROM (SELECT quote_id, max(seq) + 1 AS next_seq FROM numbered GROUP BY quote_id) AS m
        WHERE q.id = m.quote_id
    ), pushed AS (
        SELECT count(pg_notify(p_channel, push_payload(quote_id, seq, name, data))) AS pushed
        FROM (SELECT * FROM numbered ORDER BY quote_id, seq) AS ordered
    )
    SELECT array_agg(r.seq ORDER BY r.ord), array_agg(r.quote_id ORDER BY r.ord),
           array_agg(r.seq = r.last_seq ORDER BY r.ord)
    INTO seqs, quote_ids, lasts
    FROM (SELECT numbered.*, max(seq) OVER (PARTITION BY quote_id) AS last_seq FROM numbered) AS r, pushed;
    -- A quote none of whose insurers is pending any more completes after its last event.
    FOR done, done_seq IN
        SELECT q.id, q.next_seq FROM quotes q
        WHERE q.id = ANY (p_quotes) AND q.completed_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM quote_insurers i WHERE i.quote_id = q.id AND i.status = 'pending')
        ORDER BY q.id
    LOOP
        PERFORM complete_quote(p_channel, done, done_seq);
        completed := completed || done;
    END LOOP;
    FOR i IN 1 .. n_events LOOP
        out_applied := 'stored';
        out_seq := seqs[i];
        out_completed := lasts[i] AND quote_ids[i] = ANY (completed);
        RETURN NEXT;
    END LOOP;
END
$$;
