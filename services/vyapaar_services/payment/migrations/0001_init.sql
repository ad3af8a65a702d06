-- Payment: one payment per ChargePayment idempotency key, and a ledger of money movements.
--   captured  : charged; one 'charge' ledger entry
--   declined  : the processor declined (reason); no money moved
--   refunded  : captured, then refunded in full; a 'refund' ledger entry
--   tombstone : RefundPayment arrived before any charge; a late charge is refused
CREATE TABLE payments (
    id              uuid        PRIMARY KEY,
    order_uid       text        NOT NULL,
    idempotency_key text        NOT NULL UNIQUE,
    status          text        NOT NULL
        CHECK (status IN ('captured', 'declined', 'refunded', 'tombstone')),
    amount          bigint      NOT NULL DEFAULT 0 CHECK (amount >= 0),
    currency        text,
    customer_id     text,
    reason          text,
    charge_id       text        UNIQUE,
    refund_id       text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_order_uid_idx ON payments (order_uid);

-- Amounts in minor units. At most one charge and one (full) refund per payment.
CREATE TABLE ledger_entries (
    id         bigserial   PRIMARY KEY,
    entry_id   text        NOT NULL UNIQUE,
    payment_id uuid        NOT NULL REFERENCES payments (id),
    order_uid  text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('charge', 'refund')),
    amount     bigint      NOT NULL CHECK (amount > 0),
    currency   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (payment_id, kind)
);
CREATE INDEX ledger_entries_order_uid_idx ON ledger_entries (order_uid);
