"""A real Temporal server for the benchmark: find the binary, write its config, set up its
PostgreSQL schema, start and stop it.

Why a real server and not the SDK's test server: the comparison is about a production-
shaped deployment, so the server is ``go.temporal.io/server`` (built from its Go module by
``hack/bench/peers/build-temporal.sh`` into ``~/.cache/vyapaar/peers/bin``) persisting to the
stack's PostgreSQL (databases ``peer_temporal`` and ``peer_temporal_visibility``), with 4
history shards, every port on loopback. Nothing is ever downloaded from here: a missing
binary is reported by :func:`missing`, and building it (10+ minutes on 2 cores) is left to
the script.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg

from ...config import StackConfig

__all__ = [
    "DATABASE",
    "NAMESPACE",
    "VISIBILITY_DATABASE",
    "Binaries",
    "TemporalServer",
    "find_binaries",
    "missing",
]

VERSION = "v1.32.0"
DATABASE = "peer_temporal"
VISIBILITY_DATABASE = "peer_temporal_visibility"
NAMESPACE = "vyapaar-peer"
SHARDS = 4
#: loopback ports (override the base with VYAPAAR_PEER_TEMPORAL_PORT): frontend = base
PORT_BASE = int(os.environ.get("VYAPAAR_PEER_TEMPORAL_PORT", "27233"))
BUILD_SCRIPT = "hack/bench/peers/build-temporal.sh"


def peers_cache() -> Path:
    return StackConfig().cache_dir / "peers"


@dataclass(frozen=True)
class Binaries:
    server: Path
    sql_tool: Path
    #: "temporal" for the real server (the only variant this module starts)
    variant: str = "temporal"


def find_binaries(bin_dir: Path | None = None) -> Binaries | None:
    """The built server and SQL tool, or None (names as the build script leaves them)."""
    directory = bin_dir or peers_cache() / "bin"
    server = directory / "temporal-server"
    sql_tool = directory / "temporal-sql-tool"
    if server.is_file() and os.access(server, os.X_OK) and sql_tool.is_file():
        return Binaries(server=server, sql_tool=sql_tool)
    return None


def missing() -> str | None:
    """Why the server cannot run here, or None."""
    if find_binaries() is None:
        return (f"the Temporal server {VERSION} is not built: run {BUILD_SCRIPT} "
                f"(installs temporal-server and temporal-sql-tool into {peers_cache() / 'bin'})")
    return None


def schema_dir(kind: str) -> Path | None:
    """``schema/postgresql/v12/<kind>/versioned`` of the server module in the Go module
    cache, if it is there; else the SQL tool's embedded copy of the same files is used."""
    gomodcache = os.environ.get("GOMODCACHE")
    if not gomodcache and shutil.which("go"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            gomodcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True,
                                        text=True, check=True, timeout=30).stdout.strip()
    if not gomodcache:
        return None
    path = (Path(gomodcache) / f"go.temporal.io/server@{VERSION}" / "schema" / "postgresql"
            / "v12" / kind / "versioned")
    return path if path.is_dir() else None


@dataclass(frozen=True)
class PgTarget:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def parse(cls, database_url: str) -> PgTarget:
        url = urlsplit(database_url)
        return cls(host=url.hostname or "127.0.0.1", port=url.port or 5432,
                   user=unquote(url.username or "postgres"),
                   password=unquote(url.password or ""))

    def url(self, database: str) -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"


def config_yaml(pg: PgTarget, dynamic_config: Path, base: int = PORT_BASE) -> str:
    """The server's config: PostgreSQL persistence, 4 shards, loopback ports only."""

    def store(database: str, conns: int) -> str:
        return f"""      sql:
        pluginName: "postgres12"
        databaseName: "{database}"
        connectAddr: "{pg.host}:{pg.port}"
        connectProtocol: "tcp"
        user: "{pg.user}"
        password: "{pg.password}"
        maxConns: {conns}
        maxIdleConns: {conns}
        maxConnLifetime: "1h"
"""

    def service(name: str, offset: int, http: bool = False) -> str:
        lines = [f"  {name}:", "    rpc:", f"      grpcPort: {base + offset}",
                 f"      membershipPort: {base - 300 + offset}", "      bindOnLocalHost: true"]
        if http:
            lines.append(f"      httpPort: {base + 10}")
        return "\n".join(lines) + "\n"

    return (
        "log:\n  stdout: true\n  level: warn\n\n"
        "persistence:\n"
        "  defaultStore: postgres-default\n"
        "  visibilityStore: postgres-visibility\n"
        f"  numHistoryShards: {SHARDS}\n"
        "  datastores:\n"
        "    postgres-default:\n" + store(DATABASE, 20)
        + "    postgres-visibility:\n" + store(VISIBILITY_DATABASE, 10)
        + "\nglobal:\n  membership:\n    maxJoinDuration: 30s\n"
        '    broadcastAddress: "127.0.0.1"\n\n'
        "services:\n"
        + service("frontend", 0, http=True) + service("history", 1)
        + service("matching", 2) + service("worker", 6)
        + "\nclusterMetadata:\n"
        "  enableGlobalNamespace: false\n"
        "  failoverVersionIncrement: 10\n"
        '  masterClusterName: "active"\n'
        '  currentClusterName: "active"\n'
        "  clusterInformation:\n"
        "    active:\n"
        "      enabled: true\n"
        "      initialFailoverVersion: 1\n"
        '      rpcName: "frontend"\n'
        f'      rpcAddress: "127.0.0.1:{base}"\n\n'
        'dcRedirectionPolicy:\n  policy: "noop"\n\n'
        "archival:\n  history:\n    state: \"disabled\"\n  visibility:\n    state: \"disabled\"\n\n"
        "namespaceDefaults:\n  archival:\n    history:\n      state: \"disabled\"\n"
        "    visibility:\n      state: \"disabled\"\n\n"
        f'dynamicConfigClient:\n  filepath: "{dynamic_config}"\n  pollInterval: "10s"\n'
    )


