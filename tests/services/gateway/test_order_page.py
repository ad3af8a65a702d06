"""The order page (``/orders/NAME#token=TOKEN``) in Debian's headless Chromium: it shows an
order, follows its transitions live from the event stream, resumes a dropped stream
without a gap or a repeat, and explains a link that cannot work.

The browser is Debian's ``chromium`` with its ``chromedriver`` (hack/provision.sh installs
both); Selenium is given both paths, so Selenium Manager never looks for a driver online.
Selenium's calls block, so the async specs run them in a thread.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any, Final

import aiohttp
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait
from vyapaar_stack.testing import GatewayTenant, System

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
FORWARD: Final = ["Pending", "Reserving", "Paying", "Shipping", "Completing", "Completed"]
#: how long the payment service takes per charge while the page watches (under the
#: operator's 3 s step timeout of the test settings, so the charge is not retried)
SLOW_PAYMENT_MS: Final = 2500

#: Runs in every page before its own script: records each phase the page shows and each
#: state of its connection indicator, as they change, and any script error or
#: Content-Security-Policy refusal.
RECORDER: Final = """
window.__seen = {phase: [], connection: []};
window.__problems = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__problems.push("CSP refused " + e.blockedURI + " (" + e.violatedDirective + ")");
});
window.addEventListener("error", function (e) { window.__problems.push(String(e.message)); });
window.addEventListener("unhandledrejection", function (e) {
  window.__problems.push("unhandled rejection: " + String(e.reason));
});
document.addEventListener("DOMContentLoaded", function () {
  var phase = document.getElementById("phase");
  var connection = document.getElementById("connection");
  function note(key, value) {
    var list = window.__seen[key];
    if (value && list[list.length - 1] !== value) list.push(value);
  }
  function notePhase() { note("phase", phase.textContent); }
  function noteConnection() { note("connection", connection.getAttribute("data-state")); }
  new MutationObserver(notePhase).observe(phase, {childList: true, characterData: true,
                                                  subtree: true});
  new MutationObserver(noteConnection).observe(connection, {attributes: true,
                                                            attributeFilter: ["data-state"]});
  notePhase();
  noteConnection();
});
"""

#: Cuts the page's first event stream right after its first transition event, as a
#: dropped connection would, and records the Last-Event-ID of every stream request.
STREAM_CUTTER: Final = """
(function () {
  var original = window.fetch.bind(window);
  window.__streams = [];
  window.__beforeCut = "";
  window.fetch = async function (input, init) {
    var url = typeof input === "string" ? input : input.url;
    if (!/\\/events$/.test(url)) return original(input, init);
    var headers = new Headers((init && init.headers) || {});
    window.__streams.push(headers.get("Last-Event-ID"));
    var response = await original(input, init);
    if (window.__streams.length !== 1 || !response.ok) return response;
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var cut = false;
    var body = new ReadableStream({
      async pull(controller) {
        if (cut) {
          controller.error(new TypeError("network error (the test cut the stream)"));
          return;
        }
        var part = await reader.read();
        if (part.done) { controller.close(); return; }
        var text = window.__beforeCut + decoder.decode(part.value, {stream: true});
        var at = text.indexOf("event: transition");
        var end = at < 0 ? -1 : text.indexOf("\\n\\n", at);
        if (end < 0) {
          window.__beforeCut = text;
          controller.enqueue(part.value);
          return;
        }
        var kept = text.slice(0, end + 2);  // the events are ASCII: characters are bytes
        controller.enqueue(new TextEncoder().encode(kept.slice(window.__beforeCut.length)));
        window.__beforeCut = kept;
        cut = true;
        reader.cancel();
      }
    });
    return new Response(body, {status: response.status, statusText: response.statusText,
                               headers: response.headers});
  };
})();
"""


def order_body(sku: str) -> dict[str, Any]:
    return {
        "customer": {"id": "c1", "email": "c1@example.com", "name": "C One"},
        "items": [{"sku": sku, "quantity": 1, "unitPrice": 1500}],
        "currency": "INR",
        "paymentToken": "tok_visa",
        "shippingAddress": {"name": "C One", "line1": "1 MG Road", "city": "Pune",
                            "postalCode": "411001", "country": "IN"},
    }


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Debian's Chromium, headless, with the phase and connection recorder installed."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1024,900", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(10)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        yield driver
    finally:
        driver.quit()


class OrderPage:
    """The order page in ``driver``; every method blocks (call it through ``run``)."""

    def __init__(self, driver: webdriver.Chrome, gateway_url: str) -> None:
        self.driver = driver
        self.gateway_url = gateway_url

    def open(self, name: str, token: str | None) -> None:
        fragment = "" if token is None else f"#token={token}"
        self.driver.get(f"{self.gateway_url}/orders/{name}{fragment}")

    def js(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def text(self, element_id: str) -> str:
        return str(self.js(f"return document.getElementById({element_id!r}).textContent")
                   ).strip()

    def visible(self, element_id: str) -> bool:
        return bool(self.js(f"var e = document.getElementById({element_id!r});"
                            "return !!e && e.offsetParent !== null"))

    def phase(self) -> str:
        return self.text("phase")

    def connection(self) -> str:
        return str(self.js("return document.getElementById('connection').dataset.state"))

    def timeline(self) -> list[tuple[int, str]]:
        rows = self.js("return Array.from(document.querySelectorAll('#timeline li'))"
                       ".map(function (li) { return [li.dataset.seq, li.dataset.phase]; })")
        return [(int(seq), str(phase)) for seq, phase in rows]

    def steps(self) -> dict[str, str]:
        rows = self.js("return Array.from(document.querySelectorAll('#steps li'))"
                       ".map(function (li) { return [li.dataset.step, li.dataset.state]; })")
        return {str(step): str(state) for step, state in rows}

    def seen(self) -> dict[str, list[str]]:
        seen: dict[str, list[str]] = self.js("return window.__seen")
        return seen

    def wait_until(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda _driver: condition(), message=f"{what}; the page shows {self.state()}")

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.js("""
            var text = function (id) { return document.getElementById(id).textContent.trim(); };
            return {phase: text('phase'), reason: text('reason'), error: text('error'),
                    connection: document.getElementById('connection').dataset.state,
                    timeline: Array.from(document.querySelectorAll('#timeline li'))
                      .map(function (li) { return li.dataset.seq + ':' + li.dataset.phase; })};
        """)
        return state

    def problems(self) -> list[str]:
        """Script errors and Content-Security-Policy refusals in the page."""
        return [str(problem) for problem in self.js("return window.__problems")]


async def run(call: Callable[..., Any], *args: Any) -> Any:
    """A blocking Selenium call, off the event loop."""
    return await asyncio.to_thread(call, *args)


# -- orders through the gateway ------------------------------------------------------------------


async def place_order(http: aiohttp.ClientSession, tenant: GatewayTenant, sku: str) -> str:
    async with http.post(f"{tenant.url}/api/v1/orders", json=order_body(sku),
                         headers=tenant.headers) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["name"])


async def wait_for_phase(http: aiohttp.ClientSession, tenant: GatewayTenant, name: str,
                         phase: str, within: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + within
    seen = None
    while asyncio.get_running_loop().time() < deadline:
        async with http.get(f"{tenant.url}/api/v1/orders/{name}",
                            headers=tenant.headers) as response:
            assert response.status == 200, await response.text()
            seen = ((await response.json()).get("status") or {}).get("phase")
        if seen == phase:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {name} never reached {phase} (last seen: {seen})")


async def set_payment_latency(http: aiohttp.ClientSession, running_system: System,
                              latency_ms: int) -> None:
    async with http.put(f"{running_system.url('payment')}/admin/faults",
                        json={"errorRate": 0, "latencyMs": latency_ms}) as response:
        assert response.status == 200, await response.text()


def complete_event_ids(sse_text: str) -> list[int]:
    """The ids of the events ``sse_text`` holds whole (ended by a blank line)."""
    blocks = re.split(r"\r\n\r\n|\n\n|\r\r", sse_text)[:-1]  # the last one may be cut
    ids = []
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("id:"):
                ids.append(int(line.removeprefix("id:").strip()))
    return ids


def assert_went_forward_only(phases: list[str]) -> None:
    """Each phase shown is later in the saga than the one before: nothing flickered back."""
    ranks = [FORWARD.index(phase) for phase in phases]
    assert ranks == sorted(set(ranks)), f"the phase went back or repeated: {phases}"


# -- the live page --------------------------------------------------------------------------------


async def test_the_page_shows_an_orders_phase_change_live_without_a_reload(
    running_system: System, gateway_tenant: GatewayTenant, http: aiohttp.ClientSession,
    seed_stock: Any, unique_sku: Callable[[str], str], browser: webdriver.Chrome,
) -> None:
    sku = unique_sku("SKU-PAGE")
    await seed_stock({sku: 5})
    page = OrderPage(browser, gateway_tenant.url)
    await set_payment_latency(http, running_system, SLOW_PAYMENT_MS)
    try:
        name = await place_order(http, gateway_tenant, sku)
        await wait_for_phase(http, gateway_tenant, name, "Paying")
        # as a customer gets it: the order's own link, with a read-only token for it alone
        async with http.get(f"{gateway_tenant.url}/api/v1/orders/{name}",
                            headers=gateway_tenant.headers) as response:
            link = (await response.json())["links"]["page"]
        assert link.startswith(f"/orders/{name}#token=v1.")
        await run(page.open, name, link.partition("#token=")[2])
        await run(page.wait_until, lambda: page.phase() == "Paying", 5,
                  "the page does not show the order in Paying")
        await run(page.js, "window.__marker = 1")
        await run(page.wait_until, lambda: page.connection() == "live", 5,
                  "the stream is not live")
    finally:
        await set_payment_latency(http, running_system, 0)

    await run(page.wait_until, lambda: page.phase() == "Completed", 60,
              "the page never showed Completed")
    await run(page.wait_until, lambda: page.connection() == "finished", 10,
              "the connection indicator does not say finished")
    await run(page.wait_until, lambda: page.text("tracking-id") if page.visible("tracking-id")
              else "", 10, "the steps were not refreshed with the tracking id")

    assert await run(page.js, "return window.__marker") == 1, "the page was reloaded"
    timeline = await run(page.timeline)
    assert [phase for _, phase in timeline] == FORWARD
    assert [seq for seq, _ in timeline] == list(range(1, len(FORWARD) + 1))  # no repeat
    seen = await run(page.seen)
    assert seen["phase"][0] == "Paying" and seen["phase"][-1] == "Completed"
    assert_went_forward_only(seen["phase"])
    assert seen["connection"][-2:] == ["live", "finished"]
    assert await run(page.js, "return document.getElementById('phase').dataset.family") == (
        "completed")
    assert await run(page.text, "reason") == "OrderCompleted"
    assert await run(page.steps) == {step: "Succeeded"
                                     for step in ("reserve", "pay", "ship", "commit", "notify")}
    total = await run(page.text, "total")
    assert "15.00" in total and "INR" in total
    assert sku in await run(page.text, "items")
    assert not await run(page.visible, "error")
    assert await run(page.problems) == []


async def test_the_page_resumes_a_dropped_stream_with_last_event_id_missing_nothing(
    running_system: System, gateway_tenant: GatewayTenant, http: aiohttp.ClientSession,
    seed_stock: Any, unique_sku: Callable[[str], str], browser: webdriver.Chrome,
) -> None:
    sku = unique_sku("SKU-PAGE-RESUME")
    await seed_stock({sku: 5})
    await run(browser.execute_cdp_cmd, "Page.addScriptToEvaluateOnNewDocument",
              {"source": STREAM_CUTTER})
    page = OrderPage(browser, gateway_tenant.url)
    await set_payment_latency(http, running_system, SLOW_PAYMENT_MS)
    try:
        name = await place_order(http, gateway_tenant, sku)
        await wait_for_phase(http, gateway_tenant, name, "Paying")
        await run(page.open, name, gateway_tenant.token)
        await run(page.wait_until, lambda: page.connection() == "reconnecting", 5,
                  "the page did not notice the stream dropped")
    finally:
        await set_payment_latency(http, running_system, 0)

    await run(page.wait_until, lambda: page.phase() == "Completed", 60,
              "the page never showed Completed after the stream dropped")
    await run(page.wait_until, lambda: page.connection() == "finished", 10,
              "the connection indicator does not say finished")

    streams = await run(page.js, "return window.__streams")
    handled = complete_event_ids(await run(page.js, "return window.__beforeCut"))
    assert handled == [1]  # Pending, and the stream dropped
    assert streams == [None, "1"]  # resumed after it: 2 and 3 replayed, the rest live
    timeline = await run(page.timeline)
    assert [phase for _, phase in timeline] == FORWARD
    assert [seq for seq, _ in timeline] == list(range(1, len(FORWARD) + 1))
    seen = await run(page.seen)
    assert "reconnecting" in seen["connection"]
    assert seen["connection"][-2:] == ["live", "finished"]
    assert_went_forward_only(seen["phase"])


# -- links that cannot work ------------------------------------------------------------------------


async def test_a_wrong_token_shows_that_the_links_token_is_not_valid_and_no_order_data(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, seed_stock: Any,
    unique_sku: Callable[[str], str], browser: webdriver.Chrome,
) -> None:
    sku = unique_sku("SKU-PAGE-401")
    await seed_stock({sku: 5})
    name = await place_order(http, gateway_tenant, sku)
    page = OrderPage(browser, gateway_tenant.url)

    await run(page.open, name, "not-the-token-" + gateway_tenant.token[:8])
    await run(page.wait_until, lambda: page.visible("error"), 10, "no error is shown")

    assert "the link's token is not valid" in (await run(page.text, "error")).lower()
    assert not await run(page.visible, "order")
    assert await run(page.phase) == ""
    assert await run(page.timeline) == []
    assert await run(page.steps) == {}
    assert await run(page.text, "items") == ""
    source = await run(lambda: browser.page_source)
    assert sku not in source and "c1@example.com" not in source
    assert await run(page.connection) == "stopped"
    assert await run(page.problems) == []


async def test_an_order_that_does_not_exist_shows_no_such_order(
    gateway_tenant: GatewayTenant, browser: webdriver.Chrome,
) -> None:
    page = OrderPage(browser, gateway_tenant.url)

    await run(page.open, "no-such-order", gateway_tenant.token)
    await run(page.wait_until, lambda: page.visible("error"), 10, "no error is shown")

    assert "no such order" in (await run(page.text, "error")).lower()
    assert not await run(page.visible, "order")
    assert await run(page.timeline) == []
    assert await run(page.connection) == "stopped"
    assert await run(page.problems) == []


async def test_a_link_without_a_token_explains_the_form_of_the_url(
    running_system: System, browser: webdriver.Chrome,
) -> None:
    page = OrderPage(browser, running_system.gateway_url)

    await run(page.open, "order-abc12", None)
    await run(page.wait_until, lambda: page.visible("error"), 10, "no error is shown")

    error = await run(page.text, "error")
    assert "no access token" in error
    assert "/orders/order-abc12#token=" in error
    assert await run(page.phase) == ""
    # nothing was asked of the API: the page did not even try without a token
    requested = await run(page.js, "return performance.getEntriesByType('resource')"
                                   ".map(function (e) { return e.name; })")
    assert not [url for url in requested if "/api/" in url]
    assert await run(page.problems) == []


def test_the_page_is_one_self_contained_file_under_a_strict_policy(
    running_system: System,
) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{running_system.gateway_url}/orders/x", timeout=10) as page:
        policy = page.headers["Content-Security-Policy"]
        html = page.read().decode("ascii")
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing external
    for element_id in ("phase", "reason", "timeline", "steps", "connection", "error"):
        assert f'id="{element_id}"' in html
    assert re.search(r'id="phase"[^>]*aria-live="polite"', html)
