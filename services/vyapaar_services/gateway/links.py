"""Read-only links to one order: what a storefront hands its customer.

The order page takes its bearer token from the URL, and a URL travels: browser history,
chat messages, support tickets. So the page gets its own kind of token, never the
tenant's: one that reads *one* order (``GET`` the order and its event stream) and
expires (``VYAPAAR_GATEWAY_LINK_TTL_SECONDS``, a week by default)::

    v1.<base64url of {"t": tenant, "o": order, "e": expiry}>.<base64url of its HMAC-SHA256>

The HMAC key is derived from the tenant's own token (its sha256, which the gateway holds
anyway), so there is no further secret to manage, and rotating a tenant's token revokes
every link made with it. Pure: the caller passes the clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Final

__all__ = ["PREFIX", "LinkClaims", "sign", "tenant_of", "verify"]

PREFIX: Final = "v1."


@dataclass(frozen=True, slots=True)
class LinkClaims:
    tenant: str
    order: str
    expires: int
    """Unix time."""


def _key(tenant_token_sha256: str) -> bytes:
    return hashlib.sha256(f"vyapaar-order-link\0{tenant_token_sha256}".encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: LinkClaims, tenant_token_sha256: str) -> str:
    payload = _b64(json.dumps({"t": claims.tenant, "o": claims.order, "e": claims.expires},
                              separators=(",", ":")).encode())
    mac = hmac.new(_key(tenant_token_sha256), payload.encode(), hashlib.sha256).digest()
    return f"{PREFIX}{payload}.{_b64(mac)}"


def tenant_of(token: str) -> str | None:
    """The tenant a link token claims (unverified), to find its key; None if malformed."""
    try:
        payload = token.removeprefix(PREFIX).split(".")[0]
        tenant = json.loads(_unb64(payload))["t"]
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    return tenant if isinstance(tenant, str) else None


def verify(token: str, tenant_token_sha256: str, now: float) -> LinkClaims | None:
    """The claims of a genuine, unexpired link token, else None."""
    if not token.startswith(PREFIX):
        return None
    payload, _, mac = token.removeprefix(PREFIX).partition(".")
    try:
        expected = hmac.new(_key(tenant_token_sha256), payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        raw = json.loads(_unb64(payload))
        claims = LinkClaims(str(raw["t"]), str(raw["o"]), int(raw["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return claims if claims.expires > now else None
