"""`vyapaar stack up --node real`: one real kubelet node that runs pods for real, and a `down`
that leaves the machine as it found it.

The pods run a busybox image made here from Debian's busybox-static binary (one file plus
its applet links, written as an OCI archive by vyapaar_stack.node.oci and imported with
`ctr`): no registry, no Docker. The last test takes the node down and checks the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vyapaar_stack import cluster, node
from vyapaar_stack.cli import stack_down, stack_up
from vyapaar_stack.config import NodeNetwork, StackConfig
from vyapaar_stack.node import host, oci
from vyapaar_stack.node.layout import FIXED_HOST_PATHS, NodeLayout
from vyapaar_stack.processes import StackError

BUSYBOX = Path("/bin/busybox")
BUSYBOX_REF = "vyapaar.local/busybox:test"
NODE_PROCESS_NAMES = {"kubelet", "kube-proxy", "containerd", "containerd-shim", "coredns"}

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the real node needs root (kubelet, containerd, bridges, iptables)")


# --- bad input is refused clearly (no node needed) ---------------------------------------------


def test_a_node_address_outside_the_pod_subnet_is_refused() -> None:
    with pytest.raises(ValueError, match="not inside VYAPAAR_POD_SUBNET"):
        NodeNetwork(node_ip="10.88.0.1", pod_subnet="10.87.0.0/24")


def test_a_pod_subnet_overlapping_the_service_range_is_refused() -> None:
    with pytest.raises(ValueError, match="overlaps the Service range"):
        NodeNetwork(node_ip="10.0.0.200", pod_subnet="10.0.0.128/25")


def test_loading_a_missing_archive_names_it(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no image archive at"):
        node.load_image(StackConfig(), tmp_path / "missing.tar")


def test_pod_urls_point_at_the_node_address() -> None:
    config = StackConfig()
    urls = config.pod_env()
    assert urls["VYAPAAR_DATABASE_URL"].startswith(f"postgresql://vyapaar@{config.node_ip}:")
    assert f"@{config.node_ip}:{config.ports.amqp}/" in urls["VYAPAAR_AMQP_URL"]
    assert urls["VYAPAAR_REDIS_URL"] == f"redis://{config.node_ip}:{config.ports.redis}/0"


def test_oci_archives_are_reproducible(tmp_path: Path) -> None:
    spec = oci.ImageSpec(ref="vyapaar.local/x:1", files={"/x": Path(__file__)}, entrypoint=["/x"])
    first = oci.write_archive(spec, tmp_path / "a.tar")
    second = oci.write_archive(spec, tmp_path / "b.tar")
    assert first == second
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


# --- the real node ------------------------------------------------------------------------------


def _host_snapshot() -> dict[str, Any]:
    return {"sysctls": host.read_sysctls(),
            "existing_paths": [str(p) for p in FIXED_HOST_PATHS if p.exists()]}


@pytest.fixture(scope="module")
def before_node() -> dict[str, Any]:
    """The host as it was before the node: measured now, or as `up` recorded it."""
    config = StackConfig()
    layout = NodeLayout(config)
    if layout.up_marker.exists():
        return host.recorded(layout)
    return _host_snapshot()


@pytest.fixture(scope="module")
def real_node(before_node: dict[str, Any]) -> StackConfig:
    config = StackConfig()
    stack_up(config, None, real_node=True)
    return config


@pytest.fixture(scope="module")
def busybox_image(real_node: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> str:
    if not BUSYBOX.exists():
        pytest.fail(f"{BUSYBOX} missing: hack/provision.sh apt installs busybox-static")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    spec = oci.ImageSpec(
        ref=BUSYBOX_REF, files={"/bin/busybox": BUSYBOX}, entrypoint=[], cmd=["sh"],
        symlinks={f"/bin/{a}": "busybox" for a in applets if a != "busybox"},
        directories={"/tmp": 0o1777}, user="65534:65534")
    archive = tmp_path_factory.mktemp("images") / "busybox.tar"
    oci.write_archive(spec, archive)
    assert BUSYBOX_REF in node.load_image(real_node, archive)
    return BUSYBOX_REF


def kubectl(config: StackConfig, *args: str, input: str | None = None) -> str:
    return cluster.kubectl(config, *args, input=input).stdout


def apply(config: StackConfig, *objects: dict[str, Any]) -> None:
    kubectl(config, "apply", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


@pytest.fixture
def namespace(real_node: StackConfig) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    kubectl(real_node, "create", "namespace", name)
    yield name
    kubectl(real_node, "delete", "namespace", name, "--wait=false")


def pod(name: str, image: str, script: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": image,
                                     "command": ["sh", "-c", textwrap.dedent(script)]}],
                     **spec}}


def wait_succeeded(config: StackConfig, ns: str, name: str, timeout: float = 90) -> str:
    """Wait for a run-to-completion pod; return its log (fail with it if the pod failed)."""
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        phase = kubectl(config, "get", "pod", name, "-n", ns, "-o",
                        "jsonpath={.status.phase}")
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    log = kubectl(config, "logs", name, "-n", ns)
    assert phase == "Succeeded", f"pod {name} is {phase or 'not started'}; log:\n{log}"
    return log


def node_of(config: StackConfig, ns: str, name: str) -> str:
    return kubectl(config, "get", "pod", name, "-n", ns, "-o", "jsonpath={.spec.nodeName}")


@pytest.mark.slow
@needs_root
def test_the_node_is_ready_with_its_address_and_kwok_keeps_away(real_node: StackConfig) -> None:
    got = json.loads(kubectl(real_node, "get", "node", real_node.node.node_name, "-o", "json"))
    ready = {c["type"]: c["status"] for c in got["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert {"type": "InternalIP", "address": real_node.node_ip} in got["status"]["addresses"]
    assert "kwok.x-k8s.io/node" not in got["metadata"].get("annotations", {})
    fake = json.loads(kubectl(real_node, "get", "nodes", "-l", "type=kwok", "-o", "json"))
    for item in fake["items"]:
        assert {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"} in \
            item["spec"].get("taints", []), item["metadata"]["name"]


@pytest.mark.slow
@needs_root
def test_a_service_answers_another_pod_by_dns_name_on_the_real_node(
        real_node: StackConfig, busybox_image: str, namespace: str) -> None:
    labels = {"app": "web"}
    server = pod("x", busybox_image, """\
        mkdir -p /tmp/www && echo "hello from $(hostname)" > /tmp/www/index.html
        exec httpd -f -p 8080 -h /tmp/www""")["spec"]
    server["restartPolicy"] = "Always"
    apply(real_node,
          {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": namespace},
           "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": server}}},
          {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
                                                               "namespace": namespace},
           "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}})
    kubectl(real_node, "rollout", "status", "deployment/web", "-n", namespace, "--timeout=90s")
    client = pod("client", busybox_image, f"""\
        for i in $(seq 30); do
          timeout 3 wget -q -O- http://web.{namespace}.svc.cluster.local/ && exit 0
          sleep 1
        done
        exit 1""")
    apply(real_node, {**client, "metadata": {"name": "client", "namespace": namespace}})

    assert wait_succeeded(real_node, namespace, "client").startswith("hello from web-")
    pods = json.loads(kubectl(real_node, "get", "pods", "-n", namespace, "-o", "json"))["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {real_node.node.node_name}
    assert all(p["status"]["podIP"].startswith("10.87.0.") for p in pods)


@pytest.mark.slow
@needs_root
def test_logs_and_exec_reach_the_kubelet(
        real_node: StackConfig, busybox_image: str, namespace: str) -> None:
    apply(real_node, {**pod("talker", busybox_image, "echo talking; exec sleep 3600"),
                      "metadata": {"name": "talker", "namespace": namespace}})
    kubectl(real_node, "wait", "pod/talker", "-n", namespace, "--for=condition=Ready",
            "--timeout=90s")
    assert kubectl(real_node, "logs", "talker", "-n", namespace).strip() == "talking"
    assert kubectl(real_node, "exec", "talker", "-n", namespace, "--", "id", "-u").strip() \
        == "65534"


@pytest.mark.slow
@needs_root
def test_a_service_account_token_reaches_the_api_through_the_kubernetes_service(
        real_node: StackConfig, busybox_image: str, namespace: str) -> None:
    review = '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'
    script = f"""\
        sa=/var/run/secrets/kubernetes.io/serviceaccount
        api="https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
        timeout 5 wget -q -O- --header "Authorization: Bearer $(cat $sa/token)" \\
          --header "Content-Type: application/json" --post-data '{review}' \\
          "$api/apis/authentication.k8s.io/v1/selfsubjectreviews" 2>/dev/null
        echo; echo ---; cat $sa/ca.crt"""
    apply(real_node, {**pod("whoami", busybox_image, script),
                      "metadata": {"name": "whoami", "namespace": namespace}})
    out = wait_succeeded(real_node, namespace, "whoami")
    answer, _, ca = out.partition("\n---\n")
    user = json.loads(answer)["status"]["userInfo"]["username"]
    assert user == f"system:serviceaccount:{namespace}:default"
    # busybox's TLS does not verify; openssl checks that a verifying client in a pod would
    # accept the serving certificate for the Service IP, with the CA the pod was given.
    (ca_file := Path(f"/tmp/{namespace}-ca.crt")).write_text(ca)
    try:
        cert = cluster.pki_dir(real_node) / "admin.crt"
        verify = subprocess.run(
            ["openssl", "verify", "-CAfile", str(ca_file), "-verify_ip",
             real_node.node.kubernetes_service_ip, str(cert)], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        ca_file.unlink()


def _pod_netns_pid(config: StackConfig, ns: str, name: str) -> int:
    """The pid of a pod's container on the host (its network namespace is the pod's)."""
    status = json.loads(kubectl(config, "get", "pod", name, "-n", ns, "-o", "json"))["status"]
    container_id = status["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    tasks = host.run("ctr", "--address", str(NodeLayout(config).containerd_socket),
                     "-n", "k8s.io", "tasks", "list").stdout
    for line in tasks.splitlines():
        fields = line.split()
        if fields and fields[0] == container_id:
            return int(fields[1])
    raise AssertionError(f"no task for {container_id}:\n{tasks}")


CLIENTS = """
import asyncio, os, aio_pika, asyncpg, redis.asyncio as redis
async def step(what, coro):
    try:
        return await asyncio.wait_for(coro, 15)
    except TimeoutError:
        raise SystemExit(f"{what}: no answer within 15s")
