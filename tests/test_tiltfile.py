"""The Tiltfile: valid Starlark whose every path, image and resource exists.

tilt itself could not be built here (its Go module's dependencies fail checksum-database
verification through the module proxy), so `tilt ci` cannot run. Instead the Tiltfile is
evaluated, in both modes, by a real Starlark interpreter (starlark-rust) with Tilt's API
functions recording their calls; what they recorded is then checked against the tree and
against the chart rendered by the real helm with the same values.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import starlark as sl
from vyapaar_stack import chart
from vyapaar_stack.config import REPO_ROOT

TILTFILE = REPO_ROOT / "Tiltfile"
#: Tilt API functions the Tiltfile may call (https://docs.tilt.dev/api.html)
TILT_API = (
    "allow_k8s_contexts", "custom_build", "docker_build", "fall_back_on", "helm",
    "k8s_resource", "k8s_yaml", "local", "local_resource", "namespace_create", "port_forward",
    "run", "sync",
)
EXTENSIONS = {"ext://restart_process": ("docker_build_with_restart",)}
#: the release name the Tiltfile installs the chart as (objects vyapaar-nexus-<component>)
RELEASE = "vyapaar-nexus"
SAGA_SERVICES = ("inventory", "payment", "shipping", "notification")
#: the chart's bundled infrastructure (kind mode): Tilt makes its resources by itself
INFRASTRUCTURE = {"rabbitmq", "postgresql", "redis"}


class TiltfileFailed(Exception):
    """The Tiltfile called fail()."""


@dataclass
class Recorded:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def of(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for called, args, kwargs in self.calls if called == name]


def evaluate(mode: str | None) -> Recorded:
    recorded = Recorded()

    def recorder(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            recorded.calls.append((name, args, kwargs))
            return {"tilt": name, "args": list(args), "kwargs": kwargs}
        return call

    def fail(message: str) -> None:
        raise TiltfileFailed(message)

    module = sl.Module()
    for name in TILT_API:
        module.add_callable(name, recorder(name))
    module.add_callable("fail", fail)
    module.add_callable("_define_string", recorder("config.define_string"))
    module.add_callable("_parse", lambda: {} if mode is None else {"mode": mode})
    extensions: dict[str, Any] = {}
    for ext, names in EXTENSIONS.items():
        frozen = sl.Module()
        for name in names:
            frozen.add_callable(name, recorder(name))
        extensions[ext] = frozen.freeze()
    prelude = ('config = struct(define_string = _define_string, parse = _parse)\n'
               'TRIGGER_MODE_MANUAL = "manual"\nTRIGGER_MODE_AUTO = "auto"\n')
    globals_ = sl.Globals.extended_by([sl.LibraryExtension.StructType])
    sl.eval(module, sl.parse("prelude", prelude), globals_)
    dialect = sl.Dialect.standard()
    dialect.enable_top_level_stmt = True  # Tilt's dialect: `if`/`for` outside functions
    sl.eval(module, sl.parse("Tiltfile", TILTFILE.read_text(), dialect), globals_,
            sl.FileLoader(lambda name: extensions[name]))
    return recorded


@pytest.fixture(scope="module", params=["kind", "local"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tilt(mode: str) -> Recorded:
    return evaluate(mode)


@pytest.fixture(scope="module")
def rendered(tilt: Recorded) -> list[dict[str, Any]]:
    """The chart as Tilt's helm() call renders it, by the real helm."""
    ((paths,), kwargs), = tilt.of("helm")
    assert REPO_ROOT / paths == chart.CHART
    return chart.template(*(REPO_ROOT / v for v in kwargs["values"]), release=kwargs["name"],
                          namespace=kwargs["namespace"], set_values=kwargs["set"])


def builds(tilt: Recorded) -> list[tuple[str, dict[str, Any]]]:
    return [(args[0], kwargs) for name in ("docker_build", "docker_build_with_restart",
                                          "custom_build") for args, kwargs in tilt.of(name)]


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects
            if o["kind"] in ("Deployment", "StatefulSet") and not chart.is_hook(o)}


def test_the_default_mode_is_kind_and_a_wrong_mode_is_refused() -> None:
    assert evaluate(None).of("docker_build_with_restart")
    with pytest.raises(sl.StarlarkError, match="--mode must be kind or local"):
        evaluate("minikube")


def test_kind_builds_with_docker_and_live_update_and_local_with_buildah(
        tilt: Recorded, mode: str) -> None:
    if mode == "kind":
        assert len(tilt.of("docker_build_with_restart")) == 2 and not tilt.of("custom_build")
        for _, kwargs in tilt.of("docker_build_with_restart"):
            assert kwargs["live_update"] and kwargs["target"] in ("operator", "services")
    else:
        assert len(tilt.of("custom_build")) == 2 and not tilt.of("docker_build_with_restart")
        for args, kwargs in tilt.of("custom_build"):
            assert "$EXPECTED_REF" in args[1] and kwargs["skips_local_docker"] is True


