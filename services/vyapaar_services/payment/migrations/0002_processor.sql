-- The simulated card processor's own record of what it did. It stands for another
-- company's system: each call commits here at once, outside the payment service's
-- transaction (the money has moved, whatever the service does next), and a call with an
-- idempotency key it has seen gets the answer it got the first time, never a second
-- capture (as Stripe-style APIs take a key).
CREATE TABLE processor_operations (
    id              text        PRIMARY KEY,  -- ch_... (charge), re_... (refund), dc_... (decline)
    idempotency_key text        NOT NULL,
    operation       text        NOT NULL CHECK (operation IN ('charge', 'refund')),
    order_uid       text        NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('captured', 'declined', 'refunded')),
    amount          bigint      NOT NULL CHECK (amount >= 0),
    currency        text        NOT NULL,
    reason          text,
    charge_id       text,  -- the charge a refund returns
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (idempotency_key, operation)
);
CREATE INDEX processor_operations_order_uid_idx ON processor_operations (order_uid);
