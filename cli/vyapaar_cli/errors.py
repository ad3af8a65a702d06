"""The one exception a command raises to stop with a message a person understands."""

from __future__ import annotations


class CliError(Exception):
    """Printed as ``vyapaar: error: <message>`` (no traceback); the command exits with
    :attr:`exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