def test_every_path_it_names_exists(tilt: Recorded) -> None:
    paths: list[str] = []
    for _, kwargs in builds(tilt):
        paths += [kwargs.get("dockerfile", "Dockerfile"), *kwargs.get("only", []),
                  *kwargs.get("deps", [])]
        for step in kwargs.get("live_update", []):
            if step["tilt"] == "sync":
                paths.append(step["args"][0])
            if step["tilt"] == "fall_back_on":
                paths += step["args"][0]
    ((chart_path,), kwargs), = tilt.of("helm")
    paths += [chart_path, *kwargs["values"]]
    missing = [p for p in paths if not (REPO_ROOT / p).exists()]
    assert paths and not missing


def test_its_commands_exist(tilt: Recorded) -> None:
    commands = [args[1] for args, _ in tilt.of("custom_build")]
    commands += [args[0] for args, _ in tilt.of("local")]
    for command in commands:
        executable, *words = command.split()
        assert (REPO_ROOT / executable).exists(), executable
        sub = [w for w in words if not w.startswith("-") and not w.startswith("$")][:2]
        help_ = subprocess.run([sys.executable, "-m", "vyapaar_cli", *sub, "--help"],
                               capture_output=True, text=True, check=False)
        assert help_.returncode == 0, help_.stderr
        for flag in (w for w in words if w.startswith("--")):
            assert flag in help_.stdout, f"{command}: {flag} unknown"


def test_every_image_it_builds_is_one_the_chart_runs(
        tilt: Recorded, rendered: list[dict[str, Any]]) -> None:
    used = {c["image"].rsplit(":", 1)[0]
            for o in workloads(rendered).values()
            for c in o["spec"]["template"]["spec"]["containers"]}
    built = {ref for ref, _ in builds(tilt)}
    assert built and built <= used


def test_every_resource_is_a_workload_of_the_chart_with_its_ports(
        tilt: Recorded, rendered: list[dict[str, Any]]) -> None:
    found = workloads(rendered)
    declared = {args[0] for args, _ in tilt.of("k8s_resource")}
    declared |= {args[0] for args, _ in tilt.of("local_resource")}
    for args, kwargs in tilt.of("k8s_resource"):
        name = args[0]
        assert name in found, f"{name} is not a workload of the chart"
        ports = {p["containerPort"] for c in found[name]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for forward in kwargs.get("port_forwards", []):
            assert forward["args"][1] in ports, f"{name}: no container port {forward['args'][1]}"
        for dep in kwargs.get("resource_deps", []):
            assert dep in declared | set(found), f"{name} depends on unknown {dep}"
        for obj in kwargs.get("objects", []):
            obj_name, kind = obj.split(":")
            assert any(o["metadata"]["name"] == obj_name and o["kind"].lower() == kind
                       for o in rendered), obj


def test_every_workload_of_the_product_is_a_resource_with_its_port_forwarded(
        tilt: Recorded, rendered: list[dict[str, Any]]) -> None:
    """The operator, each service (analytics too) and the gateway: one resource each."""
    product = {name: o for name, o in workloads(rendered).items()
               if o["metadata"]["labels"]["app.kubernetes.io/component"] not in INFRASTRUCTURE}
    resources = {args[0]: kwargs for args, kwargs in tilt.of("k8s_resource")}
    assert {f"{RELEASE}-{s}" for s in (*SAGA_SERVICES, "analytics", "operator", "gateway")
            } <= set(product)
    for name in product:
        assert name in resources, f"{name} has no k8s_resource"
        assert resources[name].get("port_forwards"), f"{name}: nothing forwarded"


def test_the_operator_waits_for_the_saga_services_and_the_samples_for_analytics(
        tilt: Recorded) -> None:
    """Analytics is no step of the saga: the operator starts without it; the sample orders
    wait for it, so that its queue is there to receive their events."""
    resources = {args[0]: kwargs for args, kwargs in tilt.of("k8s_resource")}
    assert set(resources[f"{RELEASE}-operator"]["resource_deps"]) == {
        f"{RELEASE}-{s}" for s in SAGA_SERVICES}
    (samples,) = [kwargs for args, kwargs in tilt.of("local_resource")
                  if args[0] == "sample-orders"]
    assert set(samples["resource_deps"]) == {f"{RELEASE}-operator", f"{RELEASE}-analytics"}


def test_live_update_targets_the_images_python(tilt: Recorded) -> None:
    """The sync destination is the venv's site-packages of the Dockerfile's Python."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-" in dockerfile
    for _, kwargs in builds(tilt):
        for step in kwargs.get("live_update", []):
            if step["tilt"] == "sync":
                assert step["args"][1].startswith("/opt/vyapaar/lib/python3.11/site-packages/")
