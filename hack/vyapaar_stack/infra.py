"""RabbitMQ, PostgreSQL, Redis, Prometheus and Jaeger as local processes on loopback.

Each runs from its Debian package's binaries with all of its data, logs and
configuration under the stack's state directory, so nothing touches the
machine's own instances (if any) and `rm -rf .state` is a full reset.

They listen on 127.0.0.1, and while the real node's bridge exists
(`vyapaar stack up --node real`) on the node address too, so that pods can use
them as bring-your-own infrastructure (`StackConfig.pod_env()`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import REPO_ROOT, StackConfig
from .node.host import address_is_local
from .processes import Process, StackError, http_ok, port_open, wait_until

RULES_DIR = REPO_ROOT / "manifests" / "prometheus" / "rules"
POSTGRES_BIN = Path(os.environ.get("VYAPAAR_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
RABBITMQ_BIN = Path(os.environ.get("VYAPAAR_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


@dataclass(frozen=True)
class Component:
    """One infrastructure service: how to start it and how to know it is ready."""

    name: str
    start: Callable[[StackConfig], None]
    ready: Callable[[StackConfig], bool]
    processes: Callable[[StackConfig], list[Process]]
    startup_timeout: float = 60.0

    def stop(self, config: StackConfig) -> None:
        for proc in reversed(self.processes(config)):
            proc.stop()

    def running(self, config: StackConfig) -> bool:
        return all(p.is_running() for p in self.processes(config))


def _run_dir(config: StackConfig) -> Path:
    return config.state_dir / "run"


def _proc(config: StackConfig, name: str) -> Process:
    return Process(name, _run_dir(config))


def listen_hosts(config: StackConfig) -> list[str]:
    """Where PostgreSQL, RabbitMQ and Redis listen: loopback, plus the node address while
    the real node's bridge holds it."""
    if address_is_local(config.node_ip):
        return [config.host, config.node_ip]
    return [config.host]


def _listen_record(config: StackConfig, name: str) -> Path:
    return _run_dir(config) / f"{name}.listen"


def _record_listen(config: StackConfig, name: str, hosts: list[str]) -> None:
    _run_dir(config).mkdir(parents=True, exist_ok=True)
    _listen_record(config, name).write_text(json.dumps(hosts))


def _lacks_listener(config: StackConfig, name: str) -> bool:
    """Does the running `name` miss an address it should listen on (started before the
    node's bridge existed)?"""
    try:
        current = set(json.loads(_listen_record(config, name).read_text()))
    except (FileNotFoundError, ValueError):
        current = {config.host}
    return not set(listen_hosts(config)) <= current


def _refuse_foreign_port(config: StackConfig, port: int, what: str, proc: Process) -> None:
    if not proc.is_running() and port_open(config.host, port):
        raise StackError(
            f"{what}: port {config.host}:{port} is taken by another process; "
            f"set VYAPAAR_*_PORT to a free port (see hack/vyapaar_stack/config.py)"
        )


# --- PostgreSQL -------------------------------------------------------------------------------


