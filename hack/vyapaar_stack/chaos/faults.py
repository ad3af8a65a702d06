"""Playing a fault on the local stack, and timing its recovery.

Process faults go through :mod:`vyapaar_stack.components` (the same handles as `vyapaar
stack kill|stop|start`), processor faults through the services' ``/admin/faults``, poison
straight into a command queue, duplicates by making the services' outbox relays send the
last replies once more (as a lost publisher confirm would).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import asyncpg
from vyapaar_messaging.topology import DEFAULT_TOPOLOGY

from .. import components, system
from ..config import StackConfig
from .plan import Fault

#: the saga's services only: duplicates replay their outboxes of replies, and the run checks
#: their command queues and outboxes (analytics is no step of the saga: no command queue, no
#: replies; it only reads the order events)
SERVICES = system.SAGA_SERVICES


@dataclass
class Played:
    """A fault as it happened: when (seconds since the load started) and how long the
    component took to answer again after the fault ended."""

    fault: Fault
    started: float
    ended: float
    recovered: float | None = None
    error: str | None = None

    @property
    def recovery_seconds(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.ended


class FaultPlayer:
    def __init__(self, config: StackConfig, http: aiohttp.ClientSession, run_id: str,
                 clock: Any) -> None:
        self.config = config
        self.http = http
        self.run_id = run_id
        self.clock = clock  # () -> seconds since the load started

    @property
    def poison_marker(self) -> str:
        return f"chaos-poison-{self.run_id}"

    async def play(self, fault: Fault) -> Played:
        played = Played(fault, self.clock(), self.clock())
        try:
            await getattr(self, "_" + fault.kind.replace("-", "_"))(fault, played)
        except Exception as exc:  # a fault that could not be played is reported, not fatal
            played.error = f"{type(exc).__name__}: {exc}"
        played.ended = played.ended if played.ended > played.started else self.clock()
        return played

    # -- processes ------------------------------------------------------------------------

    async def _start(self, target: str, played: Played) -> None:
        played.ended = self.clock()
        await asyncio.to_thread(components.start, self.config, target)
        played.recovered = self.clock()

    async def _kill(self, fault: Fault, played: Played) -> None:
        await asyncio.to_thread(components.kill, self.config, fault.target, signal.SIGKILL)
        await self._start(fault.target, played)

    async def _restart(self, fault: Fault, played: Played) -> None:
        await asyncio.to_thread(components.stop, self.config, fault.target)
        await self._start(fault.target, played)

    async def _outage(self, fault: Fault, played: Played) -> None:
        await asyncio.to_thread(components.stop, self.config, fault.target)
        await asyncio.sleep(max(0.0, fault.ends - self.clock()))
        await self._start(fault.target, played)

    async def _freeze(self, fault: Fault, played: Played) -> None:
        await asyncio.to_thread(components.kill, self.config, fault.target, signal.SIGSTOP)
        try:
            await asyncio.sleep(max(0.0, fault.ends - self.clock()))
        finally:
            await asyncio.to_thread(components.kill, self.config, fault.target, signal.SIGCONT)
        played.ended = played.recovered = self.clock()

    # -- processors ------------------------------------------------------------------------

    async def _set_faults(self, service: str, **changes: float) -> None:
        url = f"{system.service_url(self.config, service)}/admin/faults"
        async with self.http.get(url) as resp:
            current = await resp.json()
        async with self.http.put(url, json={**current, **changes}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{service} refused {changes}: {await resp.text()}")

    async def _processor_fault(self, fault: Fault, played: Played, setting: str,
                               value: float) -> None:
        await self._set_faults(fault.target, **{setting: value})
        try:
            await asyncio.sleep(max(0.0, fault.ends - self.clock()))
        finally:
            await self._set_faults(fault.target, **{setting: 0})
        played.ended = played.recovered = self.clock()

    async def _latency(self, fault: Fault, played: Played) -> None:
        await self._processor_fault(fault, played, "latencyMs", int(fault.value))

    async def _errors(self, fault: Fault, played: Played) -> None:
        await self._processor_fault(fault, played, "errorRate", fault.value)

    async def _lost_commits(self, fault: Fault, played: Played) -> None:
        await self._processor_fault(fault, played, "lostCommitRate", fault.value)

    # -- messages --------------------------------------------------------------------------

    async def _poison(self, fault: Fault, played: Played) -> None:
        connection = await aio_pika.connect(self.config.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = DEFAULT_TOPOLOGY.command_queue(fault.target)
            for i in range(max(1, int(fault.value))):
                body = json.dumps({"not": "an envelope", "marker": self.poison_marker, "n": i})
                await channel.default_exchange.publish(
                    aio_pika.Message(body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                     type="ChaosPoison"), routing_key=queue)
        played.ended = played.recovered = self.clock()

    async def _duplicates(self, fault: Fault, played: Played) -> None:
        connection = await asyncpg.connect(self.config.database_url)
        try:
            for service in SERVICES:
                await connection.execute(
                    f"UPDATE {service}.outbox SET sent_at = NULL"
                    " WHERE sent_at > now() - make_interval(secs => $1)", fault.duration)
        finally:
            await connection.close()
        played.ended = played.recovered = self.clock()


def monotonic_clock(started: float) -> Any:
    return lambda: time.monotonic() - started
