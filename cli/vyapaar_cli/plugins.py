"""Commands and defaults contributed by other installed distributions.

An entry point in the group ``vyapaar.cli`` names a module with:

- ``register(commands)``: add sub-commands to the argparse sub-parsers object; each sets
  ``func`` (``args -> exit code``) with ``set_defaults``;
- optionally ``environment_defaults() -> Mapping[str, str]``: values for ``VYAPAAR_*``
  settings that the environment leaves unset (the development stack points the commands at
  its local infrastructure this way).

This keeps the product CLI free of development code while a developer still types one
command name; it is the mechanism pytest (``pytest11``) and kubectl plugins use too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

__all__ = ["GROUP", "environment_defaults", "load", "register_all"]

GROUP = "vyapaar.cli"

log = logging.getLogger(__name__)


def load() -> list[ModuleType]:
    """Every installed plugin module, in a stable order; a broken one is skipped with a
    warning rather than breaking the product commands."""
    modules: list[ModuleType] = []
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            modules.append(entry.load())
        except Exception as exc:  # a plugin must never take the product CLI down
            log.warning("vyapaar: plugin %s could not be loaded: %s", entry.name, exc)
    return modules


def register_all(modules: list[ModuleType], commands: Any) -> None:
    for module in modules:
        module.register(commands)


def environment_defaults(modules: list[ModuleType]) -> Mapping[str, str]:
    defaults: dict[str, str] = {}
    for module in modules:
        provide = getattr(module, "environment_defaults", None)
        if provide is not None:
            defaults.update(provide())
    return defaults