def _postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: run it as the `postgres` system user then."""
    return "postgres" if os.geteuid() == 0 else None


def _postgres_process(config: StackConfig) -> Process:
    return Process("postgres", _run_dir(config), stop_signal=signal.SIGINT)


def _postgres_home(config: StackConfig) -> Path:
    """The server's folder: .state/postgres, or (as root, when the `postgres` user cannot
    reach the state folder, e.g. a checkout under /root) a folder under /var/tmp that
    .state/postgres links to."""
    link = config.state_dir / "postgres"
    if link.exists():
        return link.resolve()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        link.mkdir()
        return link
    pg = pwd.getpwnam("postgres")
    reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x",
                                str(config.state_dir)]).returncode == 0
    if reachable:
        home = link
    else:
        digest = hashlib.sha1(str(config.state_dir).encode()).hexdigest()[:12]
        home = Path("/var/tmp/vyapaar") / digest / "postgres"
        home.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(home.parent.parent, 0o755)
        os.chmod(home.parent, 0o755)
    home.mkdir(exist_ok=True)
    os.chown(home, pg.pw_uid, pg.pw_gid)
    if home != link:
        link.symlink_to(home)
    return home


def _start_postgres(config: StackConfig) -> None:
    proc = _postgres_process(config)
    _refuse_foreign_port(config, config.ports.postgres, "PostgreSQL", proc)
    home = _postgres_home(config)
    data = home / "data"
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [
                str(POSTGRES_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "vyapaar",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=_postgres_user(),
            cwd=home,
        )
    hosts = listen_hosts(config)
    if config.node_ip in hosts:
        _trust_pod_subnet(config, data)
    # fsync is off: this instance serves development and tests. A killed process
    # loses nothing (the OS keeps the page cache); only a machine crash would.
    if not proc.is_running():
        _record_listen(config, "postgres", hosts)
    proc.start(
        [
            str(POSTGRES_BIN / "postgres"),
            "-D",
            str(data),
            "-c",
            f"listen_addresses={','.join(hosts)}",
            "-c",
            f"port={config.ports.postgres}",
            "-c",
            f"unix_socket_directories={home}",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "log_min_messages=warning",
        ],
        user=_postgres_user(),
        cwd=home,
    )


def _trust_pod_subnet(config: StackConfig, data: Path) -> None:
    """Let pods on the real node in, like loopback clients (trust: a development database)."""
    hba = data / "pg_hba.conf"
    line = f"host all all {config.node.pod_subnet} trust"
    if line not in hba.read_text().splitlines():
        with hba.open("a") as out:
            out.write(f"# pods on the local stack's real node\n{line}\n")


def _postgres_ready(config: StackConfig) -> bool:
    args = ["-h", config.host, "-p", str(config.ports.postgres), "-U", "vyapaar"]
    if subprocess.run([str(POSTGRES_BIN / "pg_isready"), *args, "-q"]).returncode != 0:
        return False
    exists = subprocess.run(
        [
            str(POSTGRES_BIN / "psql"),
            *args,
            "-d",
            "postgres",
            "-tAc",
            "SELECT 1 FROM pg_database WHERE datname = 'vyapaar'",
        ],
        capture_output=True,
        text=True,
    )
    if exists.returncode != 0:
        return False
    if exists.stdout.strip() != "1":
        subprocess.run([str(POSTGRES_BIN / "createdb"), *args, "vyapaar"], check=True)
    return True


# --- RabbitMQ ---------------------------------------------------------------------------------


def _rabbitmq_env(config: StackConfig) -> dict[str, str]:
    home = config.state_dir / "rabbitmq"
    return {
        "HOME": str(home),  # the Erlang cookie lives in $HOME
        "RABBITMQ_NODENAME": f"{config.cluster_name}@localhost",
        "RABBITMQ_DIST_PORT": str(config.ports.rabbitmq_dist),
        "ERL_EPMD_PORT": str(config.ports.epmd),
        "ERL_EPMD_ADDRESS": config.host,
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
        "RABBITMQ_LOGS": "-",
    }


def rabbitmqctl(config: StackConfig, *args: str) -> subprocess.CompletedProcess[str]:
    """Run rabbitmqctl against the stack's node (same cookie, same epmd)."""
    return subprocess.run(
        [str(RABBITMQ_BIN / "rabbitmqctl"), *args],
        env={**os.environ, **_rabbitmq_env(config)},
        capture_output=True,
        text=True,
    )


def _start_rabbitmq(config: StackConfig) -> None:
    epmd, server = _rabbitmq_processes(config)
    _refuse_foreign_port(config, config.ports.amqp, "RabbitMQ", server)
    env = _rabbitmq_env(config)
    home = Path(env["HOME"])
    (home / "log").mkdir(parents=True, exist_ok=True)
    hosts = listen_hosts(config)
    if not server.is_running():
        _record_listen(config, "rabbitmq", hosts)
    (home / "rabbitmq.conf").write_text(
        "\n".join(
            [
                *[f"listeners.tcp.{i} = {h}:{config.ports.amqp}"
                  for i, h in enumerate(hosts, start=1)],
                f"management.tcp.ip = {config.host}",
                f"management.tcp.port = {config.ports.rabbitmq_management}",
                f"prometheus.tcp.ip = {config.host}",
                f"prometheus.tcp.port = {config.ports.rabbitmq_prometheus}",
                # /metrics stays aggregated (cheap); per-queue depth is scraped from
                # /metrics/detailed?family=queue_coarse_metrics (job rabbitmq-queues).
                "prometheus.return_per_object_metrics = false",
                # guest may log in from pods when RabbitMQ listens on the node address
                # (reachable only from our bridge); else from loopback only.
                f"loopback_users.guest = {'false' if config.node_ip in hosts else 'true'}",
                "log.console = true",
                "log.console.level = warning",
                "log.file = false",
                "disk_free_limit.absolute = 100MB",
                "",
            ]
        )
    )
    (home / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_prometheus].\n")
    (home / "rabbitmq-env.conf").write_text("")
    # epmd is a daemon Erlang would otherwise fork out of our reach; run it ourselves.
    epmd.start(["epmd", "-port", str(config.ports.epmd), "-address", config.host], env=env)
    wait_until(
        lambda: port_open(config.host, config.ports.epmd), what="epmd", timeout=10, process=epmd
    )
    server.start([str(RABBITMQ_BIN / "rabbitmq-server")], env=env)


