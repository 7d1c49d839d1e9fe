-- Stores quotes and their insurers, each under its arrival lock (see `store::apply_in`), in
-- one round trip and one transaction; answers, per quote, how many early events wait for it,
-- or -1 when it was stored before, -2 when its idempotency key is taken by another quote, -3
-- when its arrival lock was busy and `p_wait` false (the caller stores it again, waiting).
-- The insurers of quote i are the next `p_insurer_counts[i]` of `p_insurers`.
--
-- A VOLATILE function takes a fresh snapshot for each statement, so a count sees the events
-- committed while the lock was held elsewhere; a single statement would read them from a
-- snapshot taken before it. Without `p_wait` no lock is waited for: a batch holding several
-- arrival locks cannot wait for a consumer round that holds another and waits for one of them.
CREATE FUNCTION create_quotes(
    p_ids uuid[], p_keys text[], p_hashes bytea[], p_deadlines timestamptz[], p_expires_at timestamptz[],
    p_traceparents text[], p_arrival_locks bigint[], p_insurer_counts int[], p_insurers text[],
    p_display_names text[], p_wait boolean
) RETURNS bigint[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    answers bigint[] := '{}';
    first int := 1;
    last int;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        last := first + p_insurer_counts[i] - 1;
        IF p_wait THEN
            PERFORM pg_advisory_xact_lock(p_arrival_locks[i]);
        ELSIF NOT pg_try_advisory_xact_lock(p_arrival_locks[i]) THEN
            answers := answers || -3::bigint;
            first := last + 1;
            CONTINUE;
        END IF;
        -- Plain reads first: an INSERT meeting a stored row waits for any transaction updating
        -- it, and a consumer round updating this quote may be waiting for a lock held here.
        IF EXISTS (SELECT 1 FROM quotes WHERE id = p_ids[i]) THEN
            answers := answers || -1::bigint;
            first := last + 1;
            CONTINUE;
        END IF;
        IF p_keys[i] IS NOT NULL AND EXISTS (SELECT 1 FROM quotes WHERE idempotency_key = p_keys[i]) THEN
            answers := answers || -2::bigint;
            first := last + 1;
            CONTINUE;
        END IF;
        INSERT INTO quotes (id, idempotency_key, request_hash, deadline, expires_at, traceparent)
        VALUES (p_ids[i], p_keys[i], p_hashes[i], p_deadlines[i], p_expires_at[i], p_traceparents[i])
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            INSERT INTO quote_insurers (quote_id, insurer, display_name)
            SELECT p_ids[i], x.name, x.display_name
            FROM unnest(p_insurers[first:last], p_display_names[first:last]) AS x (name, display_name);
            answers := answers || (SELECT count(*) FROM early_events WHERE quote_id = p_ids[i]);
        ELSIF EXISTS (SELECT 1 FROM quotes WHERE id = p_ids[i]) THEN
            answers := answers || -1::bigint;
        ELSE
            answers := answers || -2::bigint;
        END IF;
        first := last + 1;
    END LOOP;
    RETURN answers;
END
$$;
