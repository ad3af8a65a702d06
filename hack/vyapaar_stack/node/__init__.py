"""One real kubelet node for the local control plane (`vyapaar stack up --node real`).

containerd and runc from Debian, kubelet, kube-proxy and CoreDNS built from Go
modules by hack/provision.sh, a CNI bridge of our own (`vyapaar0`, 10.87.0.1/24):
pods run for real, reach each other through Services and DNS, and reach the host's
PostgreSQL, RabbitMQ and Redis at the node address. `down` removes every process,
rule, bridge, mount and sysctl change the node made. Needs root; one real node per
machine (kubelet and the CNI plugins use host-global paths and ports).
"""

from .lifecycle import check_control_plane, down, prepare_network, status, up
from .runtime import load_image

__all__ = ["check_control_plane", "down", "load_image", "prepare_network", "status", "up"]
