-- core-app's database: the quotes it serves, each insurer's latest result, and every event
-- of a quote in stream order (the SSE replay log). No personal data: the request itself
-- lives only in the aggregator; core-app keeps a hash for idempotency.

CREATE TABLE quotes (
    id               uuid        PRIMARY KEY,
    -- Same key + same body → same quote.
    idempotency_key  text        UNIQUE,
    request_hash     bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- The aggregator's deadline; core-app expires what is left at `expires_at`.
    deadline         timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    completed_at     timestamptz,
    -- Sequence number the next event of this quote gets (its SSE id).
    next_seq         bigint      NOT NULL DEFAULT 1
);

CREATE INDEX quotes_open ON quotes (expires_at) WHERE completed_at IS NULL;

CREATE TABLE quote_insurers (
    quote_id      uuid        NOT NULL REFERENCES quotes (id) ON DELETE CASCADE,
    insurer       text        NOT NULL,
    display_name  text        NOT NULL,
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'offer', 'declined', 'failed', 'expired')),
    -- The aggregator's per-insurer event version last applied; older events are stale.
    version       integer     NOT NULL DEFAULT 0,
    offer         jsonb,
    reason        text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (quote_id, insurer)
);

CREATE TABLE quote_events (
    quote_id    uuid        NOT NULL REFERENCES quotes (id) ON DELETE CASCADE,
    seq         bigint      NOT NULL,
    -- The aggregator's event id (dedup key); NULL for events core-app makes itself.
    event_id    uuid        UNIQUE,
    name        text        NOT NULL CHECK (name IN ('status', 'offer', 'complete')),
    data        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (quote_id, seq)
);

-- Events that arrived before their quote was stored (a fast insurer, or core-app storing
-- the quote late); applied when the quote is created.
CREATE TABLE early_events (
    event_id     uuid        PRIMARY KEY,
    quote_id     uuid        NOT NULL,
    payload      jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX early_events_quote ON early_events (quote_id);
