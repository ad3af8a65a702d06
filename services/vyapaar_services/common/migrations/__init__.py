"""Shared SQL migrations (inbox, idempotency, outbox)."""
