"""Build the product images and the infrastructure stand-ins without Docker or a registry.

The same Dockerfile that CI builds from the official Python image is built here with
buildah (``bud --isolation chroot --pull-never``) from a local Debian base made with
debootstrap, and written as ``oci-archive:`` files that containerd imports.

Buildah keeps its layers in a storage of its own under ``<cache>/images/storage`` rather
than the machine-wide ``/var/lib/containers``: the cache folder then holds everything the
builds reuse (one ``du`` measures it, one ``rm`` resets it, CI's kept cache keeps it warm),
and nothing mixes with a machine's own podman/buildah images.

Caching: the base image and the stand-ins are cached as archives keyed by a hash of their
recipe (a second run only checks that hash); the product images rely on buildah's layer
cache (dependencies are installed in a layer that only ``pyproject.toml`` invalidates) and
skip buildah altogether when a hash of their inputs is unchanged. (The Dockerfile's pip
cache mount serves Docker builds; buildah 1.28 with chroot isolation leaves it empty.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .config import REPO_ROOT, StackConfig, read_versions
from .processes import StackError

IMAGES_DIR = REPO_ROOT / "hack" / "images"
BASE_FINALIZE = IMAGES_DIR / "base" / "finalize.sh"
BASE_IMAGE = "localhost/vyapaar/python-base:bookworm"
#: the product Dockerfile (build context: the repository root); each product image is one
#: of its targets, named like the image
PRODUCT_DOCKERFILE = REPO_ROOT / "Dockerfile"
PRODUCT_TARGETS = ("operator", "services")
#: stand-in folder under hack/images -> the image it makes (the tags of the official images)
INFRA_IMAGES: Mapping[str, str] = {
    "postgresql": "localhost/vyapaar/postgres:15",
    "rabbitmq": "localhost/vyapaar/rabbitmq:3.10",
    "redis": "localhost/vyapaar/redis:7",
}
#: the numeric user the product images run as (the distroless "nonroot" convention)
PRODUCT_UID = 65532
#: the numeric user of the stand-ins: the official postgres/rabbitmq/redis images' uid
INFRA_UID = 999
#: the label that records which recipe made a cached image
RECIPE_LABEL = "io.vyapaar.recipe"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


# --- progress and commands ------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """One line when a long step starts and one with its elapsed time when it ends."""
    _say(f"{what} ...")
    started = time.monotonic()
    yield
    _say(f"{what}: done in {time.monotonic() - started:.1f}s")


def _run(
    argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a build command; on failure raise with the end of its output (builds are long)."""
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=quiet,
        text=True,
        env={**os.environ, **env} if env else None,
        check=False,
    )
    if result.returncode != 0:
        output = ((result.stdout or "") + (result.stderr or ""))[-4000:]
        raise StackError(f"{' '.join(str(a) for a in argv)} failed ({result.returncode}):\n"
                         f"{output}")
    return result


def images_dir(config: StackConfig) -> Path:
    """Everything the image builds keep between runs: archives, buildah storage, caches."""
    return config.cache_dir / "images"


def archives_dir(config: StackConfig) -> Path:
    return images_dir(config) / "archives"


def buildah_argv(config: StackConfig) -> list[str]:
    """`buildah` with the project's own storage (see the module docstring for why)."""
    root = images_dir(config) / "storage"
    # The run root holds locks and mount state: on tmpfs, so a reboot resets it.
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return ["buildah", "--root", str(root), "--runroot", f"/run/vyapaar-buildah-{digest}",
            "--storage-driver", "overlay"]


def buildah(config: StackConfig, *args: str | Path, quiet: bool = True) -> str:
    """Run buildah on the project's storage and return its standard output."""
    env = {"TMPDIR": str(_tmp_dir(config))}
    return _run([*buildah_argv(config), *args], env=env, quiet=quiet).stdout or ""


def _tmp_dir(config: StackConfig) -> Path:
    path = images_dir(config) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise StackError(f"{', '.join(missing)} not found: install the Debian packages "
                         "DEBIAN_NODE_PACKAGES of hack/versions.env (make provision)")
    if os.geteuid() != 0:
        raise StackError("image builds need root (debootstrap, buildah's chroot isolation)")


