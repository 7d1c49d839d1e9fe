-- The aggregator's own database: the insurers whose pollers are alive, applications
-- received from partners, one task per (application, insurer), and the transactional
-- outbox of events bound for Kafka.

-- Each poller registers its insurer and renews a heartbeat; intake assigns tasks only to
-- insurers whose pollers are alive and not suspended.
CREATE TABLE insurers (
    name             text        PRIMARY KEY,
    display_name     text        NOT NULL,
    suspended        boolean     NOT NULL DEFAULT false,
    -- closed | open | half_open, as the pollers' circuit breaker last reported it.
    breaker_state    text        NOT NULL DEFAULT 'closed',
    quote_timeout_ms integer     NOT NULL,
    heartbeat_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE applications (
    id               uuid PRIMARY KEY,
    partner          text        NOT NULL,
    -- Same partner + same key → same application (the request hash proves "same body").
    idempotency_key  text,
    request_hash     bytea       NOT NULL,
    request          jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    deadline         timestamptz NOT NULL,
    UNIQUE (partner, idempotency_key)
);

CREATE TYPE task_status AS ENUM ('pending', 'offer', 'declined', 'failed', 'expired');

CREATE TABLE tasks (
    application_id   uuid        NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    insurer          text        NOT NULL,
    status           task_status NOT NULL DEFAULT 'pending',
    -- Per-insurer event version: bumped with every state change and its outbox row.
    version          integer     NOT NULL DEFAULT 0,
    -- The insurer's own id of the calculation, once created.
    insurer_ref      text,
    attempts         integer     NOT NULL DEFAULT 0,
    next_poll_at     timestamptz NOT NULL DEFAULT now(),
    -- A poller replica holds a task only while its lease lasts; a killed replica's tasks
    -- become claimable again when the lease runs out.
    lease_owner      text,
    lease_until      timestamptz,
    deadline         timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application_id, insurer)
);

-- Pollers claim due work of their insurer only.
CREATE INDEX tasks_due ON tasks (insurer, next_poll_at) WHERE status = 'pending';

CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    event_id    uuid        NOT NULL UNIQUE,
    -- Kafka message key: the quote id, so one quote's events stay in order.
    message_key text        NOT NULL,
    payload     jsonb       NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Wake the relay on every committed insert (a hint; the relay also polls).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('osago_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
