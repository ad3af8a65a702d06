"""The Order CRD refuses bad input with a message that names the field, and serves kubectl well."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "orders.vyapaar.dev.yaml"


def valid_order(name: str = "ok") -> dict[str, Any]:
    return {
        "apiVersion": "vyapaar.dev/v1alpha1",
        "kind": "Order",
        "metadata": {"name": name},
        "spec": {
            "customer": {"id": "cust-1", "email": "asha@example.com", "name": "Asha"},
            "items": [{"sku": "SKU-LAPTOP", "quantity": 1, "unitPrice": 150000}],
            "currency": "INR",
            "paymentToken": "tok_visa",
            "shippingAddress": {"name": "Asha", "line1": "1 MG Road", "city": "Pune",
                                "postalCode": "411001", "country": "IN"},
        },
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A valid order with one field (dotted path; `-` deletes) changed."""
    order = valid_order()
    *parents, leaf = path.split(".")
    node: Any = order
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value == "-":
        del node[leaf]
    elif leaf.isdigit():
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return order


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "no items": (with_change("spec.items", []), "spec.items"),
    "items missing": (with_change("spec.items", "-"), "spec.items"),
    "zero quantity": (with_change("spec.items.0.quantity", 0), "spec.items[0].quantity"),
    "negative quantity": (with_change("spec.items.0.quantity", -3), "spec.items[0].quantity"),
    "huge quantity": (with_change("spec.items.0.quantity", 10**6), "spec.items[0].quantity"),
    "negative price": (with_change("spec.items.0.unitPrice", -1), "spec.items[0].unitPrice"),
    "unknown currency": (with_change("spec.currency", "XYZ"), "spec.currency"),
    "oversize token": (with_change("spec.paymentToken", "t" * 500), "spec.paymentToken"),
    "oversize customer name": (with_change("spec.customer.name", "n" * 1000), "spec.customer.name"),
    "bad sku": (with_change("spec.items.0.sku", "not a sku!"), "spec.items[0].sku"),
    "bad country": (with_change("spec.shippingAddress.country", "India"),
                    "spec.shippingAddress.country"),
    "missing address": (with_change("spec.shippingAddress", "-"), "spec.shippingAddress"),
    "duplicate skus": (with_change("spec.items", [
        {"sku": "SKU-A", "quantity": 1, "unitPrice": 1},
        {"sku": "SKU-A", "quantity": 2, "unitPrice": 1}]), "spec.items"),
    "quantity as string": (with_change("spec.items.0.quantity", "two"), "spec.items[0].quantity"),
    "paused as string": (with_change("spec.paused", "yes"), "spec.paused"),
}


def test_the_crd_file_declares_what_kubectl_needs() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    names = crd["spec"]["names"]
    assert crd["spec"]["group"] == "vyapaar.dev"
    assert names["kind"] == "Order"
    # cert-manager's orders.acme.cert-manager.io is also kind Order: no ambiguous short name.
    assert "order" not in names.get("shortNames", [])
    assert "vyapaar" in names.get("categories", [])
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Total", "Reason", "Age"} <= columns


@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_order_is_refused_with_a_message_naming_the_field(
    case: str, crds: Path, namespace: str, kubectl: Any
) -> None:
    manifest, field = INVALID[case]
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0, f"{case}: accepted"
    assert field in result.stderr, f"{case}: {result.stderr}"
    listed = kubectl("get", "orders.vyapaar.dev", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""  # nothing was created


def test_a_valid_order_is_accepted(crds: Path, namespace: str, kubectl: Any) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(valid_order()))
    got = json.loads(kubectl("get", "orders.vyapaar.dev", "ok", "-n", namespace,
                             "-o", "json").stdout)
    assert got["spec"]["cancel"] is False  # defaulted


def test_the_spec_is_immutable_except_cancel_and_paused(crds: Path, namespace: str,
                                                       kubectl: Any) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(valid_order("fixed")))
    edited = kubectl("patch", "orders.vyapaar.dev", "fixed", "-n", namespace, "--type=merge",
                     "-p", '{"spec":{"currency":"USD"}}', check=False)
    assert edited.returncode != 0
    assert "immutable" in edited.stderr.lower()
    assert "only spec.cancel and spec.paused may change" in edited.stderr
    for paused in ("true", "false", "true"):  # an operator's brake: on and off at will
        kubectl("patch", "orders.vyapaar.dev", "fixed", "-n", namespace, "--type=merge",
                "-p", f'{{"spec":{{"paused":{paused}}}}}')
    kubectl("patch", "orders.vyapaar.dev", "fixed", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"cancel":true}}')
    uncancel = kubectl("patch", "orders.vyapaar.dev", "fixed", "-n", namespace, "--type=merge",
                       "-p", '{"spec":{"cancel":false}}', check=False)
    assert uncancel.returncode != 0
    assert "cancel" in uncancel.stderr


def test_kubectl_get_shows_the_printer_columns(crds: Path, namespace: str, kubectl: Any) -> None:
    order = copy.deepcopy(valid_order("shown"))
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(order))
    header = kubectl("get", "orders.vyapaar.dev", "-n", namespace).stdout.splitlines()[0]
    for column in ("NAME", "PHASE", "TOTAL", "REASON", "PAUSED", "AGE"):
        assert column in header


def test_the_status_of_a_version_2_saga_is_stored_as_written(crds: Path, namespace: str,
                                                             kubectl: Any) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(valid_order("screened")))
    status = {"phase": "CheckingFraud", "sagaVersion": 2,
              "steps": {"reserve": {"state": "Succeeded", "attempts": 1},
                        "fraud-check": {"state": "InFlight", "attempts": 1,
                                        "startedAt": "2026-12-02T10:00:00Z"}}}
    written = kubectl("patch", "orders.vyapaar.dev", "screened", "-n", namespace,
                      "--subresource=status", "--type=merge", "-o", "json",
                      "-p", json.dumps({"status": status}))
    stored = json.loads(written.stdout)["status"]
    assert stored["sagaVersion"] == 2 and stored["phase"] == "CheckingFraud"
    assert stored["steps"]["fraud-check"] == status["steps"]["fraud-check"]  # not pruned
    refused = kubectl("patch", "orders.vyapaar.dev", "screened", "-n", namespace,
                      "--subresource=status", "--type=merge",
                      "-p", '{"status":{"sagaVersion":0}}', check=False)
    assert refused.returncode != 0 and "status.sagaVersion" in refused.stderr
    wide = kubectl("get", "orders.vyapaar.dev", "-n", namespace, "-o", "wide").stdout
    assert "VERSION" in wide.splitlines()[0]


def test_kubectl_explain_describes_the_items(crds: Path, kubectl: Any) -> None:
    explained = kubectl("explain", "orders.spec.items", "--api-version=vyapaar.dev/v1alpha1").stdout
    assert "DESCRIPTION" in explained
    assert "quantity" in explained and "unitPrice" in explained