def _rabbitmq_processes(config: StackConfig) -> list[Process]:
    return [_proc(config, "epmd"), _proc(config, "rabbitmq")]


def _rabbitmq_ready(config: StackConfig) -> bool:
    # The AMQP listener opens when the broker has booted; the management and
    # prometheus listeners come with their plugins, last.
    return (
        port_open(config.host, config.ports.amqp)
        and port_open(config.host, config.ports.rabbitmq_management)
        and port_open(config.host, config.ports.rabbitmq_prometheus)
    )


# --- Redis ------------------------------------------------------------------------------------


def _start_redis(config: StackConfig) -> None:
    proc = _proc(config, "redis")
    _refuse_foreign_port(config, config.ports.redis, "Redis", proc)
    data = config.state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    hosts = listen_hosts(config)
    if not proc.is_running():
        _record_listen(config, "redis", hosts)
    proc.start(
        [
            "redis-server",
            "--bind",
            *hosts,
            "--port",
            str(config.ports.redis),
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            # Protected mode refuses every non-loopback client; the node address is
            # reachable from our bridge only, where pods must get in.
            "--protected-mode",
            "no" if config.node_ip in hosts else "yes",
            "--loglevel",
            "warning",
        ],
    )


def _redis_ready(config: StackConfig) -> bool:
    out = subprocess.run(
        ["redis-cli", "-h", config.host, "-p", str(config.ports.redis), "PING"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() == "PONG"


# --- Prometheus -------------------------------------------------------------------------------


def prometheus_targets_dir(config: StackConfig) -> Path:
    """Drop `<job>.json` file_sd target files here; Prometheus picks them up live."""
    return config.state_dir / "prometheus" / "targets"


def register_scrape_target(
    config: StackConfig, job: str, addresses: list[str], labels: dict[str, str] | None = None
) -> None:
    """Make Prometheus scrape `addresses` (host:port) as `job` from now on."""
    targets = prometheus_targets_dir(config)
    targets.mkdir(parents=True, exist_ok=True)
    entry = [{"targets": addresses, "labels": {"job": job, **(labels or {})}}]
    tmp = targets / f".{job}.json.tmp"
    tmp.write_text(json.dumps(entry, indent=2))
    tmp.replace(targets / f"{job}.json")


def _start_prometheus(config: StackConfig) -> None:
    proc = _proc(config, "prometheus")
    _refuse_foreign_port(config, config.ports.prometheus, "Prometheus", proc)
    home = config.state_dir / "prometheus"
    (home / "data").mkdir(parents=True, exist_ok=True)
    register_scrape_target(config, "prometheus", [f"{config.host}:{config.ports.prometheus}"])
    register_scrape_target(
        config, "rabbitmq", [f"{config.host}:{config.ports.rabbitmq_prometheus}"]
    )
    # Per-queue depth (DLQs included) comes from the detailed endpoint, one family only.
    register_scrape_target(
        config,
        "rabbitmq-queues",
        [f"{config.host}:{config.ports.rabbitmq_prometheus}"],
        {"__metrics_path__": "/metrics/detailed", "__param_family": "queue_coarse_metrics"},
    )
    (home / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
                "rule_files": [str(RULES_DIR / "*.yaml")],
                "scrape_configs": [
                    {
                        "job_name": "vyapaar",
                        "file_sd_configs": [
                            {
                                "files": [str(prometheus_targets_dir(config) / "*.json")],
                                "refresh_interval": "5s",
                            }
                        ],
                    }
                ],
            },
            indent=2,
        )
    )
    if proc.is_running():
        reload_prometheus(config)  # picks up the new configuration and rule files
        return
    proc.start(
        [
            "prometheus",
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={config.host}:{config.ports.prometheus}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ],
    )


