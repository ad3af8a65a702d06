"""The same faults on a cluster install: a component is a pod of the Helm release.

`kill` sends a signal to the container's own process through the node's containerd (the
kubelet then restarts the container, as after an out-of-memory kill: the pod stays, its
restart count grows); `restart` deletes the pod (its Deployment makes a new one), with
`force` at once and without a grace period. Pods are found by the chart's labels.
"""

from __future__ import annotations

import json
import signal
from typing import Any

from . import cluster
from .config import StackConfig
from .node import runtime
from .node.layout import NodeLayout
from .processes import StackError

COMPONENT_LABEL = "app.kubernetes.io/component"


def pods(config: StackConfig, namespace: str, component: str) -> list[dict[str, Any]]:
    """The running pods of one component of the release in `namespace`."""
    listed = cluster.kubectl(config, "get", "pods", "-n", namespace, "-l",
                             f"{COMPONENT_LABEL}={component}", "-o", "json", check=False)
    if listed.returncode != 0:
        raise StackError(f"cannot list pods in {namespace}: {listed.stderr.strip()}")
    found = [p for p in json.loads(listed.stdout)["items"]
             if p["status"].get("phase") == "Running"
             and not p["metadata"].get("deletionTimestamp")]
    if not found:
        raise StackError(f"no running pod of component {component!r} in namespace {namespace}")
    return found


def _container_ids(pod: dict[str, Any]) -> list[str]:
    ids = []
    for status in pod["status"].get("containerStatuses") or []:
        runtime_id = status.get("containerID") or ""
        if not runtime_id.startswith("containerd://"):
            raise StackError(f"pod {pod['metadata']['name']}: container {status['name']} runs "
                             f"on {runtime_id.split(':')[0] or 'no runtime yet'}, not this "
                             "node's containerd")
        ids.append(runtime_id.removeprefix("containerd://"))
    return ids


def kill(config: StackConfig, namespace: str, component: str, sig: signal.Signals) -> list[str]:
    """Signal the main process of every container of the component's pods; their names."""
    layout = NodeLayout(config)
    if not runtime.answers(layout):
        raise StackError("the real node's containerd does not answer (vyapaar stack up "
                         "--node real)")
    names = []
    for pod in pods(config, namespace, component):
        for container in _container_ids(pod):
            runtime.ctr(layout, "tasks", "kill", "--signal", sig.name, container)
        names.append(pod["metadata"]["name"])
    return names


def delete(config: StackConfig, namespace: str, component: str, *, force: bool = False
           ) -> list[str]:
    """Delete the component's pods (their Deployment replaces them); their names."""
    names = [p["metadata"]["name"] for p in pods(config, namespace, component)]
    grace = ["--grace-period=0", "--force"] if force else []
    result = cluster.kubectl(config, "delete", "pod", "-n", namespace, "--wait=false", *grace,
                             *names, check=False)
    if result.returncode != 0:
        raise StackError(f"could not delete {', '.join(names)}: {result.stderr.strip()}")
    return names


def restarts(config: StackConfig, namespace: str, component: str) -> int:
    """How many times the component's containers have been restarted in place."""
    return sum(s.get("restartCount", 0) for p in pods(config, namespace, component)
               for s in p["status"].get("containerStatuses") or [])
