"""The gateway's pure parts: tenants and tokens, the CRD-derived body schema, idempotency
keys and names, settings."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from vyapaar_services.common.config import ConfigError
from vyapaar_services.common.http import Problem
from vyapaar_services.gateway import links
from vyapaar_services.gateway.config import GatewaySettings
from vyapaar_services.gateway.idempotency import fingerprint, order_name, parse_key
from vyapaar_services.gateway.openapi import PHASES, document
from vyapaar_services.gateway.schema import spec_schema, validate_spec
from vyapaar_services.gateway.tenants import Tenant, TokenRegistry, parse_tenants, token_sha256

REPO = Path(__file__).resolve().parents[3]
SPEC: dict[str, Any] = {
    "customer": {"id": "c1", "email": "c1@example.com"},
    "items": [{"sku": "SKU-A1", "quantity": 2, "unitPrice": 500}], "currency": "INR",
    "paymentToken": "tok_visa",
    "shippingAddress": {"name": "C", "line1": "1 Road", "city": "Pune", "postalCode": "411001",
                        "country": "IN"},
}


# -- tenants -----------------------------------------------------------------------------


def test_a_token_maps_to_its_tenant_by_hash_or_in_plain() -> None:
    tokens = parse_tenants({"tenants": [
        {"name": "a", "namespace": "shop-a", "token": "a-token-of-16-chars"},
        {"name": "b", "namespace": "shop-b", "tokenSha256": token_sha256("b-token-of-16-chars")},
    ]})
    assert tokens[token_sha256("a-token-of-16-chars")] == Tenant("a", "shop-a")
    assert tokens[token_sha256("b-token-of-16-chars")] == Tenant("b", "shop-b")


def test_a_tenant_may_have_a_rate_limit_of_its_own() -> None:
    tokens = parse_tenants({"tenants": [
        {"name": "a", "namespace": "shop-a", "token": "a-token-of-16-chars",
         "rateLimit": "100/second"}]})
    assert tokens[token_sha256("a-token-of-16-chars")].rate_limit == "100/second"


@pytest.mark.parametrize(("document", "message"), [
    ({}, "'tenants' list"),
    ({"tenants": [{"name": "a", "namespace": "Shop_A", "token": "x" * 16}]}, "namespace"),
    ({"tenants": [{"name": "a", "namespace": "a", "token": "short"}]}, "16 characters"),
    ({"tenants": [{"name": "a", "namespace": "a"}]}, "exactly one of"),
    ({"tenants": [{"name": "a", "namespace": "a", "tokenSha256": "zz"}]}, "64 hex"),
    ({"tenants": [{"name": "a", "namespace": "a", "token": "x" * 16},
                  {"name": "b", "namespace": "b", "token": "x" * 16}]}, "repeats the token"),
    ({"tenants": [{"name": "a", "namespace": "a", "token": "x" * 16, "rateLimit": "lots"}]},
     "rateLimit"),
])
def test_a_bad_tokens_file_is_refused_with_what_is_wrong(document: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_tenants(document)


def test_a_request_without_a_valid_bearer_token_is_unauthorized(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tenants": [
        {"name": "a", "namespace": "shop-a", "token": "a-token-of-16-chars"}]}))
    registry = TokenRegistry(path)
    assert registry.authenticate("Bearer a-token-of-16-chars") == Tenant("a", "shop-a")
    for header in (None, "", "Basic abc", "Bearer ", "Bearer wrong-token-wrong-token"):
        with pytest.raises(Problem) as refused:
            registry.authenticate(header)
        assert refused.value.status == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")


# -- the body schema ---------------------------------------------------------------------


def test_the_body_schema_is_the_crds_spec_closed_to_unknown_fields() -> None:
    crd = yaml.safe_load((REPO / "crds" / "orders.vyapaar.dev.yaml").read_text())
    source = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    schema = spec_schema()
    assert schema["required"] == source["required"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["items"]["items"]["properties"]["sku"] == \
        source["properties"]["items"]["items"]["properties"]["sku"]
    packaged = REPO / "services" / "vyapaar_services" / "gateway" / "crds"
    assert (packaged / "orders.vyapaar.dev.yaml").read_bytes() == \
        (REPO / "crds" / "orders.vyapaar.dev.yaml").read_bytes()


def test_a_valid_order_spec_passes() -> None:
    assert validate_spec(copy.deepcopy(SPEC)) == SPEC


@pytest.mark.parametrize(("change", "field"), [
    (lambda s: s["items"][0].update(quantity=0), "items.0.quantity"),
    (lambda s: s.pop("currency"), "currency"),
    (lambda s: s.update(currency="XYZ"), "currency"),
    (lambda s: s["shippingAddress"].update(lin2="typo"), "shippingAddress.lin2"),
    (lambda s: s["customer"].update(email="nope"), "customer.email"),
    (lambda s: s.update(items=[]), "items"),
])
def test_an_invalid_spec_gets_a_422_naming_the_field(change: Any, field: str) -> None:
    body = copy.deepcopy(SPEC)
    change(body)
    with pytest.raises(Problem) as refused:
        validate_spec(body)
    assert refused.value.status == 422
    assert field in [e["field"] for e in refused.value.extensions["errors"]]


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(Problem) as refused:
        validate_spec(["not", "an", "order"])
    assert refused.value.extensions["errors"][0]["field"] == "<body>"


# -- idempotency ---------------------------------------------------------------------------


def test_the_fingerprint_ignores_key_order_and_spacing() -> None:
    reordered = dict(reversed(list(copy.deepcopy(SPEC).items())))
    assert fingerprint(SPEC) == fingerprint(reordered)
    assert fingerprint(SPEC) != fingerprint({**SPEC, "currency": "USD"})


def test_a_key_always_maps_to_the_same_valid_order_name_per_namespace() -> None:
    name = order_name("shop-a", "key-1")
    assert name == order_name("shop-a", "key-1")
    assert name != order_name("shop-b", "key-1") != order_name("shop-a", "key-2")
    assert re.fullmatch(r"order-[a-z2-7]{16}", name)


@pytest.mark.parametrize("header", ["", "has space", "x" * 256, "é"])
def test_an_unusable_idempotency_key_is_a_400(header: str) -> None:
    with pytest.raises(Problem) as refused:
        parse_key(header)
    assert refused.value.status == 400


def test_no_idempotency_key_is_fine() -> None:
    assert parse_key(None) is None
    assert parse_key("3f2b9c1e-uuid-like") == "3f2b9c1e-uuid-like"


# -- settings and the document ----------------------------------------------------------


def test_settings_need_redis_and_a_tokens_file_and_check_the_rate() -> None:
    with pytest.raises(ConfigError, match="VYAPAAR_REDIS_URL, VYAPAAR_GATEWAY_TOKENS_FILE"):
        GatewaySettings.from_env({})
    env = {"VYAPAAR_REDIS_URL": "redis://r:6379/0", "VYAPAAR_GATEWAY_TOKENS_FILE": "/t.yaml"}
    assert GatewaySettings.from_env(env).rate_limit == "20/second"
    with pytest.raises(ConfigError, match="RATE_LIMIT"):
        GatewaySettings.from_env({**env, "VYAPAAR_GATEWAY_RATE_LIMIT": "lots"})


def test_the_openapi_document_takes_the_orders_schemas_from_the_crd() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.0")
    assert doc["components"]["schemas"]["OrderSpec"] == spec_schema()
    assert "Completed" in PHASES and "CompensationFailed" in PHASES
    for path in doc["paths"].values():
        for operation in path.values():
            assert "401" in operation["responses"] and "429" in operation["responses"]


# -- read-only links ---------------------------------------------------------------------


def _registry(tmp_path: Path, token: str = "a-token-of-16-chars") -> TokenRegistry:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tenants": [
        {"name": "a", "namespace": "shop-a", "token": token}]}))
    return TokenRegistry(path)


def test_a_link_token_reads_as_its_tenant_restricted_to_its_order(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    tenant = registry.authenticate("Bearer a-token-of-16-chars")
    link = registry.link_token(tenant, "order-1", ttl_seconds=600)
    assert registry.authenticate(f"Bearer {link}") == Tenant("a", "shop-a", only_order="order-1")


def test_a_tampered_expired_or_revoked_link_is_not_a_token(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    tenant = registry.authenticate("Bearer a-token-of-16-chars")
    digest = token_sha256("a-token-of-16-chars")
    link = registry.link_token(tenant, "order-1", ttl_seconds=600)
    payload, mac = link.removeprefix(links.PREFIX).split(".")
    other = links.sign(links.LinkClaims("a", "order-2", 2**40), "0" * 64)  # wrong key
    expired = links.sign(links.LinkClaims("a", "order-1", 1), digest)
    for token in (f"{links.PREFIX}{payload}.{mac[:-2]}xx", other, expired, "v1.garbage"):
        with pytest.raises(Problem) as refused:
            registry.authenticate(f"Bearer {token}")
        assert refused.value.status == 401
    rotated = _registry(tmp_path, token="b-new-token-of-16-chars")
    with pytest.raises(Problem):
        rotated.authenticate(f"Bearer {link}")  # a new tenant token revokes its links