async def main():
    conn = await step("postgres", asyncpg.connect(os.environ["VYAPAAR_DATABASE_URL"]))
    print("postgres", await step("query", conn.fetchval("SELECT host(inet_client_addr())")))
    await conn.close()
    amqp = await step("rabbitmq", aio_pika.connect(os.environ["VYAPAAR_AMQP_URL"]))
    print("rabbitmq", amqp.is_closed is False)
    await amqp.close()
    r = redis.from_url(os.environ["VYAPAAR_REDIS_URL"])
    print("redis", await step("redis", r.ping()))
    await r.aclose()
asyncio.run(main())
"""


@pytest.mark.slow
@needs_root
def test_pods_reach_the_hosts_postgres_rabbitmq_and_redis_at_the_node_address(
        real_node: StackConfig, busybox_image: str, namespace: str) -> None:
    redis_port = real_node.ports.redis
    apply(real_node, {**pod("infra", busybox_image, f"""\
        printf 'PING\\r\\n' | nc -w 3 {real_node.node_ip} {redis_port}
        exec sleep 3600"""), "metadata": {"name": "infra", "namespace": namespace}})
    kubectl(real_node, "wait", "pod/infra", "-n", namespace, "--for=condition=Ready",
            "--timeout=90s")
    assert kubectl(real_node, "logs", "infra", "-n", namespace).strip() == "+PONG"
    # The product's own clients, in the pod's network namespace (source address: the pod's),
    # with exactly the URLs a chart gets from StackConfig.pod_env().
    pid = _pod_netns_pid(real_node, namespace, "infra")
    pod_ip = kubectl(real_node, "get", "pod", "infra", "-n", namespace, "-o",
                     "jsonpath={.status.podIP}")
    result = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", CLIENTS],
        capture_output=True, text=True, env={**os.environ, **real_node.pod_env()}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == [f"postgres {pod_ip}", "rabbitmq True", "redis True"]


@pytest.mark.slow
@needs_root
def test_a_restricted_namespace_admits_a_restricted_pod_on_the_node(
        real_node: StackConfig, busybox_image: str, namespace: str) -> None:
    kubectl(real_node, "label", "namespace", namespace,
            "pod-security.kubernetes.io/enforce=restricted")
    hardened = pod("hardened", busybox_image, "touch /tmp/x 2>/dev/null || echo read-only",
                   securityContext={"runAsNonRoot": True, "runAsUser": 65534,
                                    "seccompProfile": {"type": "RuntimeDefault"}})
    hardened["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    apply(real_node, {**hardened, "metadata": {"name": "hardened", "namespace": namespace}})
    assert wait_succeeded(real_node, namespace, "hardened").strip() == "read-only"
    assert node_of(real_node, namespace, "hardened") == real_node.node.node_name

    loose = pod("loose", busybox_image, "true")
    refused = cluster.kubectl(real_node, "apply", "-n", namespace, "-f", "-", check=False,
                              input=json.dumps({**loose, "metadata": {"name": "loose"}}))
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr


@pytest.mark.slow
@needs_root
def test_an_image_that_was_not_loaded_is_never_pulled_from_outside(
        real_node: StackConfig, namespace: str) -> None:
    apply(real_node, {**pod("remote", "registry.example/nothing:1", "true"),
                      "metadata": {"name": "remote", "namespace": namespace}})
    deadline = time.monotonic() + 60
    events = ""
    while time.monotonic() < deadline and "127.0.0.1:9" not in events:
        time.sleep(1)
        events = kubectl(real_node, "get", "events", "-n", namespace, "-o",
                         "jsonpath={.items[*].message}")
    assert "proxyconnect tcp: dial tcp 127.0.0.1:9" in events, events


def _node_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            comm = (entry / "comm").read_text().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if comm in NODE_PROCESS_NAMES and state != "Z":  # a zombie waits for its parent only
            found.append(f"{entry.name}:{comm}")
    return found


@pytest.mark.slow
@needs_root
def test_down_leaves_no_process_rule_bridge_mount_or_sysctl_behind(
        real_node: StackConfig, before_node: dict[str, Any]) -> None:
    layout = NodeLayout(real_node)
    t0 = time.monotonic()
    stack_down(real_node, "node")
    took = time.monotonic() - t0

    assert _node_processes() == []
    assert host.leftover_chains() == []
    assert not host.bridge_exists(real_node)
    assert not [link for link in os.listdir("/sys/class/net") if link.startswith("veth")]
    assert host.read_sysctls() == before_node["sysctls"]
    assert host.mounts_under(layout.mount_roots()) == []
    assert not list(layout.containerd_state.glob("netns/*"))
    assert [str(p) for p in FIXED_HOST_PATHS if p.exists()] == before_node["existing_paths"]
    assert host.kubepods_cgroups() == []
    assert not layout.kubelet_root.exists()
    assert not layout.up_marker.exists()
    got = cluster.kubectl(real_node, "get", "node", real_node.node.node_name, check=False)
    assert got.returncode != 0 and "NotFound" in got.stderr
    stack_down(real_node, "node")  # idempotent, and quick when there is nothing to do
    print(f"down took {took:.1f}s")
