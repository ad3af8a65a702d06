-- Notification: every customer message sent (an inspectable outbox of customer messages).
CREATE TABLE notifications (
    id              uuid        PRIMARY KEY,
    order_uid       text        NOT NULL,
    idempotency_key text        NOT NULL UNIQUE,
    template        text        NOT NULL
        CHECK (template IN ('order-confirmed', 'order-failed', 'order-cancelled')),
    customer_id     text        NOT NULL,
    recipient       text,
    subject         text        NOT NULL,
    body            text        NOT NULL,
    customer        jsonb       NOT NULL,
    data            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_order_uid_idx ON notifications (order_uid);
