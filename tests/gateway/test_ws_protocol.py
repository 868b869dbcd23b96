"""The feed protocol against a running gateway: snapshot, numbered deltas, resume, heartbeats,
control messages, privacy of positions, the customer's document, and slow clients."""

from __future__ import annotations

import asyncio
import gc
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

from gateway.server import Settings
from tests.gateway.livekit import (
    T0,
    append,
    eta,
    frames,
    late,
    next_of,
    open_test_log,
    order,
    ping,
    registered,
    seed,
    shift,
    start_gateway,
)

BASE = [registered("T-1", "Anna Puig"), shift("T-1"), order("WO-1", "assigned", T0 + 100)]


def test_snapshot_then_numbered_deltas(tmp_path: Path) -> None:
    asyncio.run(seed(tmp_path, BASE))
    gw = start_gateway(tmp_path)

    async def body() -> None:
        log = await open_test_log(tmp_path)
        async with connect(f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}") as ws:
            snap = await next_of(ws, "snapshot")
            assert snap["seq"] == 0 and snap["epoch"]
            assert snap["data"]["technicians"]["T-1"]["name"] == "Anna Puig"
            assert snap["data"]["orders"]["WO-1"]["status"] == "assigned"
            assert snap["data"]["positions"] == {}
            for i in range(1, 4):
                await append(log, [ping("T-1", T0 + i * 1000, 42.5, 1.5 + i * 0.001)])
                delta = await next_of(ws, "delta")
                assert delta["seq"] == i
                lat, lon, _, _, at = delta["data"]["positions"]["T-1"]
                assert (lat, at) == (42.5, T0 + i * 1000)
                assert abs(lon - (1.5 + i * 0.001)) < 1e-9
            await append(log, [order("WO-1", "en_route", T0 + 5000, en_route_at=T0 + 5000)])
            delta = await next_of(ws, "delta")
            assert delta["seq"] == 4
            assert delta["data"]["orders"]["WO-1"]["status"] == "en_route"
            assert delta["data"]["technicians"]["T-1"]["status"] == "en_route"
            assert delta["data"]["technicians"]["T-1"]["job"] == "WO-1"
        await log.close()

    try:
        asyncio.run(body())
    finally:
        gw.stop()


def test_resume_with_since_gets_exactly_the_missed_deltas(tmp_path: Path) -> None:
    asyncio.run(seed(tmp_path, BASE))
    gw = start_gateway(tmp_path)

    async def body() -> None:
        log = await open_test_log(tmp_path)
        url = f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}"
        async with connect(url) as ws:
            snap = await next_of(ws, "snapshot")
            await append(log, [ping("T-1", T0 + 1000)])
            seen = (await next_of(ws, "delta"))["seq"]
        for i in range(2, 5):  # three deltas while disconnected
            await append(log, [ping("T-1", T0 + i * 1000, 42.5, 1.5 + i * 0.001)])
            await asyncio.sleep(0.15)
        async with connect(f"{url}&since={seen}&epoch={snap['epoch']}") as ws:
            resume = await next_of(ws, "resume")
            assert resume["from"] == seen and resume["seq"] == seen + 3
            missed = await frames(ws, 3)
            assert [m["seq"] for m in missed] == [seen + 1, seen + 2, seen + 3]
            assert missed[-1]["data"]["positions"]["T-1"][4] == T0 + 4000
        # Up to date already: an empty resume, then live deltas.
        async with connect(f"{url}&since={seen + 3}&epoch={snap['epoch']}") as ws:
            assert (await next_of(ws, "resume"))["seq"] == seen + 3
            await append(log, [ping("T-1", T0 + 9000)])
            assert (await next_of(ws, "delta"))["seq"] == seen + 4
        await log.close()

    try:
        asyncio.run(body())
    finally:
        gw.stop()


def test_resume_too_old_or_from_another_run_gets_a_fresh_snapshot(tmp_path: Path) -> None:
    asyncio.run(seed(tmp_path, BASE))
    gw = start_gateway(tmp_path, Settings(backlog=2))

    async def body() -> None:
        log = await open_test_log(tmp_path)
        url = f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}"
        async with connect(url) as ws:
            epoch = (await next_of(ws, "snapshot"))["epoch"]
            for i in range(1, 6):
                await append(log, [ping("T-1", T0 + i * 1000)])
                await next_of(ws, "delta")
        for since, run in ((1, epoch), (5, "another-run"), (99, epoch)):
            async with connect(f"{url}&since={since}&epoch={run}") as ws:
                snap = await next_of(ws, "snapshot", skip=())
                assert snap["seq"] == 5
                assert snap["data"]["positions"]["T-1"][4] == T0 + 5000
        await log.close()

    try:
        asyncio.run(body())
    finally:
        gw.stop()


