"""RabbitMQ messaging: envelope, topology, publisher (confirms), consumer (retries, DLQ).

Public API (import from here)::

    from vyapaar_messaging import (
        Envelope, Publisher, Consumer, PermanentError, Topology, declare_topology,
    )
"""

from vyapaar_messaging.consumer import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    ORIGINAL_QUEUE_HEADER,
    Consumer,
    Handler,
    Ignored,
    PermanentError,
    TransientError,
)
from vyapaar_messaging.envelope import (
    Envelope,
    EnvelopeError,
    new_span_id,
    new_trace_id,
    new_traceparent,
)
from vyapaar_messaging.publisher import Publisher, PublishFailed
from vyapaar_messaging.topology import (
    COMMANDS_EXCHANGE,
    DEFAULT_RETRY_DELAYS,
    EVENT_LOG,
    EVENTS_EXCHANGE,
    ORDER_EVENTS_EXCHANGE,
    REPLIES_QUEUE,
    Topology,
    declare_consumer_queue,
    declare_event_log,
    declare_exchanges,
    declare_retry_queues,
    declare_topology,
    delete_topology,
    dlq_name,
    queue_depth,
    retry_queue_name,
)

__all__ = [
    "ATTEMPT_HEADER",
    "COMMANDS_EXCHANGE",
    "DEAD_LETTER_REASON_HEADER",
    "DEFAULT_RETRY_DELAYS",
    "ERROR_HEADER",
    "EVENTS_EXCHANGE",
    "EVENT_LOG",
    "FAILED_AT_HEADER",
    "ORDER_EVENTS_EXCHANGE",
    "ORIGINAL_QUEUE_HEADER",
    "REPLIES_QUEUE",
    "Consumer",
    "Envelope",
    "EnvelopeError",
    "Handler",
    "Ignored",
    "PermanentError",
    "PublishFailed",
    "Publisher",
    "Topology",
    "TransientError",
    "declare_consumer_queue",
    "declare_event_log",
    "declare_exchanges",
    "declare_retry_queues",
    "declare_topology",
    "delete_topology",
    "dlq_name",
    "new_span_id",
    "new_trace_id",
    "new_traceparent",
    "queue_depth",
    "retry_queue_name",
]
