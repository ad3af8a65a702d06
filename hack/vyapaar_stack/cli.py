"""The development commands of the `vyapaar` command line (a ``vyapaar.cli`` plugin).

vyapaar stack up [--only cluster|infra] [--node real]
                                          start the local stack (idempotent); --node real
                                          adds one real kubelet node (root)
vyapaar stack down [--only node]          stop it (or only the real node), leave nothing behind
vyapaar stack status                      what runs, what answers
vyapaar stack stop|start|restart NAME     one component on its own (the operator, a service,
                                          rabbitmq, postgres, etcd, kube-apiserver, kubelet ...)
vyapaar stack kill NAME [--signal KILL]   signal one component (KILL: no graceful shutdown;
                                          STOP/CONT: freeze and thaw it)
vyapaar stack kill|restart NAME --namespace NS
                                          the same on a cluster install: signal the pods'
                                          containers, or delete the pods
vyapaar stack env [--pod]                 export lines for a shell: eval "$(vyapaar stack env)"
vyapaar stack images [--tag T] [--infra]  build the images with buildah (no Docker, no registry)
                                          and load them into the real node when it is up
vyapaar stack infra-secret --namespace N  the chart's bring-your-own infrastructure Secret for
                                          pods on the real node (--isolate: own database/vhost)
vyapaar demo                              the whole system on the local stack, with samples
vyapaar chaos --scenario NAME | --random N [--seed S]
                                          orders under faults; every invariant checked from
                                          the services' records (vyapaar_stack.chaos)
vyapaar bench [--rates 2,5,10] [--peers dbos,temporal]
                                          sweep offered load over the running system; JSON
                                          report, PNG plots and a table (vyapaar_stack.bench)

The product CLI (:mod:`vyapaar_cli`) loads this module through the entry point that the
development distribution (``hack/pyproject.toml``) declares; a runtime install has neither.
While it is installed, the product commands default to the local stack's addresses
(:func:`environment_defaults`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import bench, chaos, cluster, components, demo, images, infra, node, pods, release, system
from .config import REPO_ROOT, StackConfig
from .processes import StackError

CRDS_DIR = REPO_ROOT / "crds"
ADMISSION_DIR = REPO_ROOT / "manifests" / "admission"
ADMISSION_API = "admissionregistration.k8s.io/v1beta1"


def install_crds(config: StackConfig, kubeconfig: Path | None = None) -> None:
    """Apply every CRD in crds/ (server-side), wait until they are Established, then the
    admission policies."""
    manifests = sorted(CRDS_DIR.glob("*.yaml"))
    if not manifests:
        return
    args: list[str] = ["apply", "--server-side", "--force-conflicts"]
    for path in manifests:
        args += ["-f", str(path)]
    cluster.kubectl(config, *args, kubeconfig=kubeconfig)
    wait = ["wait", "--for=condition=Established", "--timeout=60s",
            *[a for path in manifests for a in ("-f", str(path))]]
    # A CRD created a moment ago may have no status yet, which `kubectl wait` reports as an
    # error ("accessor error: <nil>") instead of waiting: ask again shortly.
    for _ in range(20):
        done = cluster.kubectl(config, *wait, kubeconfig=kubeconfig, check=False)
        if done.returncode == 0 or "accessor error" not in done.stderr:
            break
        time.sleep(0.5)
    if done.returncode != 0:
        raise StackError(f"CRDs not Established: {done.stderr.strip()}")
    install_admission_policies(config, kubeconfig)


def install_admission_policies(config: StackConfig, kubeconfig: Path | None = None) -> None:
    """Apply manifests/admission/ (the finalizer on every new Order) where the cluster
    serves MutatingAdmissionPolicy; elsewhere the operator adds the finalizer itself."""
    served = cluster.kubectl(config, "get", "--raw", f"/apis/{ADMISSION_API}",
                             kubeconfig=kubeconfig, check=False)
    if served.returncode != 0 or '"mutatingadmissionpolicies"' not in served.stdout:
        return
    cluster.kubectl(config, "apply", "--server-side", "--force-conflicts",
                    "-f", str(ADMISSION_DIR), kubeconfig=kubeconfig)
    # A policy a moment old may not know the Order kind yet and refuse every create with
    # 503 ("Kind=Order not found"): wait until a (dry-run) create goes through.
    sample = REPO_ROOT / "manifests" / "samples" / "order-completed.yaml"
    for _ in range(120):
        probe = cluster.kubectl(config, "create", "--dry-run=server", "-n", "default",
                                "-f", str(sample), "-o", "name", kubeconfig=kubeconfig,
                                check=False)
        if probe.returncode == 0:
            return
        time.sleep(0.5)
    raise StackError(f"Orders cannot be created yet: {probe.stderr.strip()}")


def stack_up(config: StackConfig, only: str | None, real_node: bool = False) -> None:
    steps: list[tuple[str, Callable[[], None]]] = []
    if real_node:
        if only == "infra":
            raise StackError("--node real needs the control plane: drop --only infra")
        if cluster.exists(config):
            node.check_control_plane(config)  # before touching the host
        # First, so that the infrastructure also listens on the node address.
        steps.append((f"node network (bridge {config.node.bridge}, {config.node_ip})",
                      lambda: node.prepare_network(config)))
    if only in (None, "infra"):
        steps.append(
            ("infrastructure (PostgreSQL, RabbitMQ, Redis, Prometheus, Jaeger)",
             lambda: infra.up(config))
        )
    if only in (None, "cluster"):
        steps.append(
            ("control plane (etcd, kube-apiserver, controllers, kwok)", lambda: cluster.up(config))
        )
        steps.append(("CRDs and admission policies", lambda: install_crds(config)))
    if real_node:
        steps.append(("the real node (containerd, kubelet, kube-proxy, CoreDNS)",
                      lambda: node.up(config)))
    for what, step in steps:
        t0 = time.monotonic()
        print(f"starting {what} ...", file=sys.stderr, flush=True)
        step()
        print(f"  ready in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)


def stack_down(config: StackConfig, only: str | None = None) -> None:
    node.down(config)
    if only == "node":
        return
    system.down(config)
    cluster.down(config)
    infra.down(config)


def stack_status(config: StackConfig) -> int:
    states = {**cluster.status(config), **node.status(config), **infra.status(config),
              **system.status(config)}
    for name, ok in states.items():
        print(f"{name:16} {'up' if ok else 'down'}")
    return 0 if all(states.values()) else 1


def stack_component(config: StackConfig, args: argparse.Namespace) -> int:
    """`stack stop|start|restart|kill NAME`: one component, the rest left running."""
    name = args.component
    namespace = getattr(args, "namespace", None)
    if args.action == "kill":
        try:
            sig = components.parse_signal(args.signal)
        except ValueError as exc:
            raise StackError(str(exc)) from None
        if namespace:
            for pod in pods.kill(config, namespace, name, sig):
                print(f"{namespace}/{pod}: {sig.name} sent to its containers")
            return 0
        done = components.kill(config, name, sig)
        print(f"{name}: {sig.name} sent" if done else f"{name}: not running")
    elif args.action == "stop":
        print(f"{name}: stopped" if components.stop(config, name) else f"{name}: not running")
    elif namespace:  # restart on the cluster
        for pod in pods.delete(config, namespace, name, force=args.force):
            print(f"{namespace}/{pod}: deleted{' (no grace period)' if args.force else ''}")
    else:
        began = getattr(components, args.action)(config, name)
        print(f"{name}: ready in {began:.1f}s")
    return 0


def stack_images(config: StackConfig, args: argparse.Namespace) -> None:
    """Build (and, with the real node up, load) the images; print name and archive."""
    tag, targets = args.tag, args.target or list(images.PRODUCT_TARGETS)
    if args.ref:
        repository, _, tag = args.ref.rpartition(":")
        name = repository.removeprefix("localhost/vyapaar/")
        if not repository.startswith("localhost/vyapaar/") or name not in images.PRODUCT_TARGETS:
            raise StackError(f"--ref {args.ref!r}: expected localhost/vyapaar/"
                             f"{{{','.join(images.PRODUCT_TARGETS)}}}:TAG")
        targets = [name]
    archives = images.build_product_images(config, tag, targets)
    if args.infra:
        archives.update(images.build_infra_images(config))
    load = not args.no_load and node.status(config).get("containerd", False)
    for name, archive in archives.items():
        if load:
            node.load_image(config, archive)
        print(f"{name}\t{archive}{'  (loaded)' if load else ''}")


def stack_infra_secret(config: StackConfig, namespace: str, isolate: bool) -> None:
    urls = release.isolate(config, namespace) if isolate else release.shared_urls(config)
    print(yaml.safe_dump(release.infra_secret(namespace, urls), sort_keys=False), end="")


def stack_env(config: StackConfig, pod: bool = False) -> None:
    for key, value in (config.pod_env() if pod else config.env()).items():
        print(f"export {key}={value}")


def run_demo(config: StackConfig, on_cluster: bool = False) -> int:
    """Bring up the whole system, run the sample orders, and show where to look."""
    stack_up(config, None, real_node=on_cluster)
    if on_cluster:
        print("building and loading the images, installing the chart, then the sample "
              "orders ...", file=sys.stderr, flush=True)
        all_as_expected = demo.main_cluster(config)
        print()
        print(f"The chart runs on the real node in namespace {demo.CLUSTER_NAMESPACE}:")
        print(f"  kubectl get pods,vyo -n {demo.CLUSTER_NAMESPACE}   (KUBECONFIG="
              f"{config.kubeconfig})")
        print("Remove the node only: .venv/bin/vyapaar stack down --only node")
        print("Stop everything: make down")
        return 0 if all_as_expected else 1
    print("starting the services and the operator, then the sample orders ...",
          file=sys.stderr, flush=True)
    all_as_expected = demo.main(config)
    print()
    print("The local stack is up. Use it from a shell with:")
    print('  eval "$(.venv/bin/vyapaar stack env)"')
    print(f"  kubectl is at {config.cache_dir / 'bin' / 'kubectl'}")
    print(
        f"Prometheus: {config.prometheus_url}   "
        f"RabbitMQ management: {config.rabbitmq_management_url} (guest/guest)"
    )
    gateway = system.gateway_url(config)
    print(f"Order API (gateway): {gateway}   token: {system.demo_token(config)}   "
          f"(tenant {system.DEMO_TENANT['name']}, namespace {system.DEMO_TENANT['namespace']})")
    print(f"  try: .venv/bin/vyapaar order list    or    curl -H 'Authorization: Bearer "
          f"{system.demo_token(config)}' {gateway}/api/v1/orders")
    page = demo.gateway_request(config, "GET", "/api/v1/orders/order-completed")["links"]["page"]
    print(f"  an order in a browser (a read-only link): {gateway}{page}")
    print(f"  the API's OpenAPI document: {gateway}/openapi.json")
    print(f"Logs of every process: {config.state_dir / 'run'}/")
    print("Key saga figures, live from Prometheus: .venv/bin/vyapaar top")
    if system.tracing_enabled():
        print(f"Traces (Jaeger, no UI): .venv/bin/vyapaar order trace NAME    or    curl "
              f"{config.traces_url}/api/v3/traces/TRACE_ID   (VYAPAAR_TRACING=0: off)")
    else:
        print("Tracing is off (VYAPAAR_TRACING=0): the product exports no spans")
    print("Stop everything: make down")
    return 0 if all_as_expected else 1


STACK_EXAMPLES = """examples:
  vyapaar stack up                  # control plane + infrastructure, idempotent
  vyapaar stack up --only infra     # PostgreSQL, RabbitMQ, Redis, Prometheus, Jaeger only
  vyapaar stack up --node real      # plus one real kubelet node (root): pods run for real
  vyapaar stack env --pod           # the infrastructure's URLs as pods on that node see them
  vyapaar stack down --only node    # remove the real node, keep the rest running
  eval "$(vyapaar stack env)"       # KUBECONFIG and VYAPAAR_*_URL for this shell
  vyapaar stack images --tag dev    # localhost/vyapaar/{operator,services}:dev, loaded on the node
  vyapaar stack infra-secret --namespace vyapaar | kubectl apply -f -
  vyapaar stack restart rabbitmq     # one component on its own, started as the stack starts it
  vyapaar stack kill operator --signal KILL --namespace vyn   # the operator pod's container
  vyapaar stack restart payment --namespace vyn --force       # its pods deleted, no grace
  vyapaar stack kill operator --signal KILL   # no graceful shutdown; `start operator` after
  vyapaar stack down                # stop everything; no process is left behind
