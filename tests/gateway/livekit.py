"""Helpers for the gateway tests: a real gateway on a real embedded log, in a thread of its
own, and the events the tests write to the log to drive it.

The gateway runs on its own event loop in a background thread, as it would in its own
process; the tests talk to it with a real websockets client (and real HTTP) on loopback and
append records with their own log connection, exactly as the pipeline would.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from events import kinds as k
from events.base import Causation, Event
from events.catalog import topic_for
from events.codec import encode
from gateway import tokens
from gateway.server import Gateway, Settings
from streams.bootstrap import open_log
from streams.config import Config
from streams.embedded import EmbeddedLog
from streams.log import OutRecord
from tests.support import graph

KEY = b"k" * 32
T0 = 1_795_420_800_000  # 2026-11-23T08:00:00Z, 09:00 in Andorra
CAUSE = Causation(id="ev-cause", topic="fs.status", partition=0, offset=0)
_ids = itertools.count(1)


def ev(cls: type[Event], at: int, subject: str, **data: Any) -> Event:
    extra: dict[str, Any] = {"causation": CAUSE} if cls.DERIVED else {}
    return cls(id=f"t-{next(_ids)}", source="test", time=at, subject=subject, **extra, **data)


def registered(tid: str, name: str, region: str = "Canillo") -> Event:
    return ev(
        k.TechnicianRegistered,
        T0 - 3_600_000,
        tid,
        technician_id=tid,
        name=name,
        skills=("hvac",),
        team="north",
        region=region,
        home_lat=42.55,
        home_lon=1.6,
    )


def shift(tid: str, at: int = T0, *, end: bool = False) -> Event:
    if end:
        return ev(k.ShiftEnded, at, tid, technician_id=tid)
    return ev(
        k.ShiftStarted, at, tid, technician_id=tid, van_stock={}, planned_end=at + 8 * 3_600_000
    )


def ping(tid: str, at: int, lat: float = 42.51, lon: float = 1.54) -> Event:
    return ev(
        k.GpsPinged, at, tid, technician_id=tid, lat=lat, lon=lon, speed_mps=12.0, heading_deg=90.0
    )


def order(
    wid: str,
    status: str,
    at: int,
    tid: str | None = "T-1",
    region: str = "Canillo",
    **extra: Any,
) -> Event:
    return ev(
        k.WorkOrderStateChanged,
        at,
        wid,
        work_order_id=wid,
        status=status,
        previous_status=None,
        trigger="test",
        technician_id=tid,
        previous_technician_id=None,
        visit=1,
        customer_id="C-1",
        site_lat=42.5063,
        site_lon=1.5218,
        region=region,
        job_type="boiler_repair",
        priority="normal",
        window_start=T0 + 3_600_000,
        window_end=T0 + 3 * 3_600_000,
        **extra,
    )


def eta(wid: str, at: int, p10: int, p50: int, p90: int, tid: str = "T-1") -> Event:
    return ev(
        k.EtaUpdated,
        at,
        wid,
        work_order_id=wid,
        technician_id=tid,
        p10=p10,
        p50=p50,
        p90=p90,
        window_start=T0 + 3_600_000,
        window_end=T0 + 3 * 3_600_000,
        reason="moved",
        model_version="test",
    )


def late(wid: str, at: int, message: str, tid: str = "T-1") -> Event:
    return ev(
        k.LateAlertRaised,
        at,
        wid,
        work_order_id=wid,
        technician_id=tid,
        probability_late=0.8,
        p10=at,
        p50=at,
        p90=at,
        window_start=T0 + 3_600_000,
        window_end=T0 + 3 * 3_600_000,
        lead_time_s=600,
        message=message,
    )


def record(event: Event) -> OutRecord:
    topic = topic_for(event)
    return OutRecord(topic.name, encode(event), event.key.encode(), event.time)


async def open_test_log(data_dir: Path) -> EmbeddedLog:
    """The embedded log in ``data_dir``, with the catalog's topics."""
    log = await open_log(Config(data_dir=data_dir))
    assert isinstance(log, EmbeddedLog)
    return log


async def seed(data_dir: Path, events: Sequence[Event]) -> None:
    log = await open_test_log(data_dir)
    try:
        await append(log, events)
    finally:
        await log.close()


async def append(log: EmbeddedLog, events: Sequence[Event]) -> float:
    """Append events on their topics; returns the wall time after the append."""
    await log.append([record(e) for e in events])
    return time.perf_counter()


@dataclass
class Running:
    """A gateway running in a background thread."""

    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    data_dir: Path

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dispatcher(self, region: str | None = None, ttl_s: int = 3600) -> str:
        return tokens.issue_dispatcher(KEY, region, now=int(time.time()), ttl_s=ttl_s)

    def customer(self, wid: str, ttl_s: int = 3600) -> str:
        return tokens.issue_customer(KEY, wid, now=int(time.time()), ttl_s=ttl_s)

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the gateway's loop (e.g. to read its state safely)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def start_gateway(data_dir: Path, settings: Settings | None = None, **config: Any) -> Running:
    """Start a gateway on ``data_dir`` (its log is created if needed) and wait until it has
    caught up with the log."""
    settings = replace(settings or Settings(heartbeat_s=30.0), port=0)
    loop = asyncio.new_event_loop()
    gateway_box: list[Gateway] = []
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            gw = Gateway(Config(data_dir=data_dir, **config), settings, key=KEY, graph=graph())
            await gw.start()
            await gw.wait_ready()
            gateway_box.append(gw)

        try:
            loop.run_until_complete(boot())
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="test-gateway", daemon=True)
    thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    return Running(gateway_box[0], loop, thread, data_dir)


async def frames(ws: ClientConnection, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The next ``n`` frames, decoded."""
    out = []
    for _ in range(n):
        out.append(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return out


async def next_of(
    ws: ClientConnection, kind: str, timeout: float = 5.0, skip: Sequence[str] = ("heartbeat",)
) -> dict[str, Any]:
    """The next frame of type ``kind`` (frames of the ``skip`` types are passed over)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {kind} frame in {timeout} s")
        doc = orjson.loads(await asyncio.wait_for(ws.recv(), remaining))
        if doc["type"] == kind:
            return doc
        if doc["type"] not in skip:
            raise AssertionError(f"expected a {kind} frame, got {doc}")


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def iter_pings(
    tids: Sequence[str], start: int, rounds: int, step_ms: int = 1000
) -> Iterator[list[Event]]:
    """Rounds of one ping per technician, each round ``step_ms`` later, moving east."""
    for r in range(rounds):
        yield [ping(t, start + r * step_ms, 42.51, 1.50 + r * 1e-4) for t in tids]