def reload_prometheus(config: StackConfig) -> None:
    """Re-read configuration and rules (Prometheus runs with --web.enable-lifecycle)."""
    request = urllib.request.Request(f"{config.prometheus_url}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def _prometheus_ready(config: StackConfig) -> bool:
    return http_ok(f"{config.prometheus_url}/-/ready")


# --- Jaeger (the trace backend) ------------------------------------------------------------------

#: How many traces Jaeger's in-memory store keeps (the oldest go first): a whole test run's
#: orders. Measured: ~2 KiB of RSS per span, ~140 spans per order, so a full store of whole
#: orders is several GiB; a restart of the component empties it.
JAEGER_MAX_TRACES = 20_000


def jaeger_binary(config: StackConfig) -> Path:
    """Jaeger v2, built from its Go module by hack/provision.sh (`build_jaeger`)."""
    return config.cache_dir / "bin" / "jaeger"


def jaeger_config(config: StackConfig) -> dict[str, object]:
    """Jaeger v2's configuration (an OpenTelemetry Collector's): OTLP in, the in-memory store,
    the query API, and its own metrics, all on the stack's ports. Without a file of our own
    it would take its all-in-one defaults: thirteen standard ports (4317, 4318, 16686, ...)."""
    host, ports = config.host, config.ports
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                     "exporters": ["jaeger_storage_exporter"]}},
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {"level": "basic", "readers": [{"pull": {"exporter": {
                    "prometheus": {"host": host, "port": ports.jaeger_metrics}}}}]},
                "logs": {"level": "warn"},
            },
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {
                "max_traces": JAEGER_MAX_TRACES}}}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                # on by default in v2: it would export Jaeger's own spans to localhost:4317
                "enable_tracing": False,
                "http": {"endpoint": f"{host}:{ports.jaeger_query}"},
                "grpc": {"endpoint": f"{host}:{ports.jaeger_query_grpc}"},
            },
        },
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"{host}:{ports.otlp_grpc}"},
            "http": {"endpoint": f"{host}:{ports.otlp_http}"},
        }}},
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


def _start_jaeger(config: StackConfig) -> None:
    proc = _proc(config, "jaeger")
    _refuse_foreign_port(config, config.ports.otlp_http, "Jaeger", proc)
    binary = jaeger_binary(config)
    if not binary.exists():
        raise StackError(f"jaeger not found at {binary}: run `make provision` first "
                         "(hack/provision.sh go builds it)")
    home = config.state_dir / "jaeger"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(json.dumps(jaeger_config(config), indent=2) + "\n")
    register_scrape_target(config, "jaeger", [f"{config.host}:{config.ports.jaeger_metrics}"])
    proc.start([str(binary), f"--config={home / 'config.yaml'}"], cwd=home)


def _jaeger_ready(config: StackConfig) -> bool:
    return port_open(config.host, config.ports.otlp_http) and http_ok(
        f"{config.traces_url}/api/v3/services")


COMPONENTS: tuple[Component, ...] = (
    Component(
        "postgres",
        _start_postgres,
        _postgres_ready,
        lambda c: [_postgres_process(c)],
        startup_timeout=60,
    ),
    Component(
        "rabbitmq", _start_rabbitmq, _rabbitmq_ready, _rabbitmq_processes, startup_timeout=120
    ),
    Component(
        "redis", _start_redis, _redis_ready, lambda c: [_proc(c, "redis")], startup_timeout=20
    ),
    Component(
        "prometheus",
        _start_prometheus,
        _prometheus_ready,
        lambda c: [_proc(c, "prometheus")],
        startup_timeout=30,
    ),
    Component(
        "jaeger", _start_jaeger, _jaeger_ready, lambda c: [_proc(c, "jaeger")],
        startup_timeout=30,
    ),
)


#: The components pods use, which follow `listen_hosts`.
LISTENING = ("postgres", "rabbitmq", "redis")


def missing_binaries(config: StackConfig | None = None) -> list[str]:
    wanted = [
        str(POSTGRES_BIN / "postgres"),
        str(RABBITMQ_BIN / "rabbitmq-server"),
        "redis-server",
        "prometheus",
        "promtool",
        "epmd",
        str(jaeger_binary(config or StackConfig())),
    ]
    return [b for b in wanted if shutil.which(b) is None]


def up(config: StackConfig) -> None:
    """Start every component (those already running are left alone) and wait for all."""
    missing = missing_binaries(config)
    if missing:
        raise StackError(f"missing {', '.join(missing)}: run `make provision` first")
    for comp in COMPONENTS:
        if comp.name in LISTENING and comp.running(config) and _lacks_listener(config, comp.name):
            comp.stop(config)  # restarted below, listening on the node address too
        comp.start(config)
    for comp in COMPONENTS:
        main = comp.processes(config)[-1]
        wait_until(
            functools.partial(comp.ready, config),
            what=comp.name,
            timeout=comp.startup_timeout,
            process=main,
        )


def down(config: StackConfig) -> None:
    for comp in reversed(COMPONENTS):
        comp.stop(config)


def status(config: StackConfig) -> dict[str, bool]:
    return {comp.name: comp.running(config) and comp.ready(config) for comp in COMPONENTS}
