-- Analytics: a read model of orders built from the operator's OrderEvents (docs/analytics.md).
-- Every table is derived from the event log: `python -m vyapaar_services.analytics rebuild`
-- empties them and replays the log. Grafana queries these tables and the view directly.

-- One row per order: the latest state (from the event with the highest seq seen).
CREATE TABLE orders (
    uid          text        PRIMARY KEY,
    namespace    text,
    name         text,
    phase        text        NOT NULL,
    reason       text        NOT NULL,
    saga_version int,
    total        bigint      NOT NULL CHECK (total >= 0),
    currency     text        NOT NULL,
    started_at   timestamptz,             -- occurred_at of seq 1 (NULL until it arrives)
    finished_at  timestamptz,             -- occurred_at of the first Completed/Failed/Cancelled
    last_seq     int         NOT NULL,
    updated_at   timestamptz NOT NULL     -- occurred_at of the event with seq = last_seq
);
CREATE INDEX orders_phase_idx ON orders (phase);
CREATE INDEX orders_finished_at_idx ON orders (finished_at);

-- Every event of every order, once (by (uid, seq) and by event id).
CREATE TABLE order_events (
    uid             text        NOT NULL,
    seq             int         NOT NULL CHECK (seq > 0),
    event_id        uuid        NOT NULL UNIQUE,
    occurred_at     timestamptz NOT NULL,
    reason          text        NOT NULL,
    message         text        NOT NULL,
    severity        text        NOT NULL CHECK (severity IN ('Normal', 'Warning')),
    step            text        NULL,
    step_started_at timestamptz NULL,
    phase           text        NOT NULL,
    announced       bool        NOT NULL,
    captured        bigint      NOT NULL CHECK (captured >= 0),
    refunded        bigint      NOT NULL CHECK (refunded >= 0),
    PRIMARY KEY (uid, seq)
);
CREATE INDEX order_events_occurred_at_idx ON order_events (occurred_at);
CREATE INDEX order_events_step_idx ON order_events (step) WHERE step IS NOT NULL;

-- Money moved per UTC day of the event and currency, in minor units; net = captured - refunded.
CREATE TABLE revenue_daily (
    day      date   NOT NULL,
    currency text   NOT NULL,
    captured bigint NOT NULL DEFAULT 0 CHECK (captured >= 0),
    refunded bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    PRIMARY KEY (day, currency)
);

-- What happened at each step: every event tagged with a step, and how long after the step
-- was first sent it happened (NULL when the event does not say when the step started).
CREATE VIEW step_outcomes AS
SELECT step,
       reason,
       severity,
       occurred_at,
       EXTRACT(EPOCH FROM occurred_at - step_started_at)::double precision AS duration_seconds
FROM order_events
WHERE step IS NOT NULL;
