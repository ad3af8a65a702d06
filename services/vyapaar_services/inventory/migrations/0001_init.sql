-- Inventory: stock per SKU and reservations.
-- For every SKU: initial stock = available + held + committed (conservation).

CREATE TABLE stock (
    sku        text        PRIMARY KEY,
    available  integer     NOT NULL DEFAULT 0 CHECK (available >= 0),
    held       integer     NOT NULL DEFAULT 0 CHECK (held >= 0),
    committed  integer     NOT NULL DEFAULT 0 CHECK (committed >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per ReserveStock idempotency key.
--   held      : stock moved from available to held
--   committed : held stock became committed (CommitStock)
--   released  : held stock returned to available (ReleaseStock)
--   rejected  : the reservation was refused (reason, reason_sku); nothing moved
--   tombstone : ReleaseStock arrived before any reservation; a late ReserveStock is refused
CREATE TABLE reservations (
    id              uuid        PRIMARY KEY,
    order_uid       text        NOT NULL,
    idempotency_key text        NOT NULL UNIQUE,
    status          text        NOT NULL
        CHECK (status IN ('held', 'committed', 'released', 'rejected', 'tombstone')),
    reason          text,
    reason_sku      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_order_uid_idx ON reservations (order_uid);

CREATE TABLE reservation_items (
    reservation_id uuid    NOT NULL REFERENCES reservations (id) ON DELETE CASCADE,
    sku            text    NOT NULL,
    quantity       integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, sku)
);