"""


def register(commands: Any) -> None:
    """Add ``stack``, ``demo`` and ``bench`` to the `vyapaar` command line."""
    stack = commands.add_parser(
        "stack", help="the local development stack (no cluster, no Docker)",
        epilog=STACK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    stack.set_defaults(func=run_stack)
    stack_cmds = stack.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = stack_cmds.add_parser("up", help="start the local stack",
                               epilog="example: vyapaar stack up --only cluster")
    up.add_argument("--only", choices=["cluster", "infra"], help="start only one half")
    up.add_argument("--node", choices=["real"],
                    help="add one real kubelet node (containerd, kube-proxy, CoreDNS; needs root)")
    down = stack_cmds.add_parser("down", help="stop the local stack",
                                 epilog="example: vyapaar stack down --only node")
    down.add_argument("--only", choices=["node"], help="remove only the real node")
    stack_cmds.add_parser("status", help="show what runs", epilog="example: vyapaar stack status")
    for action, what in (("stop", "stop one component (the rest runs on)"),
                         ("start", "start one component and wait until it is ready"),
                         ("restart", "stop one component, start it again as the stack did")):
        one = stack_cmds.add_parser(action, help=what,
                                    epilog=f"example: vyapaar stack {action} rabbitmq")
        one.add_argument("component", help="e.g. operator, payment, gateway, rabbitmq, postgres, "
                         "redis, etcd, kube-apiserver, kubelet, containerd")
        if action == "restart":
            one.add_argument("--namespace", metavar="NS",
                             help="on the cluster: delete the component's pods of the release "
                                  "in NS (its Deployment replaces them)")
            one.add_argument("--force", action="store_true",
                             help="with --namespace: no grace period")
    kill = stack_cmds.add_parser("kill", help="send a signal to one component",
                                 epilog="example: vyapaar stack kill operator --signal KILL")
    kill.add_argument("component", help="as for restart")
    kill.add_argument("--signal", default="TERM",
                      help="KILL (no graceful shutdown), TERM (default), STOP, CONT, ...")
    kill.add_argument("--namespace", metavar="NS",
                      help="on the cluster: signal the main process of the component's "
                           "containers in NS (through the real node's containerd)")
    env = stack_cmds.add_parser("env", help="print the environment to use the stack",
                                epilog='example: eval "$(vyapaar stack env)"')
    env.add_argument("--pod", action="store_true",
                     help="the infrastructure's URLs as seen from a pod on the real node")
    images_cmd = stack_cmds.add_parser(
        "images", help="build the product images (and stand-ins) from the Dockerfiles",
        epilog="example: vyapaar stack images --tag dev --infra")
    images_cmd.add_argument("--tag", default="dev", help="product image tag (default: dev)")
    images_cmd.add_argument("--target", action="append", choices=list(images.PRODUCT_TARGETS),
                            help="only this image (repeatable; default: all)")
    images_cmd.add_argument("--ref", help="the one image to build, as localhost/vyapaar/NAME:TAG "
                            "(what Tilt's custom_build asks for)")
    images_cmd.add_argument("--infra", action="store_true",
                            help="also the PostgreSQL/RabbitMQ/Redis stand-ins from Debian")
    images_cmd.add_argument("--no-load", action="store_true",
                            help="do not import them into the real node's containerd")
    secret = stack_cmds.add_parser(
        "infra-secret", help="print the chart's infrastructure Secret for pods on the real node",
        epilog="example: vyapaar stack infra-secret --namespace vyapaar | kubectl apply -f -")
    secret.add_argument("--namespace", required=True, help="namespace of the release")
    secret.add_argument("--isolate", action="store_true",
                        help="give the release its own database, virtual host and Redis DB")

    demo_cmd = commands.add_parser(
        "demo", help="bring up the whole system on the local stack and run the sample orders",
        epilog="examples:\n  vyapaar demo             # local processes; then: vyapaar top\n"
               "  vyapaar demo --cluster   # the Helm chart on a real node (root)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_cmd.add_argument("--cluster", action="store_true",
                          help="install the Helm chart on the stack's real node (needs root) "
                               "and run the samples through its pods")
    demo_cmd.set_defaults(func=lambda args: _guarded(
        lambda: run_demo(StackConfig(), on_cluster=args.cluster)))
    bench.register(commands)
    chaos.register(commands)


def environment_defaults() -> dict[str, str]:
    """The local stack's addresses, for settings the environment leaves unset: its
    infrastructure, its gateway and -- once the stack has made it -- the demo tenant's
    gateway token (read, never created here: every `vyapaar` invocation asks for this)."""
    config = StackConfig()
    defaults = {key: value for key, value in config.env().items() if key.startswith("VYAPAAR_")}
    defaults["VYAPAAR_GATEWAY_URL"] = system.gateway_url(config)
    if config.kubeconfig.exists():  # `vyapaar orders` on the local stack's cluster
        defaults["KUBECONFIG"] = str(config.kubeconfig)
    try:
        token = (system.gateway_dir(config) / "demo-token").read_text().strip()
    except OSError:
        token = ""
    if token:
        defaults["VYAPAAR_GATEWAY_TOKEN"] = token
    return defaults


def run_stack(args: argparse.Namespace) -> int:
    config = StackConfig()

    def act() -> int:
        if args.action == "up":
            stack_up(config, args.only, real_node=args.node == "real")
        elif args.action == "down":
            stack_down(config, args.only)
        elif args.action == "status":
            return stack_status(config)
        elif args.action in ("stop", "start", "restart", "kill"):
            return stack_component(config, args)
        elif args.action == "env":
            stack_env(config, args.pod)
        elif args.action == "images":
            stack_images(config, args)
        elif args.action == "infra-secret":
            stack_infra_secret(config, args.namespace, args.isolate)
        return 0

    return _guarded(act)


def _guarded(action: Callable[[], int]) -> int:
    try:
        return action()
    except StackError as exc:
        print(f"vyapaar: error: {exc}", file=sys.stderr)
        return 1
