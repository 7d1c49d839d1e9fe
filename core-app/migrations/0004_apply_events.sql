-- Applies the aggregator's events in the database, a consumer round in one call: a round was
-- two or three statements per event, each a round trip, and under load the round's time went
-- into waiting for the CPU between them (a round of 128 events took 650 ms), so the backlog
-- grew with each round. Every change to a quote happens under its row lock; the arrival lock
-- of migration 0003 (`create_quotes`) orders a quote's creation against its early events.
--
-- The helpers are PL/pgSQL, not SQL: as SQL functions, a profile of the backend had 7 % of
-- its time in `fmgr_sql`, parsing and planning their bodies at each call from PL/pgSQL.

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
    v_data jsonb;
BEGIN
    SELECT jsonb_build_object('status', 'complete', 'quote_id', p_quote::text,
                              'offers', count(*) FILTER (WHERE status = 'offer'), 'insurers', count(*))
    INTO v_data FROM quote_insurers WHERE quote_id = p_quote;
    INSERT INTO quote_events (quote_id, seq, name, data) VALUES (p_quote, p_seq, 'complete', v_data);
    UPDATE quotes SET next_seq = p_seq + 1, completed_at = now() WHERE id = p_quote;
    PERFORM pg_notify(p_channel, push_payload(p_quote, p_seq, 'complete', v_data));
END
$$;

-- Applies events in the order given (the i-th of each array is event i), each exactly once;
-- one row per event, in that order: `out_applied` is `store::Applied`'s label, `out_seq` the
-- event's sequence number when stored. `p_payloads` are the whole events' JSON, kept in
-- early_events for an event whose quote is not stored yet (text: parsed only then).
--
-- An event's first statement locks the quote's row and the insurer's row; one that waited for a
-- lock re-reads both (Postgres re-checks locked rows at their newest version), so what it decides
-- on is what the previous holder committed. `seen` comes from the statement's snapshot and may
-- miss a duplicate applied meanwhile: the insurer's version then stops it as stale. A VOLATILE
-- function takes a fresh snapshot for each statement, as separate statements would.
--
-- The loop's body is inline, not a function per event: a call per event cost more than the
-- round trips it saved on the rounds of one to three events a consumer keeping up gets.
CREATE FUNCTION apply_events(
    p_channel text, p_quotes uuid[], p_insurers text[], p_event_ids uuid[], p_versions int[], p_statuses text[],
    p_offers jsonb[], p_reasons text[], p_names text[], p_payloads text[], p_arrival_locks bigint[]
) RETURNS TABLE (out_applied text, out_seq bigint, out_completed boolean) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked record;
    quote_completed_at timestamptz;
    v_data jsonb;
    pending bigint;
BEGIN
    FOR k IN 1 .. coalesce(cardinality(p_quotes), 0) LOOP
        out_applied := NULL;
        out_seq := NULL;
        out_completed := false;
        -- Twice at most: an event whose quote was stored meanwhile takes the normal path then.
        FOR attempt IN 1 .. 2 LOOP
            SELECT q.next_seq, q.completed_at, i.display_name, i.version,
                   EXISTS (SELECT 1 FROM quote_events WHERE event_id = p_event_ids[k]) AS seen
            INTO locked
            FROM quotes q JOIN quote_insurers i ON i.quote_id = q.id AND i.insurer = p_insurers[k]
            WHERE q.id = p_quotes[k]
            FOR UPDATE OF q, i;
            IF FOUND THEN
                IF locked.seen THEN
                    out_applied := 'duplicate';
                ELSIF locked.completed_at IS NOT NULL THEN
                    out_applied := 'late';
                ELSIF p_versions[k] <= locked.version THEN
                    out_applied := 'stale';
                ELSE
                    v_data := insurer_event_data(p_insurers[k], locked.display_name, p_statuses[k], p_offers[k],
                                               p_reasons[k]);
                    -- One statement for the writes and the push (each statement has its
                    -- executor start-up). Its own changes are invisible to its reads, hence
                    -- "the other insurers" plus this one.
                    WITH insurer AS (
                        UPDATE quote_insurers
                        SET status = p_statuses[k], version = p_versions[k], offer = p_offers[k],
                            reason = p_reasons[k], updated_at = now()
                        WHERE quote_id = p_quotes[k] AND insurer = p_insurers[k] RETURNING 1
                    ), event AS (
                        INSERT INTO quote_events (quote_id, seq, event_id, name, data)
                        VALUES (p_quotes[k], locked.next_seq, p_event_ids[k], p_names[k], v_data) RETURNING 1
                    ), quote AS (
                        UPDATE quotes SET next_seq = locked.next_seq + 1 WHERE id = p_quotes[k] RETURNING 1
                    )
                    SELECT (SELECT count(*) FROM quote_insurers
                            WHERE quote_id = p_quotes[k] AND insurer <> p_insurers[k] AND status = 'pending')
                         + CASE WHEN p_statuses[k] = 'pending' THEN 1 ELSE 0 END
                    INTO pending
                    FROM (SELECT pg_notify(p_channel, push_payload(p_quotes[k], locked.next_seq, p_names[k], v_data)))
                         AS pushed;
                    out_applied := 'stored';
                    out_seq := locked.next_seq;
                    IF pending = 0 THEN
                        PERFORM complete_quote(p_channel, p_quotes[k], locked.next_seq + 1);
                        out_completed := true;
                    END IF;
                END IF;
                EXIT;
            END IF;
            SELECT completed_at INTO quote_completed_at FROM quotes WHERE id = p_quotes[k] FOR UPDATE;
            IF NOT FOUND THEN
                -- Not stored yet, or being stored right now by `create_quotes`, whose commit this
                -- statement could not see: wait for its arrival lock, then look again. Without it
                -- the event could land in early_events after the quote's creator took them, and
                -- never be applied.
                PERFORM pg_advisory_xact_lock(p_arrival_locks[k]);
                SELECT completed_at INTO quote_completed_at FROM quotes WHERE id = p_quotes[k] FOR UPDATE;
                IF NOT FOUND THEN
                    INSERT INTO early_events (event_id, quote_id, payload)
                    VALUES (p_event_ids[k], p_quotes[k], p_payloads[k]::jsonb)
                    ON CONFLICT DO NOTHING;
                    out_applied := 'early';
                    EXIT;
                END IF;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM quote_insurers WHERE quote_id = p_quotes[k] AND insurer = p_insurers[k]) THEN
                out_applied := CASE WHEN quote_completed_at IS NOT NULL THEN 'late' ELSE 'unknown_insurer' END;
                EXIT;
            END IF;
        END LOOP;
        IF out_applied IS NULL THEN
            -- Not reachable as the rules stand; if it were, no answer must commit the round.
            RAISE EXCEPTION 'apply_events: no answer for event %', p_event_ids[k];
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
