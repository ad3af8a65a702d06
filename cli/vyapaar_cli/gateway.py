"""The gateway's public API from the command line: requests, problems, and an order's
event stream followed across dropped connections.

Plain ``urllib`` (no dependency the runtime does not have) and synchronous: a command does
one thing at a time, and Ctrl-C is an ordinary ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from vyapaar_cli.errors import CliError

__all__ = [
    "DEFAULT_RETRY",
    "GATEWAY_TOKEN_ENV",
    "GATEWAY_URL_ENV",
    "TRANSIENT",
    "Event",
    "EventParser",
    "GatewayClient",
    "GatewayProblem",
    "GatewayUnreachable",
    "Outcome",
    "follow",
]

GATEWAY_URL_ENV: Final = "VYAPAAR_GATEWAY_URL"
GATEWAY_TOKEN_ENV: Final = "VYAPAAR_GATEWAY_TOKEN"
#: seconds to wait for an answer (a stream waits longer: the gateway sends a heartbeat
#: comment every 15 s by default, so 60 s of silence means the connection is dead)
REQUEST_TIMEOUT: Final = 30.0
STREAM_TIMEOUT: Final = 60.0
#: the reconnection delay until the stream's ``retry:`` field says otherwise
DEFAULT_RETRY: Final = 2.0
#: answers that say "later": `follow` reconnects after them, within its time budget
TRANSIENT: Final = frozenset({429, 502, 503, 504})


# -- talking to the gateway ------------------------------------------------------------------


class GatewayProblem(CliError):
    """The gateway answered with an error (an ``application/problem+json`` document)."""

    def __init__(self, status: int, title: str, detail: str = "", *, type_: str = "",
                 errors: Sequence[Mapping[str, Any]] = (), retry_after: int | None = None,
                 hint: str = "") -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.errors = [(str(e.get("field", "<body>")), str(e.get("message", ""))) for e in errors]
        self.retry_after = retry_after
        super().__init__(self._describe(hint))

    def _describe(self, hint: str) -> str:
        head = f"{self.status} {self.title}"
        if self.errors:
            count = len(self.errors)
            lines = [f"{head}: {count} field{'s' if count > 1 else ''} at fault:"]
            lines += [f"  {name}: {message}" for name, message in self.errors]
            return "\n".join(lines)
        text = f"{head}: {self.detail}" if self.detail and self.detail != self.title else head
        if self.status == 401:
            text += f" The token comes from --token or ${GATEWAY_TOKEN_ENV}."
        if self.retry_after is not None:
            text += f" (Retry-After: {self.retry_after} s)"
        return f"{text} {hint}".rstrip()


class GatewayUnreachable(CliError):
    """No answer: refused, unresolvable, timed out or cut off. ``delivered`` is False only
    when the request certainly never reached the gateway."""

    def __init__(self, message: str, *, delivered: bool) -> None:
        super().__init__(message)
        self.delivered = delivered


def _problem_from(exc: urllib.error.HTTPError) -> GatewayProblem:
    raw = b""
    with contextlib.suppress(OSError, http.client.HTTPException):
        raw = exc.read()
    retry_after = (exc.headers.get("Retry-After") or "").strip() if exc.headers else ""
    after = int(retry_after) if retry_after.isdigit() else None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and "title" in body:
        errors = body.get("errors")
        return GatewayProblem(
            int(body.get("status") or exc.code), str(body["title"]), str(body.get("detail") or ""),
            type_=str(body.get("type") or ""),
            errors=[e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else (),
            retry_after=after)
    # not the gateway's problem document: a proxy's page, or not the gateway at all
    text = " ".join(raw.decode("utf-8", "replace").split())[:200]
    return GatewayProblem(exc.code, str(exc.reason or "HTTP error"), text, retry_after=after)


class GatewayClient:
    """The gateway's ``/api/v1/orders`` as one tenant (its bearer token) sees them."""

    def __init__(self, url: str, token: str, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _open(self, method: str, path: str, *, body: Any = None,
              headers: Mapping[str, str] | None = None, timeout: float | None = None,
              accept: str = "application/json") -> http.client.HTTPResponse:
        data = None if body is None else json.dumps(body, default=str).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": accept,
            "User-Agent": "vyapaar-cli", **({"Content-Type": "application/json"} if data else {}),
            **(headers or {}),
        })
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(
                request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise _problem_from(exc) from None
        except urllib.error.URLError as exc:  # before the request was (wholly) sent
            reason = exc.reason
            never = isinstance(reason, ConnectionRefusedError | socket.gaierror)
            raise GatewayUnreachable(f"cannot reach the gateway at {self.url}: "
                                     f"{_reason(reason)}", delivered=not never) from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:  # waiting for it
            raise GatewayUnreachable(f"the gateway at {self.url} did not answer: {_reason(exc)}",
                                     delivered=True) from None
        return response

    def request(self, method: str, path: str, *, body: Any = None,
                headers: Mapping[str, str] | None = None) -> tuple[Any, http.client.HTTPMessage]:
        """The JSON of a successful answer, and its headers."""
        with self._open(method, path, body=body, headers=headers) as response:
            try:
                raw = response.read()
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise GatewayUnreachable(f"the gateway at {self.url} stopped answering: "
                                         f"{_reason(exc)}", delivered=True) from None
            try:
                return json.loads(raw), response.headers
            except ValueError:
                raise CliError(f"{self.url} answered {method} {path} with something that is not "
                               f"JSON: is it the gateway? ({raw[:80]!r})") from None

    def create(self, spec: Mapping[str, Any], key: str) -> tuple[dict[str, Any], bool]:
        """The order created (or, for a key already used, the order it created) and whether
        it is such a replay."""
        order, headers = self.request("POST", "/api/v1/orders", body=spec,
                                      headers={"Idempotency-Key": key})
        return order, headers.get("Idempotent-Replayed", "").lower() == "true"

    def get(self, name: str) -> dict[str, Any]:
        order, _ = self.request("GET", f"/api/v1/orders/{_quote(name)}")
        return dict(order)

    def page(self, *, phase: str | None, limit: int, continue_token: str | None
             ) -> tuple[list[dict[str, Any]], str | None]:
        params = {"limit": str(limit), **({"phase": phase} if phase else {}),
                  **({"continue": continue_token} if continue_token else {})}
        page, _ = self.request("GET", f"/api/v1/orders?{urllib.parse.urlencode(params)}")
        return list(page.get("items") or []), page.get("continue") or None

    def cancel(self, name: str) -> dict[str, Any]:
        order, _ = self.request("POST", f"/api/v1/orders/{_quote(name)}/cancel")
        return dict(order)

    def events(self, name: str, last_event_id: int = 0) -> http.client.HTTPResponse:
        """The open event stream of an order, after its ``last_event_id``-th transition."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id else {}
        return self._open("GET", f"/api/v1/orders/{_quote(name)}/events", headers=headers,
                          timeout=STREAM_TIMEOUT, accept="text/event-stream")


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _reason(exc: object) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# -- server-sent events ------------------------------------------------------------------------


@dataclass
class Event:
    type: str
    data: str
    id: str | None


@dataclass
class EventParser:
    """The text/event-stream format (WHATWG HTML, "server-sent events"), line by line."""

    retry: float = DEFAULT_RETRY
    _type: str = field(default="", init=False, repr=False)
    _data: list[str] = field(default_factory=list, init=False, repr=False)
    _id: str | None = field(default=None, init=False, repr=False)

    def feed(self, line: str) -> Event | None:
        """Take one line (without its end); the event it completes, if any."""
        if line == "":
            event = Event(self._type or "message", "\n".join(self._data), self._id)
            complete = bool(self._data)
            self._type, self._data = "", []
            return event if complete else None
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def events(self, lines: Iterable[bytes]) -> Iterator[Event]:
        for raw in lines:
            event = self.feed(raw.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r"))
            if event is not None:
                yield event


@dataclass(frozen=True)
class Outcome:
    """How a stream ended: ``end`` (a terminal phase) or ``deleted``."""

    event: str
    phase: str | None
    last_seq: int


def follow(client: GatewayClient, name: str, on_transition: Callable[[dict[str, Any]], None],
           *, since: int = 0, reconnect_timeout: float = 60.0,
           sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> Outcome:
    """Call ``on_transition`` with each transition after the ``since``-th, oldest first,
    until the order's stream ends; reconnect with ``Last-Event-ID`` when it drops.

    A refused first connection, 401 and 404 fail at once; a dropped stream, no answer, 429
    or 5xx are retried (after the stream's ``retry`` delay, or ``Retry-After``) until
    ``reconnect_timeout`` seconds pass without a connection.
    """
    last, parser, connected = since, EventParser(), False
    lost_at: float | None = None
    while True:
        try:
            response = client.events(name, last)
        except (GatewayUnreachable, GatewayProblem) as exc:
            if isinstance(exc, GatewayProblem) and exc.status not in TRANSIENT:
                raise
            if isinstance(exc, GatewayUnreachable) and not connected and not exc.delivered:
                raise  # nothing listens there: a wrong URL, or the gateway is down
            lost_at = clock() if lost_at is None else lost_at
            if clock() - lost_at > reconnect_timeout:
                raise CliError(f"gave up on the events of {name} after {reconnect_timeout:g} s "
                               f"without a connection ({exc}); `vyapaar order watch {name}` "
                               "resumes") from None
            wait = parser.retry
            if isinstance(exc, GatewayProblem) and exc.retry_after:
                wait = max(wait, exc.retry_after)
            sleep(wait)
            continue
        connected, lost_at = True, None
        try:
            for event in parser.events(response):
                if event.type == "transition":
                    transition = json.loads(event.data)
                    seq = int(transition.get("seq") or event.id or 0)
                    if seq <= last:
                        continue  # already shown (a server that resent it)
                    on_transition(transition)
                    last = seq
                elif event.type in ("end", "deleted"):
                    phase = json.loads(event.data).get("phase")
                    return Outcome(event.type, str(phase) if phase else None, last)
        except (TimeoutError, OSError, http.client.HTTPException, ValueError):
            pass  # cut off, silent too long, or a torn event: resume after the last one
        finally:
            response.close()
        lost_at = clock()
        sleep(parser.retry)
