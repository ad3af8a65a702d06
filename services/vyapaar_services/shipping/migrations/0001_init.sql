-- Shipping: one shipment per CreateShipment idempotency key.
--   created   : booked with the carrier; has a tracking id
--   rejected  : refused (reason), e.g. an undeliverable address
--   voided    : created, then voided (VoidShipment)
--   tombstone : VoidShipment arrived before any shipment; a late create is refused
CREATE TABLE shipments (
    id              uuid        PRIMARY KEY,
    order_uid       text        NOT NULL,
    idempotency_key text        NOT NULL UNIQUE,
    status          text        NOT NULL
        CHECK (status IN ('created', 'rejected', 'voided', 'tombstone')),
    tracking_id     text        UNIQUE,
    reason          text,
    address         jsonb,
    items           jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shipments_order_uid_idx ON shipments (order_uid);