@contextlib.contextmanager
def _build_lock(config: StackConfig) -> Iterator[None]:
    """One build at a time per cache: two debootstraps of the same base waste minutes."""
    images_dir(config).mkdir(parents=True, exist_ok=True)
    with open(images_dir(config) / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def image_id(config: StackConfig, ref: str) -> str | None:
    """The image's ID in the project's storage, or None if it is not there."""
    result = subprocess.run([*buildah_argv(config), "inspect", "--type", "image",
                             "--format", "{{.FromImageID}}", ref],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def image_config(config: StackConfig, ref: str) -> dict[str, object]:
    """The OCI image configuration (user, env, entrypoint, labels) as a dict."""
    raw = buildah(config, "inspect", "--type", "image", ref)
    parsed: dict[str, object] = json.loads(raw)["OCIv1"]
    return parsed


def image_size(config: StackConfig, ref: str) -> int:
    """Uncompressed size in bytes: what the image's files take on a node's disk."""
    with mounted(config, ref) as root:
        return int(_run(["du", "-sxb", root]).stdout.split()[0])


def _recipe_digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _files_digest(*paths: Path, skip: Sequence[str] = ()) -> list[bytes]:
    """The names and contents of files (folders: every file below) for a recipe hash;
    paths with a part ending in one of `skip` are left out."""
    parts: list[bytes] = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(REPO_ROOT)
            if skip and any(part.endswith(tuple(skip)) for part in relative.parts):
                continue
            parts += [str(relative).encode(), file.read_bytes()]
    return parts


VERSION_LABEL = "org.opencontainers.image.version"


def _set_label(config: StackConfig, ref: str, key: str, value: str) -> None:
    """Give ``ref`` the label, if it lacks it. buildah 1.28's layer cache keys a LABEL on
    its text before ARG expansion (and ignores --label), so an image built for another
    tag from the same sources comes back from the cache with that tag's version."""
    image = image_config(config, ref).get("config", {})
    if isinstance(image, dict) and (image.get("Labels") or {}).get(key) == value:
        return
    container = buildah(config, "from", "--pull-never", ref).strip()
    try:
        buildah(config, "config", "--label", f"{key}={value}", container)
        buildah(config, "commit", "--quiet", container, ref)
    finally:
        buildah(config, "rm", container)


def _push_archive(config: StackConfig, ref: str, archive: Path) -> None:
    """Write `ref` as an oci-archive (atomically: a half-written archive never counts)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    buildah(config, "push", "--quiet", ref, f"oci-archive:{partial}:{ref}")
    partial.replace(archive)


def _load_archive(config: StackConfig, archive: Path, ref: str) -> None:
    """Put a cached archive's image back into the storage (it may have been reset)."""
    buildah(config, "pull", "--quiet", f"oci-archive:{archive}")
    buildah(config, "tag", _archive_image_id(archive), ref)


def _archive_image_id(archive: Path) -> str:
    """The image ID (config digest) of an oci-archive, read from its index and manifest."""
    with tarfile.open(archive) as tar:
        def blob(name: str) -> dict[str, Any]:
            member = tar.extractfile(name)
            if member is None:
                raise StackError(f"{archive}: {name} missing")
            loaded: dict[str, Any] = json.load(member)
            return loaded

        manifest_digest = blob("index.json")["manifests"][0]["digest"]
        manifest = blob("blobs/" + manifest_digest.replace(":", "/"))
        return str(manifest["config"]["digest"]).removeprefix("sha256:")


# --- the local base image -------------------------------------------------------------------


def debian_mirror(sources: Sequence[Path] = APT_SOURCES, suite: str = "bookworm") -> str | None:
    """The Debian mirror this machine's apt uses for `suite`, or None (debootstrap's default).

    Read at run time so that no mirror host is written into the project.
    """
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix in (".list", ".sources"))
        elif source.is_file():
            files.append(source)
    for file in files:
        text = file.read_text(errors="replace")
        if file.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith((" ", "#")):
                        key, _, value = line.partition(":")
                        fields[key.strip().lower()] = value.strip()
                if ("deb" in fields.get("types", "").split()
                        and suite in fields.get("suites", "").split()
                        and "main" in fields.get("components", "").split()
                        and fields.get("enabled", "yes") != "no"):
                    return fields.get("uris", "").split()[0] or None
        else:
            for line in text.splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 4 and words[0] == "deb" and words[2] == suite \
                        and "main" in words[3:]:
                    return words[1]
    return None


def base_recipe() -> dict[str, str]:
    """What the base image is made of; its hash names the cached archive."""
    versions = read_versions()
    return {
        "suite": versions.get("IMAGE_BASE_SUITE", "bookworm"),
        "variant": "minbase",
        "packages": versions.get("IMAGE_BASE_PACKAGES",
                                 "python3 python3-venv tini ca-certificates"),
    }


def base_archive(config: StackConfig) -> Path:
    recipe = base_recipe()
    digest = _recipe_digest(json.dumps(recipe, sort_keys=True), *_files_digest(BASE_FINALIZE))
    return archives_dir(config) / f"python-base-{recipe['suite']}-{digest[:12]}.oci.tar"


def build_base(config: StackConfig) -> Path:
    """The local Debian base (debootstrap minbase + Python 3.11, tini, CA certificates).

    Tagged ``localhost/vyapaar/python-base:bookworm``; returns its cached oci-archive.
    """
    require_tools("buildah", "skopeo", "debootstrap")
    archive = base_archive(config)
    with _build_lock(config):
        if archive.exists():
            if image_id(config, BASE_IMAGE) != _archive_image_id(archive):
                with step(f"base image: load {archive.name}"):
                    _load_archive(config, archive, BASE_IMAGE)
            return archive
        with step(f"base image: debootstrap {base_recipe()['suite']} into {archive.name}"):
            _debootstrap_base(config)
            _push_archive(config, BASE_IMAGE, archive)
        for stale in archives_dir(config).glob("python-base-*.oci.tar"):
            if stale != archive:
                stale.unlink()
        return archive


def _debootstrap_base(config: StackConfig) -> None:
    recipe = base_recipe()
    container = buildah(config, "from", "--pull-never", "scratch").strip()
    try:
        root = Path(buildah(config, "mount", container).strip())
        debs = images_dir(config) / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        mirror = debian_mirror(suite=recipe["suite"])
        argv: list[str | Path] = [
            "debootstrap", "--variant=minbase", f"--cache-dir={debs}",
            "--include=" + ",".join(recipe["packages"].split()),
            recipe["suite"], root,
        ]
        if mirror:
            argv.append(mirror)
        _run(argv)
        shutil.copy(BASE_FINALIZE, root / "finalize.sh")
        try:
            _run(["chroot", root, "/bin/sh", "/finalize.sh"])
        finally:
            (root / "finalize.sh").unlink()
        buildah(config, "config",
                "--env", "LANG=C.UTF-8",
                "--cmd", '["python3"]',
                "--label", f"{RECIPE_LABEL}={json.dumps(recipe, sort_keys=True)}",
                "--label", "org.opencontainers.image.title=vyapaar python-base",
                "--label", "org.opencontainers.image.description=Debian "
                           f"{recipe['suite']} minbase with {recipe['packages']}",
                container)
        buildah(config, "commit", "--quiet", "--rm", container, BASE_IMAGE)
    except BaseException:
        subprocess.run([*buildah_argv(config), "rm", container], capture_output=True,
                       check=False)
        raise


# --- product images and stand-ins -----------------------------------------------------------


def _bud(config: StackConfig, dockerfile: Path, ref: str, context: Path,
         build_args: Mapping[str, str], target: str | None = None) -> None:
    argv: list[str | Path] = [
        "bud", "--isolation", "chroot", "--pull-never", "--layers", "--quiet",
        "--file", dockerfile, "--tag", ref,
    ]
    if target:
        argv += ["--target", target]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if HOST_CA_BUNDLE.exists():
        # Trust what the build host trusts (TLS-inspecting proxies) while pip and apt run;
        # a RUN-time bind mount, so it is in no layer.
        argv += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    buildah(config, *argv, context)


def product_ref(name: str, tag: str) -> str:
    return f"localhost/vyapaar/{name}:{tag}"


#: what the product Dockerfile copies from the context (a superset of what .dockerignore lets in)
PRODUCT_CONTEXT = ("pyproject.toml", "README.md", ".dockerignore", "operator", "services",
                   "messaging", "cli")


def _product_inputs_digest(dockerfile: Path, base_id: str, build_args: Mapping[str, str]
                           ) -> str:
    """A hash of everything a product build reads: unchanged, the build can be skipped.

    Even a fully cached `buildah bud` takes ~10 s (it checksums the venv it copies
    between stages); hashing the sources takes milliseconds.
    """
    paths = [REPO_ROOT / p for p in PRODUCT_CONTEXT]
    parts = _files_digest(*(p for p in paths if p.exists()), dockerfile,
                          skip=("__pycache__", ".egg-info", ".mypy_cache", ".pytest_cache"))
    return _recipe_digest(base_id, json.dumps(dict(build_args), sort_keys=True), *parts)


def build_product_images(config: StackConfig, tag: str,
                         targets: Sequence[str] = PRODUCT_TARGETS) -> dict[str, Path]:
    """The operator and services images from the Dockerfile's targets on the local base.

    Returns image name -> oci-archive under ``<state>/images``.
    """
    if not tag or any(c in tag for c in "/: ") or len(tag) > 128:
        raise StackError(f"invalid image tag {tag!r}: letters, digits, '.', '-', '_' only")
    build_base(config)
    base_id = image_id(config, BASE_IMAGE) or ""
    archives: dict[str, Path] = {}
    with _build_lock(config):
        for name in targets:
            if name not in PRODUCT_TARGETS:
                raise StackError(f"no image {name!r}: choose from {', '.join(PRODUCT_TARGETS)}")
            ref = product_ref(name, tag)
            dockerfile = PRODUCT_DOCKERFILE
            archive = config.state_dir / "images" / f"{name}-{tag}.oci.tar"
            marker = archive.with_name(archive.name + ".inputs")
            build_args = {"BASE_IMAGE": BASE_IMAGE, "VERSION": tag}
            inputs = _product_inputs_digest(dockerfile, base_id, build_args)
            current = image_id(config, ref)
            if archive.exists() and marker.exists() and current \
                    and marker.read_text() == f"{inputs} {current}":
                _say(f"{ref}: unchanged, {archive.name} is up to date")
            else:
                with step(f"{ref}: build"):
                    _bud(config, dockerfile, ref, REPO_ROOT, build_args, target=name)
                    _set_label(config, ref, VERSION_LABEL, tag)
                with step(f"{ref}: write {archive}"):
                    _push_archive(config, ref, archive)
                marker.write_text(f"{inputs} {image_id(config, ref)}")
            archives[name] = archive
    return archives


def build_infra_images(config: StackConfig) -> dict[str, Path]:
    """PostgreSQL, RabbitMQ and Redis stand-ins from Debian packages on the local base.

    Returns stand-in name -> oci-archive cached under ``<cache>/images/archives``.
    """
    build_base(config)
    base_id = image_id(config, BASE_IMAGE) or ""
    archives: dict[str, Path] = {}
    with _build_lock(config):
        for name, ref in INFRA_IMAGES.items():
            folder = IMAGES_DIR / name
            digest = _recipe_digest(base_id, ref, *_files_digest(folder))[:12]
            archive = archives_dir(config) / f"{name}-{digest}.oci.tar"
            if archive.exists():
                if image_id(config, ref) != _archive_image_id(archive):
                    with step(f"{ref}: load {archive.name}"):
                        _load_archive(config, archive, ref)
            else:
                with step(f"{ref}: build"):
                    _bud(config, folder / "Dockerfile", ref, folder,
                         {"BASE_IMAGE": BASE_IMAGE})
                    _push_archive(config, ref, archive)
                for stale in archives_dir(config).glob(f"{name}-*.oci.tar"):
                    if stale != archive:
                        stale.unlink()
            archives[name] = archive
    return archives


# --- running a command inside an image ------------------------------------------------------


@contextlib.contextmanager
def mounted(config: StackConfig, ref: str) -> Iterator[Path]:
    """The root filesystem of a throw-away working container of `ref`."""
    container = buildah(config, "from", "--pull-never", ref).strip()
    try:
        yield Path(buildah(config, "mount", container).strip())
    finally:
        subprocess.run([*buildah_argv(config), "rm", container], capture_output=True,
                       check=False)


@dataclass(frozen=True)
class PodLike:
    """How a command runs in an image: like a pod with a read-only root filesystem.

    `writable` are the emptyDir-like folders (path -> owning "uid:gid"); /tmp always is.
    `private_network` gives it a network namespace of its own with only loopback (the
    default ports then clash with nothing on the host; clients join with `nsenter_argv`).
    """

    user: str
    env: Mapping[str, str] = field(default_factory=dict)
    read_only: bool = True
    writable: Mapping[str, str] = field(default_factory=dict)
    private_network: bool = False
    workdir: str = "/"


def chroot_argv(root: Path, argv: Sequence[str], pod: PodLike) -> list[str]:
    """A command that runs `argv` in `root` as `pod` says, in a private mount namespace.

    The namespace gets a bind of the root (made read-only), /proc, /dev and tmpfs for
    /tmp and the writable folders; it and its mounts vanish with the last process in it.
    """
    r = shlex.quote(str(root))
    setup = [
        f"mount --bind {r} {r}",
        f"mount -t proc proc {r}/proc",
        f"mount --rbind /dev {r}/dev",
        f"mount -t tmpfs -o mode=1777 tmpfs {r}/tmp",
    ]
    for path, owner in pod.writable.items():
        uid, _, gid = owner.partition(":")
        target = shlex.quote(str(resolve_inside(root, path)))
        setup.append(f"mkdir -p {target}")
        setup.append(f"mount -t tmpfs -o mode=0700,uid={uid},gid={gid or uid} tmpfs {target}")
    if pod.read_only:
        setup.append(f"mount -o remount,bind,ro {r}")
    if pod.private_network:
        setup.insert(0, "ip link set lo up")
    env_words = " ".join(shlex.quote(f"{k}={v}") for k, v in pod.env.items())
    command = " ".join(shlex.quote(a) for a in argv)
    script = " && ".join(setup) + (
        f" && exec chroot --userspec={shlex.quote(pod.user)} {r} /usr/bin/env -i "
        f"--chdir={shlex.quote(pod.workdir)} {env_words} {command}"
    )
    # A PID namespace too, so that the entry point (tini) is PID 1 as in a pod, and the
    # whole tree dies with it.
    namespaces = ["--mount", "--pid", "--fork", "--kill-child"]
    if pod.private_network:
        namespaces.append("--net")
    return ["unshare", *namespaces, "--propagation", "private", "sh", "-c", script]


def _first_child(pid: int) -> int:
    """The process `unshare --fork` started: the entry point, PID 1 of its namespace."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    if not children:
        raise ProcessLookupError(pid)
    return int(children[0])


def resolve_inside(root: Path, path: str) -> Path:
    """`path` as the image sees it, under `root`: its symlinks (/var/run -> /run) are
    followed inside the image, never into the host's own folders."""
    current = PurePosixPath("/")
    pending = list(PurePosixPath(path).parts[1:])
    for _ in range(256):
        if not pending:
            return root / current.relative_to("/")
        candidate = current / pending.pop(0)
        on_disk = root / candidate.relative_to("/")
        if on_disk.is_symlink():
            target = PurePosixPath(os.readlink(on_disk))
            joined = target if target.is_absolute() else current / target
            pending = list(PurePosixPath(os.path.normpath(joined)).parts[1:]) + pending
            current = PurePosixPath("/")
        else:
            current = candidate
    raise StackError(f"too many symbolic links in {path} inside {root}")


def nsenter_argv(pid: int, argv: Sequence[str]) -> list[str]:
    """`argv` (a host command) in the network namespace of a process started privately."""
    return ["nsenter", f"--net=/proc/{pid}/ns/net", *argv]


def _entry_argv(config: StackConfig, ref: str, argv: Sequence[str] | None,
                env: Mapping[str, str] | None, user: str | None) -> tuple[list[str], PodLike]:
    """The image's ENTRYPOINT + (argv or CMD), and its user and environment."""
    oci = image_config(config, ref)
    cfg = oci.get("config") or {}
    assert isinstance(cfg, dict)
    command = list(argv) if argv is not None else list(cfg.get("Cmd") or [])
    image_env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
    pod = PodLike(user=user or str(cfg.get("User") or "0:0"), env={**image_env, **(env or {})},
                  workdir=str(cfg.get("WorkingDir") or "/"))
    return [*(cfg.get("Entrypoint") or []), *command], pod


def run_in_image(config: StackConfig, ref: str, argv: Sequence[str] | None = None, *,
                 env: Mapping[str, str] | None = None, user: str | None = None,
                 entrypoint: bool = True, timeout: float = 120,
                 ) -> subprocess.CompletedProcess[str]:
    """Run the image's entry point with `argv` (or its CMD) as its user, read-only root.

    `entrypoint=False` runs `argv` alone (like `kubectl exec`).
    """
    command, pod = _entry_argv(config, ref, argv, env, user)
    if not entrypoint:
        command = list(argv or [])
    with mounted(config, ref) as root:
        return subprocess.run(chroot_argv(root, command, pod), capture_output=True,
                              text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def started_in_image(config: StackConfig, ref: str, argv: Sequence[str] | None = None, *,
                     env: Mapping[str, str] | None = None,
                     writable: Mapping[str, str] | None = None,
                     join: int | None = None, stop_signal: int = signal.SIGTERM,
                     log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The image's entry point running in the background until the block ends.

    It gets a network namespace of its own, or joins that of the process `join` (like
    containers of one pod: they reach each other on 127.0.0.1). At the end it is stopped
    with `stop_signal` to its PID 1, as a kubelet would; the Popen's return code is then
    the entry point's.
    """
    command, pod = _entry_argv(config, ref, argv, env, None)
    pod = PodLike(user=pod.user, env=pod.env, writable=writable or {},
                  private_network=join is None, workdir=pod.workdir)
    with mounted(config, ref) as root, open(log or os.devnull, "ab") as out:
        argv_ = chroot_argv(root, command, pod)
        if join is not None:
            argv_ = nsenter_argv(join, argv_)
        process = subprocess.Popen(argv_, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                os.kill(_first_child(process.pid), stop_signal)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# --- command line ---------------------------------------------------------------------------
