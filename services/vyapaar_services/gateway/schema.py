"""The Order's JSON schemas, read from the CRD (the one source of truth).

``crds/orders.vyapaar.dev.yaml`` in this package is a byte copy of the repository's CRD,
kept identical by ``python -m vyapaar_stack.chart sync`` and checked by the test suite.
The request body of ``POST /api/v1/orders`` is the Order's ``spec``; the gateway checks it
against the CRD's spec schema first, so a bad body gets a problem naming every field at
fault before anything reaches the apiserver, which then applies the CRD's CEL rules too.

One difference, on purpose: the apiserver silently *prunes* unknown fields, while the
gateway refuses them (``additionalProperties: false``), since a misspelt ``line2`` that
vanished would be worse than a 422.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Final

import yaml
from jsonschema import Draft4Validator

from vyapaar_services.common.http import Problem

__all__ = ["MAX_ERRORS", "crd", "spec_schema", "status_schema", "validate_spec"]

CRD_FILE: Final = "orders.vyapaar.dev.yaml"
MAX_ERRORS: Final = 20


@cache
def crd() -> dict[str, Any]:
    text = resources.files("vyapaar_services.gateway").joinpath("crds", CRD_FILE).read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def _served_schema() -> dict[str, Any]:
    version = next(v for v in crd()["spec"]["versions"] if v.get("storage"))
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _closed(schema: Any) -> Any:
    """A copy where every object with declared properties refuses unknown ones."""
    if isinstance(schema, Mapping):
        out = {k: _closed(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out:
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@cache
def spec_schema() -> dict[str, Any]:
    """The request body: the CRD's ``spec``, closed to unknown fields."""
    return dict(_closed(copy.deepcopy(_served_schema()["properties"]["spec"])))


@cache
def status_schema() -> dict[str, Any]:
    """The CRD's ``status`` as written by the operator (open, as the CRD keeps it)."""
    return copy.deepcopy(dict(_served_schema()["properties"]["status"]))


@cache
def _validator() -> Draft4Validator:
    return Draft4Validator(spec_schema())


def _field(error: Any) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        path.append(missing)
    elif error.validator == "additionalProperties":
        extra = error.message.split("'")[1] if "'" in error.message else ""
        path.append(extra)
    return ".".join(p for p in path if p) or "<body>"


def validate_spec(body: Any) -> dict[str, Any]:
    """``body`` if it is a valid Order spec, else a 422 problem listing the fields at fault."""
    errors = sorted(_validator().iter_errors(body), key=lambda e: [str(p) for p in e.path])
    if not errors:
        return dict(body)
    listed = [{"field": _field(e), "message": e.message} for e in errors[:MAX_ERRORS]]
    raise Problem(
        422, "Invalid order", "; ".join(f"{e['field']}: {e['message']}" for e in listed),
        type_="validation-error", errors=listed,
    )  # fmt: skip
