"""Single-layer OCI image archives written by hand, byte for byte reproducible.

The real node needs two tiny images that hold one static binary each: the pause
image (containerd's sandbox image) and a busybox image for tests. Writing the OCI
layout directly (a layer tar, a config, a manifest, an index) takes a few dozen
lines, needs no image builder and no storage outside the archive, and gives the
same digest on every machine; buildah would add its own storage under
/var/lib/containers for a result that holds one file.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class ImageSpec:
    """What goes into the image: files (path in image -> file on the host), symlinks,
    empty directories (path -> mode), and the process to run."""

    ref: str
    files: Mapping[str, Path]
    entrypoint: Sequence[str]
    cmd: Sequence[str] = ()
    symlinks: Mapping[str, str] = field(default_factory=dict)
    directories: Mapping[str, int] = field(default_factory=dict)
    user: str = "65535:65535"
    env: Sequence[str] = ("PATH=/bin",)


def _blob(data: bytes) -> tuple[str, int]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | None = None) -> None:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _layer(spec: ImageSpec) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parents = {str(Path(p).parent) for p in [*spec.files, *spec.symlinks]} - {"."}
        dirs = {**{d: 0o755 for d in parents}, **spec.directories}
        for name in sorted(dirs):
            info = tarfile.TarInfo(name.strip("/"))
            info.type, info.mode = tarfile.DIRTYPE, dirs[name]
            _add(tar, info)
        for name in sorted(spec.files):
            data = spec.files[name].read_bytes()
            info = tarfile.TarInfo(name.strip("/"))
            info.size, info.mode = len(data), 0o755
            _add(tar, info, data)
        for name in sorted(spec.symlinks):
            info = tarfile.TarInfo(name.strip("/"))
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, spec.symlinks[name], 0o777
            _add(tar, info)
    return buf.getvalue()


def write_archive(spec: ImageSpec, dest: Path) -> str:
    """Write `spec` as an OCI layout tar at `dest` (for `ctr images import`); return the
    manifest digest."""
    layer = _layer(spec)
    layer_digest, layer_size = _blob(layer)
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": list(spec.entrypoint),
            "Cmd": list(spec.cmd) or None,
            "Env": list(spec.env),
            "User": spec.user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest, config_size = _blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest, manifest_size = _blob(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": spec.ref,
                    "org.opencontainers.image.ref.name": spec.ref.rpartition(":")[2],
                },
            }
        ],
    }
    entries = [
        ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
        ("index.json", json.dumps(index, sort_keys=True).encode()),
        *[
            (f"blobs/sha256/{digest.removeprefix('sha256:')}", data)
            for digest, data in (
                (layer_digest, layer),
                (config_digest, config_bytes),
                (manifest_digest, manifest_bytes),
            )
        ],
    ]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            _add(tar, info)
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            _add(tar, info, data)
    tmp.replace(dest)
    return manifest_digest
