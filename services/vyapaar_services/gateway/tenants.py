"""Who is calling: bearer tokens, each mapped to one tenant and its namespace.

The tokens live in a YAML file, in a pod a mounted Secret (``tokens.yaml``)::

    tenants:
      - name: storefront-a          # shown in logs and metrics
        namespace: shop-a           # the only namespace this tenant's token reaches
        tokenSha256: 9f86d081...    # sha256 of the token (keeps the token out of the Secret)
      - name: storefront-b
        namespace: shop-b
        token: s3cret               # or the token itself
        rateLimit: 100/second       # optional: instead of VYAPAAR_GATEWAY_RATE_LIMIT

A tenant sees only its namespace: another tenant's order is simply not found (404), so
a token cannot even learn which names exist elsewhere. A tenant's read-only link to one
order (:mod:`.links`) authenticates as that tenant, restricted to that order.

The file is re-read when it changes (kubelet updates mounted Secrets in place), so adding
a tenant needs no restart; a file that no longer parses keeps the previous tenants and
logs why.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from limits import parse_many

from vyapaar_services.common.config import ConfigError
from vyapaar_services.common.http import Problem
from vyapaar_services.gateway import links

__all__ = ["Tenant", "TokenRegistry", "parse_tenants", "token_sha256"]

log = logging.getLogger(__name__)

_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
RELOAD_INTERVAL: Final = 2.0


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    namespace: str
    only_order: str | None = None
    """Set for a read-only link's token (:mod:`.links`): the one order it may read."""
    rate_limit: str | None = None
    """Its own rate limit (``limits`` notation), else the gateway's."""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_tenants(document: Any) -> dict[str, Tenant]:
    """``{sha256 of a token: tenant}`` from the parsed YAML, or :class:`ConfigError`."""
    if not isinstance(document, Mapping) or not isinstance(document.get("tenants"), list):
        raise ConfigError("the tokens file must be a mapping with a 'tenants' list")
    tokens: dict[str, Tenant] = {}
    for index, entry in enumerate(document["tenants"]):
        where = f"tenants[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        name, namespace = entry.get("name"), entry.get("namespace")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}.name must be 1-63 letters, digits, '.', '_' or '-'")
        if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace):
            raise ConfigError(f"{where}.namespace must be a Kubernetes namespace name")
        token, digest = entry.get("token"), entry.get("tokenSha256")
        if (token is None) == (digest is None):
            raise ConfigError(f"{where} needs exactly one of 'token' and 'tokenSha256'")
        if token is not None:
            if not isinstance(token, str) or len(token) < 16:
                raise ConfigError(f"{where}.token must be a string of at least 16 characters")
            digest = token_sha256(token)
        elif not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            raise ConfigError(f"{where}.tokenSha256 must be 64 hex digits")
        rate = entry.get("rateLimit")
        if rate is not None:
            try:
                parse_many(str(rate))
            except ValueError:
                raise ConfigError(f"{where}.rateLimit must be like '20/second', got {rate!r}"
                                  ) from None
        digest = str(digest).lower()
        if digest in tokens:
            raise ConfigError(f"{where} repeats the token of tenant {tokens[digest].name!r}")
        tokens[digest] = Tenant(name, namespace, rate_limit=None if rate is None else str(rate))
    return tokens


class TokenRegistry:
    """The tenants of the tokens file, re-read when its modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens: dict[str, Tenant] = {}
        self._digests: dict[str, str] = {}  # tenant name -> sha256 of its token
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.load()

    def load(self) -> None:
        """Read the file now (raises :class:`ConfigError` when it is unusable)."""
        try:
            stat = self.path.stat()
            document = yaml.safe_load(self.path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the tokens file {self.path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"the tokens file {self.path} is not YAML: {exc}") from None
        self._tokens = parse_tenants(document)
        self._digests = {tenant.name: digest for digest, tenant in self._tokens.items()}
        self._stamp = (stat.st_mtime_ns, stat.st_ino)
        self._checked = time.monotonic()

    @property
    def tenants(self) -> list[Tenant]:
        return sorted(set(self._tokens.values()), key=lambda t: t.name)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_INTERVAL:
            return
        self._checked = now
        try:
            stat = self.path.stat()
        except OSError:
            return
        if (stat.st_mtime_ns, stat.st_ino) == self._stamp:
            return
        try:
            self.load()
            log.info("tokens file reloaded: %d tenants", len(self.tenants))
        except ConfigError as exc:
            log.error("tokens file changed but is unusable, keeping the previous tenants: %s",
                      exc)
            self._stamp = (stat.st_mtime_ns, stat.st_ino)

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant of an ``Authorization: Bearer <token>`` header, or a 401 problem."""
        self._refresh()
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401, "Unauthorized", "Send 'Authorization: Bearer <token>' with a gateway token.",
                type_="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="vyapaar"'},
            )  # fmt: skip
        token = token.strip()
        tenant = self._tokens.get(token_sha256(token)) or self._link_tenant(token)
        if tenant is None:
            raise Problem(
                401, "Unauthorized", "The bearer token is not valid.", type_="unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="vyapaar", error="invalid_token"'},
            )  # fmt: skip
        return tenant

    def _link_tenant(self, token: str) -> Tenant | None:
        if not token.startswith(links.PREFIX):
            return None
        digest = self._digests.get(links.tenant_of(token) or "")
        claims = None if digest is None else links.verify(token, digest, time.time())
        if digest is None or claims is None:
            return None
        tenant = self._tokens[digest]
        return Tenant(tenant.name, tenant.namespace, only_order=claims.order,
                      rate_limit=tenant.rate_limit)

    def link_token(self, tenant: Tenant, order: str, ttl_seconds: int) -> str:
        """A read-only token for ``order`` of ``tenant``, valid ``ttl_seconds``."""
        claims = links.LinkClaims(tenant.name, order, int(time.time()) + ttl_seconds)
        return links.sign(claims, self._digests[tenant.name])
