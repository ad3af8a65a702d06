"""Where a command's settings come from: a flag, else the environment, else a default.

The defaults of the environment are the plugins' (see :mod:`vyapaar_cli.plugins`) — with the
development install, the local stack's addresses — and otherwise none: a product command
that lacks a setting says which flag or variable to set (:func:`require`).

The settings: ``VYAPAAR_AMQP_URL`` and ``VYAPAAR_AMQP_PREFIX`` (``vyapaar dlq``),
``VYAPAAR_PROMETHEUS_URL`` (``vyapaar top``), ``VYAPAAR_GATEWAY_URL`` and
``VYAPAAR_GATEWAY_TOKEN`` (``vyapaar order``: the gateway and a tenant's bearer token),
``VYAPAAR_TRACES_URL`` (``vyapaar order trace``: the trace backend's query API, Jaeger's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from vyapaar_cli.errors import CliError

__all__ = ["Settings", "require"]


class Settings:
    """The ``VYAPAAR_*`` settings seen by the commands of one invocation."""

    def __init__(self, defaults: Mapping[str, str] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._defaults = dict(defaults or {})
        self._environ = os.environ if environ is None else environ

    def get(self, name: str, fallback: str | None = None) -> str | None:
        """``$name`` if set and non-empty, else a plugin's default, else ``fallback``."""
        return self._environ.get(name) or self._defaults.get(name) or fallback


def require(value: str | None, *, what: str, flag: str, variable: str) -> str:
    """``value``, or a usage error (exit code 2) that says which flag or variable to set:
    ``<what>: pass <flag> or set <variable>``."""
    if not value:
        raise CliError(f"{what}: pass {flag} or set {variable}", 2)
    return value