#: a freshly registered namespace is usable after one cache refresh: make that quick
DYNAMIC_CONFIG = """\
system.namespaceCacheRefreshInterval:
  - value: 1s
limit.maxIDLength:
  - value: 255
"""


class TemporalServer:
    """One server process, owned by this Python process (stopped by :meth:`stop`)."""

    def __init__(self, database_url: str, *, binaries: Binaries | None = None,
                 state_dir: Path | None = None, port_base: int = PORT_BASE) -> None:
        found = binaries or find_binaries()
        if found is None:
            raise RuntimeError(missing() or "the Temporal server is not built")
        self.binaries = found
        self.pg = PgTarget.parse(database_url)
        self.state_dir = state_dir or StackConfig().state_dir / "peers" / "temporal"
        self.port_base = port_base
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port_base}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "server.log"

    def _sql_tool(self, database: str, *args: str) -> None:
        cmd = [str(self.binaries.sql_tool), "--plugin", "postgres12", "--ep", self.pg.host,
               "-p", str(self.pg.port), "-u", self.pg.user, "--db", database]
        if self.pg.password:
            cmd += ["--pw", self.pg.password]
        done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"temporal-sql-tool {' '.join(args)} on {database} failed:\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")

    async def setup_schema(self) -> None:
        """Create both databases and bring their schemas to the latest version (idempotent)."""
        admin = await asyncpg.connect(self.pg.url("postgres"))
        try:
            existing = {r["datname"] for r in await admin.fetch("SELECT datname FROM pg_database")}
        finally:
            await admin.close()
        for database, kind in ((DATABASE, "temporal"), (VISIBILITY_DATABASE, "visibility")):
            if database not in existing:
                await asyncio.to_thread(self._sql_tool, database, "create-database")
            conn = await asyncpg.connect(self.pg.url(database))
            try:
                versioned = await conn.fetchval("SELECT to_regclass('public.schema_version')")
            finally:
                await conn.close()
            if versioned is None:
                await asyncio.to_thread(self._sql_tool, database, "setup-schema", "-v", "0.0")
            directory = schema_dir(kind)
            source = (["--schema-dir", str(directory)] if directory
                      else ["--schema-name", f"postgresql/v12/{kind}"])
            await asyncio.to_thread(self._sql_tool, database, "update-schema", *source)

    def write_config(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        dynamic = self.state_dir / "dynamicconfig.yaml"
        dynamic.write_text(DYNAMIC_CONFIG)
        config = self.state_dir / "config.yaml"
        config.write_text(config_yaml(self.pg, dynamic, self.port_base))
        return config

    async def start(self, *, timeout_s: float = 120.0) -> None:
        """Set the schema up, start the server, wait until its frontend answers and the
        benchmark's namespace is registered and visible."""
        if self.process is not None and self.process.poll() is None:
            return
        await self.setup_schema()
        self.process = self._spawn(self.write_config())
        atexit.register(self.stop)  # never outlive the Python process that started it
        try:
            await asyncio.wait_for(self._ready(), timeout_s)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, config: Path) -> subprocess.Popen[bytes]:
        """The server process, in its own session (stopped as a group), logging to a file."""
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [str(self.binaries.server), "--config-file", str(config), "--allow-no-auth",
                 "start"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    async def _ready(self) -> None:
        from google.protobuf.duration_pb2 import Duration
        from temporalio.api.workflowservice.v1 import (
            DescribeNamespaceRequest,
            RegisterNamespaceRequest,
        )
        from temporalio.client import Client
        from temporalio.service import RPCError, RPCStatusCode

        client: Client | None = None
        while client is None:
            self._check_alive()
            try:
                client = await Client.connect(self.address, namespace=NAMESPACE)
            except RuntimeError:
                await asyncio.sleep(0.5)
        service = client.workflow_service
        while True:
            self._check_alive()
            try:
                await service.register_namespace(RegisterNamespaceRequest(
                    namespace=NAMESPACE,
                    workflow_execution_retention_period=Duration(seconds=24 * 3600)))
                break
            except RPCError as exc:
                if exc.status == RPCStatusCode.ALREADY_EXISTS:
                    break
                await asyncio.sleep(0.5)  # the server is still joining its ring
        while True:
            self._check_alive()
            try:
                await service.describe_namespace(DescribeNamespaceRequest(namespace=NAMESPACE))
                break
            except RPCError:
                await asyncio.sleep(0.5)

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() \
                else ""
            raise RuntimeError(f"the Temporal server exited; its log ends:\n{tail}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL it if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
