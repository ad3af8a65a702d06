"""Analytics service: a read model of orders built from the operator's order events; see
:mod:`.app`, :mod:`.handlers`, :mod:`.rebuild` and docs/analytics.md."""

from typing import Final

SERVICE: Final = "analytics"
