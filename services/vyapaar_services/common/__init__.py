"""Shared service building blocks: config, database and migrations, inbox/outbox,
command handling, HTTP scaffolding, logging, metrics, Redis locks, fault injection.

Modules are imported explicitly (``from vyapaar_services.common import outbox``); this
package does not import them eagerly.
"""
