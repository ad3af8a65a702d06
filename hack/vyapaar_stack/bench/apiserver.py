"""What kube-apiserver says it served: requests by verb, resource and code, and its CPU.

The apiserver's own ``apiserver_request_total`` counts every request, whoever made it (the
operator, kopf's event posting, the namespace controller), so a delta over a load point
shows what one order costs the control plane in writes, conflicts and reads, without
instrumenting any client.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import cluster
from ..config import StackConfig

WRITE_VERBS = frozenset({"POST", "PATCH", "PUT"})
READ_VERBS = frozenset({"GET", "LIST"})  # WATCH is long-running: its count says little
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?"
                     r"\s+(?P<value>\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class RequestKey:
    """One series of apiserver_request_total, folded to what the benchmark reports."""

    verb: str
    resource: str  # resource[/subresource]
    code: str


def samples(text: str, metric: str) -> Iterator[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `metric` in Prometheus text exposition."""
    for line in text.splitlines():
        if not line.startswith(metric):
            continue
        match = _SAMPLE.match(line)
        if match is None or match["name"] != metric:
            continue
        yield dict(_LABEL.findall(match["labels"] or "")), float(match["value"])


def request_counts(text: str) -> Counter[RequestKey]:
    """apiserver_request_total by (verb, resource[/subresource], code), summed over the rest."""
    counts: Counter[RequestKey] = Counter()
    for labels, value in samples(text, "apiserver_request_total"):
        resource = labels.get("resource") or "?"
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[RequestKey(labels.get("verb", "?"), resource, labels.get("code", "?"))] += \
            int(value)
    return counts


def _by_resource(counts: Mapping[RequestKey, int], verbs: frozenset[str],
                 code: str | None = None) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, value in counts.items():
        if key.verb in verbs and (code is None or key.code == code) and value:
            out[key.resource] += value
    return out


def writes_by_resource(counts: Mapping[RequestKey, int]) -> Counter[str]:
    """POST, PATCH and PUT requests (whatever their answer) by resource[/subresource]."""
    return _by_resource(counts, WRITE_VERBS)


def conflicts_by_resource(counts: Mapping[RequestKey, int]) -> Counter[str]:
    """Writes answered 409 Conflict: a stale resourceVersion, to be re-read and redone."""
    return _by_resource(counts, WRITE_VERBS, code="409")


def reads_by_resource(counts: Mapping[RequestKey, int]) -> Counter[str]:
    """GET and LIST requests by resource[/subresource]."""
    return _by_resource(counts, READ_VERBS)


def resource_requests(counts: Mapping[RequestKey, int]) -> int:
    """Requests for API resources, whatever the verb (non-resource URLs such as /metrics
    left out)."""
    return sum(v for k, v in counts.items() if not k.resource.startswith("?"))


def delta(after: Counter[RequestKey], before: Counter[RequestKey]) -> Counter[RequestKey]:
    """Requests served between two scrapes (a restart in between would lose counts)."""
    return after - before


def cpu_seconds(text: str) -> float | None:
    """The apiserver's own process_cpu_seconds_total (a cross-check of /proc)."""
    for _, value in samples(text, "process_cpu_seconds_total"):
        return value
    return None


async def scrape(config: StackConfig, kubeconfig: Path | None = None) -> str:
    """kube-apiserver's /metrics, through the stack's kubectl (any credentials kubectl has)."""
    result = await asyncio.to_thread(cluster.kubectl, config, "get", "--raw", "/metrics",
                                     kubeconfig=kubeconfig)
    return result.stdout
