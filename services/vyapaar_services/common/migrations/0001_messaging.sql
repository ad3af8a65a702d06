-- Shared messaging tables of every service schema: inbox, idempotency results, outbox.

-- Inbox: every handled message id, recorded in the transaction of its effect.
CREATE TABLE inbox (
    message_id     text        PRIMARY KEY,
    message_type   text        NOT NULL,
    correlation_id text,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_received_at_idx ON inbox (received_at);

-- Idempotency: the reply of each (idempotency key, command type), replayed for retries.
-- A compensation's row for a key with no forward effect is the tombstone's audit trail.
CREATE TABLE idempotency (
    idempotency_key text        NOT NULL,
    command_type    text        NOT NULL,
    command_id      text        NOT NULL,
    reply_type      text        NOT NULL,
    reply           jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (idempotency_key, command_type)
);

-- Transactional outbox: published by the relay with publisher confirms.
CREATE TABLE outbox (
    id               bigserial   PRIMARY KEY,
    message_id       text        NOT NULL,
    message_type     text        NOT NULL,
    correlation_id   text,
    exchange         text        NOT NULL,
    routing_key      text        NOT NULL,
    envelope         jsonb       NOT NULL,
    headers          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at          timestamptz,
    publish_attempts integer     NOT NULL DEFAULT 0,
    last_error       text
);
CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Wake the relay on commit (the channel payload is the schema, so relays of other schemas
-- sharing the database ignore it).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vyapaar_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