def _until(check: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_survivors_of_full_collections_are_frozen_then_handed_back(tmp_path: Path) -> None:
    asyncio.run(seed(tmp_path, BASE))
    gw = start_gateway(tmp_path, Settings(tick_s=0.02, gc_thaw_s=0.3))
    try:
        assert gc.get_freeze_count() > 0  # the caught-up view, out of the full passes
        _until(lambda: gc.get_freeze_count() == 0)  # thawed after gc_thaw_s
        gc.collect()
        _until(lambda: gc.get_freeze_count() > 0)  # what survived it, frozen by the ticker
    finally:
        gw.stop()
    assert gc.get_freeze_count() == 0
    assert not [cb for cb in gc.callbacks if getattr(cb, "__self__", None) is gw.gateway]


def test_heartbeats_ping_pong_and_resync(tmp_path: Path) -> None:
    asyncio.run(seed(tmp_path, BASE))
    gw = start_gateway(tmp_path, Settings(heartbeat_s=0.2))

    async def body() -> None:
        async with connect(f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}") as ws:
            await next_of(ws, "snapshot")
            began = time.monotonic()
            beats = [await next_of(ws, "heartbeat", skip=()) for _ in range(3)]
            assert time.monotonic() - began < 2.0
            assert all(b["seq"] == 0 and b["now"] >= T0 for b in beats)
            await ws.send(orjson.dumps({"type": "ping", "id": 7}).decode())
            assert (await next_of(ws, "pong"))["id"] == 7
            await ws.send('{"type": "resync"}')
            assert (await next_of(ws, "snapshot"))["data"]["technicians"]["T-1"]

    try:
        asyncio.run(body())
    finally:
        gw.stop()


def test_positions_are_shown_during_the_shift_only(tmp_path: Path) -> None:
    asyncio.run(seed(tmp_path, [registered("T-1", "Anna Puig"), ping("T-1", T0 - 5000)]))
    gw = start_gateway(tmp_path)

    async def body() -> None:
        log = await open_test_log(tmp_path)
        async with connect(f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}") as ws:
            snap = await next_of(ws, "snapshot")
            assert snap["data"]["positions"] == {}  # a fix before any shift is never shown
            assert snap["data"]["technicians"]["T-1"]["status"] == "off_shift"
            await append(log, [shift("T-1", T0), ping("T-1", T0 - 1000), ping("T-1", T0 + 1000)])
            got: dict[str, Any] = {}
            while "positions" not in got:
                got.update((await next_of(ws, "delta"))["data"])
            assert got["positions"]["T-1"][4] == T0 + 1000  # the in-shift fix, not the one before
            await append(log, [shift("T-1", T0 + 2000, end=True)])
            delta = await next_of(ws, "delta")
            assert delta["data"]["positions"] == {"T-1": None}
            assert delta["data"]["technicians"]["T-1"]["status"] == "off_shift"
            await append(log, [ping("T-1", T0 + 3000)])  # after hours: nothing to see
            await append(log, [order("WO-1", "booked", T0 + 3500, None)])
            delta = await next_of(ws, "delta")
            assert "positions" not in delta["data"] and "WO-1" in delta["data"]["orders"]
        await log.close()

    try:
        asyncio.run(body())
    finally:
        gw.stop()


def test_the_customer_feed_tells_the_visit_in_plain_words(tmp_path: Path) -> None:
    asyncio.run(seed(tmp_path, BASE))
    gw = start_gateway(tmp_path)
    t = T0 + 3_600_000  # 10:00 in Andorra

    async def body() -> None:
        log = await open_test_log(tmp_path)
        url = f"{gw.ws}/ws/track/WO-1?token={gw.customer('WO-1')}"
        async with connect(url) as ws:
            doc = (await next_of(ws, "snapshot"))["data"]
            assert doc["status"] == "assigned"
            assert doc["technician"] == {"first_name": "Anna"}  # the first name only
            assert doc["headline"] == "Confirmed: Anna will come, arriving 10:00-12:00"
            assert doc["position"] is None
            await append(log, [ping("T-1", T0 + 1000)])  # not en route to this job yet
            await append(
                log, [eta("WO-1", T0 + 2000, t + 7 * 60_000, t + 20 * 60_000, t + 33 * 60_000)]
            )
            doc = (await next_of(ws, "delta"))["data"]
            assert doc["position"] is None
            assert doc["expected"] == [t + 5 * 60_000, t + 35 * 60_000]  # rounded outwards
            await append(log, [order("WO-1", "en_route", T0 + 3000, en_route_at=T0 + 3000)])
            doc = (await next_of(ws, "delta"))["data"]
            assert doc["headline"] == "On the way, arriving 10:05-10:35"
            assert doc["position"]["at"] == T0 + 1000
            await append(log, [ping("T-1", T0 + 4000, 42.52, 1.53)])
            doc = (await next_of(ws, "delta"))["data"]
            assert (doc["position"]["lat"], doc["position"]["lon"]) == (42.52, 1.53)
            await append(log, [late("WO-1", T0 + 5000, "New ETA 12:20-12:50")])
            doc = (await next_of(ws, "delta"))["data"]
            assert doc["delay"]["message"] == "Sorry, we are running late. New ETA 12:20-12:50."
            await append(
                log,
                [order("WO-1", "arrived", T0 + 6000, en_route_at=T0 + 3000, arrived_at=T0 + 6000)],
            )
            doc = (await next_of(ws, "delta"))["data"]
            assert doc["headline"] == "Anna has arrived"
            assert doc["position"] is None and doc["delay"] is None
        await log.close()

    try:
        asyncio.run(body())
    finally:
        gw.stop()


def _slow_socket(port: int) -> socket.socket:
    """A connected socket with a tiny receive buffer: the client that reads nothing fills it
    at once, and the gateway's writes to it block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    return sock


def test_a_slow_client_gets_a_snapshot_and_never_slows_the_others(tmp_path: Path) -> None:
    techs = [f"T-{i:04d}" for i in range(300)]
    asyncio.run(seed(tmp_path, [e for t in techs for e in (registered(t, "Jo Vila"), shift(t))]))
    gw = start_gateway(tmp_path, Settings(queue_limit=8))
    rounds = 60

    async def body() -> tuple[list[float], list[dict[str, Any]]]:
        log = await open_test_log(tmp_path)
        url = f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}"
        slow = await connect(url, sock=_slow_socket(gw.port), max_queue=1)
        async with connect(url, max_size=None) as fast:
            await next_of(fast, "snapshot")
            latencies: list[float] = []
            for r in range(rounds):
                sent = await append(
                    log, [ping(t, T0 + 1000 * (r + 1), 42.5, 1.5 + r * 1e-4) for t in techs]
                )
                delta = await next_of(fast, "delta")
                latencies.append(time.perf_counter() - sent)
                assert delta["seq"] == r + 1, "the fast client must miss nothing"
                assert len(delta["data"]["positions"]) == len(techs)
        # The slow client now reads what it was sent: after the deltas that fitted, a fresh
        # snapshot of the present, then nothing it missed is replayed.
        got = []
        while True:
            doc = orjson.loads(await asyncio.wait_for(slow.recv(), 10))
            got.append({"type": doc["type"], "seq": doc["seq"]})
            if doc["type"] == "snapshot" and doc["seq"] == rounds:
                break
        await slow.close()
        await log.close()
        return latencies, got

    try:
        latencies, got = asyncio.run(body())
    finally:
        gw.stop()
    overflows = gw.gateway.metrics.ws_overflows.labels("dispatch")._value.get()
    assert overflows >= 1
    snapshots = [g for g in got if g["type"] == "snapshot"]
    assert len(snapshots) >= 2, got  # the first one, and at least one after an overflow
    deltas = [g["seq"] for g in got if g["type"] == "delta"]
    assert deltas == sorted(deltas)
    # Every delta reached the fast client promptly while the slow one was stuck.
    assert statistics.median(latencies) < 0.25, latencies
    assert max(latencies) < 1.5, latencies
