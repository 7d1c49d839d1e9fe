-- Applies the aggregator's events in the database, a consumer round in one call: a round was
-- two or three statements per event, each a round trip, and under load the round's time went
-- into waiting for the CPU between them (a round of 128 events took 650 ms), so the backlog
-- grew with each round. Called as one statement it is one transaction; inside the caller's
-- transaction it is part of it. Every change to a quote happens under its row lock (see
-- `store::apply`).

-- The SSE `data` of an insurer's status or offer event.
CREATE FUNCTION insurer_event_data(p_insurer text, p_display_name text, p_status text, p_offer jsonb, p_reason text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('insurer', p_insurer, 'display_name', p_display_name, 'status', p_status)
        || CASE WHEN p_offer IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('offer', p_offer) END
        || CASE WHEN p_reason IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('reason', p_reason) END
$$;

-- Pushes event `p_seq` of `p_quote` to every replica's streams: `<quote> <seq> <name> <data>`,
-- or the quote id alone (read the database) when that is too large for a notification
-- (Postgres refuses payloads of 8000 bytes and more). `store::parse_push` reads it.
CREATE FUNCTION push_event(p_channel text, p_quote uuid, p_seq bigint, p_name text, p_data jsonb)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    payload text := p_quote::text || ' ' || p_seq::text || ' ' || p_name || ' ' || p_data::text;
BEGIN
    PERFORM pg_notify(p_channel, CASE WHEN octet_length(payload) < 7900 THEN payload ELSE p_quote::text END);
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
    PERFORM push_event(p_channel, p_quote, p_seq, 'complete', data);
END
$$;

-- Applies one event exactly once. `out_applied` is `store::Applied`'s label; `out_seq` the
-- event's sequence number when stored. `p_payload` is the whole event, kept in early_events
-- when its quote is not stored yet.
--
-- The first statement locks the quote's row and the insurer's row; one that waited for a lock
-- re-reads both (Postgres re-checks locked rows at their newest version), so what it decides on
-- is what the previous holder committed. `seen` comes from the statement's snapshot and may
-- miss a duplicate applied meanwhile: the insurer's version then stops it as stale. A VOLATILE
-- function takes a fresh snapshot for each statement, as separate statements would.
CREATE FUNCTION apply_event(
    p_channel text, p_quote uuid, p_insurer text, p_event_id uuid, p_version int, p_status text,
    p_offer jsonb, p_reason text, p_name text, p_payload jsonb, p_arrival_lock bigint,
    OUT out_applied text, OUT out_seq bigint, OUT out_completed boolean
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked record;
    quote_completed_at timestamptz;
    data jsonb;
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
                INSERT INTO early_events (event_id, quote_id, payload) VALUES (p_event_id, p_quote, p_payload)
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
    UPDATE quote_insurers SET status = p_status, version = p_version, offer = p_offer, reason = p_reason,
                              updated_at = now()
    WHERE quote_id = p_quote AND insurer = p_insurer;
    INSERT INTO quote_events (quote_id, seq, event_id, name, data)
    VALUES (p_quote, locked.next_seq, p_event_id, p_name, data);
    UPDATE quotes SET next_seq = locked.next_seq + 1 WHERE id = p_quote;
    PERFORM push_event(p_channel, p_quote, locked.next_seq, p_name, data);
    out_applied := 'stored';
    out_seq := locked.next_seq;
    IF NOT EXISTS (SELECT 1 FROM quote_insurers WHERE quote_id = p_quote AND status = 'pending') THEN
        PERFORM complete_quote(p_channel, p_quote, locked.next_seq + 1);
        out_completed := true;
    END IF;
END
$$;

-- Applies events in the order given (the i-th of each array is event i); one row per event,
-- in that order.
CREATE FUNCTION apply_events(
    p_channel text, p_quotes uuid[], p_insurers text[], p_event_ids uuid[], p_versions int[], p_statuses text[],
    p_offers jsonb[], p_reasons text[], p_names text[], p_payloads jsonb[], p_arrival_locks bigint[]
) RETURNS TABLE (out_applied text, out_seq bigint, out_completed boolean) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_quotes), 0) LOOP
        SELECT a.out_applied, a.out_seq, a.out_completed INTO out_applied, out_seq, out_completed
        FROM apply_event(p_channel, p_quotes[i], p_insurers[i], p_event_ids[i], p_versions[i], p_statuses[i],
                         p_offers[i], p_reasons[i], p_names[i], p_payloads[i], p_arrival_locks[i]) AS a;
        RETURN NEXT;
    END LOOP;
END
$$;
