-- Stores a quote and its insurers in one round trip: under the quote's arrival lock (see
-- `store::apply_in`), then answers how many early events wait for it, or -1 when the quote
-- was stored before. A VOLATILE function takes a fresh snapshot for each statement, so the
-- count sees the events committed while it waited for the lock; a single statement would
-- read them from a snapshot taken before it.
CREATE FUNCTION create_quote(
    p_id uuid, p_key text, p_hash bytea, p_deadline timestamptz, p_expires_at timestamptz,
    p_traceparent text, p_arrival_lock bigint, p_insurers text[], p_display_names text[]
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_arrival_lock);
    INSERT INTO quotes (id, idempotency_key, request_hash, deadline, expires_at, traceparent)
    VALUES (p_id, p_key, p_hash, p_deadline, p_expires_at, p_traceparent)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    INSERT INTO quote_insurers (quote_id, insurer, display_name)
    SELECT p_id, i.name, i.display_name FROM unnest(p_insurers, p_display_names) AS i (name, display_name);
    RETURN (SELECT count(*) FROM early_events WHERE quote_id = p_id);
END
$$;
