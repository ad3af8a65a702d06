"""Where a command's settings come from: a flag, else the environment, else a default.

The defaults of the environment are the plugins' (see :mod:`vyapaar_cli.plugins`) — with the
development install, the local stack's addresses — and otherwise none: a product command
that lacks a setting says which flag or variable to set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["Settings"]


class Settings:
    """The ``VYAPAAR_*`` settings seen by the commands of one invocation."""

    def __init__(self, defaults: Mapping[str, str] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._defaults = dict(defaults or {})
        self._environ = os.environ if environ is None else environ

    def get(self, name: str, fallback: str | None = None) -> str | None:
        """``$name`` if set and non-empty, else a plugin's default, else ``fallback``."""
        return self._environ.get(name) or self._defaults.get(name) or fallback
