"""One log line when a dependency goes away and one when it is back, not one per failure.

During a broker or database outage every publish (or query) fails; logging each one buries
the two facts an on-call engineer needs -- when it started, when it ended -- under hundreds
of identical tracebacks. :class:`OutageLog` logs the first failure (a WARNING, with the
error), counts the rest quietly (DEBUG), and logs the recovery with the duration and the
count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["OutageLog"]


class OutageLog:
    def __init__(self, logger: logging.Logger, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.clock = clock
        self.since: float | None = None
        self.failures = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, error: object) -> None:
        """An operation failed; the first failure of an outage is logged, the rest counted."""
        self.failures += 1
        if self.since is None:
            self.since = self.clock()
            self.logger.warning("%s failing: %s (further failures are counted, not logged, "
                                "until it recovers)", self.what, error)
        else:
            self.logger.debug("%s still failing (%d): %s", self.what, self.failures, error)

    def succeeded(self) -> None:
        """An operation went through: if an outage was on, log its end."""
        if self.since is None:
            return
        lasted = self.clock() - self.since
        self.logger.warning("%s recovered after %.1fs; %d operations failed meanwhile",
                            self.what, lasted, self.failures)
        self.since = None
        self.failures = 0
