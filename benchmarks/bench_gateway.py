"""The gateway under load: 2,000 websocket clients on loopback while 5,000 pings/s flow.

Three processes, as in production: the gateway (tailing an embedded log), a feeder that
offers pings through ingest, and the clients. The pings are a simulated day's GPS fixes
(2,000 technicians on the real roads of Andorra), replayed in their order at the target rate
with their times re-stamped to the wall clock as they are offered, so a frame's latency is
``receive time - fix time``: from the moment the ping is handed to ingest (validated and
appended to the log) until the frame carrying it reaches a client.

Clients: 1,900 customer feeds (each a work order en route with its own technician) and 100
dispatcher feeds (80 of one region each, 20 of all regions). Printed: p50/p99/max latency of
every position received (a dispatcher frame counts each of its positions), frames/s
delivered, the gateway's memory per connection (resident set growth when the clients
connect), and starved clients (a customer whose technician pinged during the run but who got
no frame). Target: p99 <= 100 ms, no client starved.

    .venv/bin/python benchmarks/bench_gateway.py [--clients 2000] [--rate 5000] [--seconds 30]

``BENCH_PROFILE=FILE`` writes a cProfile of the gateway process to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the gateway process -------------------------------------------------------------------


def gateway_main(data_dir: str, key: bytes, conn: Any) -> None:
    _raise_fd_limit()
    from gateway.server import Gateway, Settings
    from streams.config import Config

    async def body() -> None:
        gw = Gateway(Config(data_dir=Path(data_dir)), Settings(port=0), key=key)
        async with gw:
            await gw.wait_ready()
            conn.send(gw.port)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
            text = gw.metrics.render().decode()
            conn.send(text)

    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        cProfile.runctx("asyncio.run(body())", globals(), locals(), os.environ["BENCH_PROFILE"])
    else:
        asyncio.run(body())


# -- the feeder process --------------------------------------------------------------------


def feeder_main(
    data_dir: str,
    pings: list[tuple[str, float, float, float, float]],
    rate: int,
    seconds: float,
    start_at: float,
    conn: Any,
) -> None:
    from events import kinds as k
    from events.codec import encode
    from streams.bootstrap import open_log
    from streams.config import Config
    from streams.ingest import Ingestor

    async def body() -> dict[str, Any]:
        log = await open_log(Config(data_dir=Path(data_dir)))
        now_ms = 0
        ingestor = Ingestor(log, clock=lambda: now_ms, source="bench")
        per_tech: dict[str, int] = {}
        offered = 0
        tick = 0.02
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        began = time.perf_counter()
        i = 0
        while time.perf_counter() - began < seconds and i < len(pings):
            due = int((time.perf_counter() - began + tick) * rate)
            batch = []
            stamp = int(time.time() * 1000)
            while offered < due and i < len(pings):
                tid, lat, lon, speed, heading = pings[i]
                i += 1
                offered += 1
                per_tech[tid] = per_tech.get(tid, 0) + 1
                batch.append(
                    encode(
                        k.GpsPinged(
                            id=f"bench-{i}",
                            source="bench",
                            time=stamp,
                            subject=tid,
                            technician_id=tid,
                            lat=lat,
                            lon=lon,
                            speed_mps=speed,
                            heading_deg=heading,
                        )
                    )
                )
            if batch:
                now_ms = stamp
                report = await ingestor.ingest(batch)
                assert report.rejected == 0, report.by_rule
            await asyncio.sleep(max(0.0, began + (due / rate) - time.perf_counter()))
        elapsed = time.perf_counter() - began
        await log.close()
        return {"offered": offered, "seconds": elapsed, "per_tech": per_tech}

    conn.send(asyncio.run(body()))


# -- the clients process -------------------------------------------------------------------


def clients_main(
    port: int, urls: list[tuple[str, str, str | None]], seconds: float, conn: Any
) -> None:
    _raise_fd_limit()
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    frames = [0] * len(urls)
    deltas = [0] * len(urls)

    async def client(i: int, path: str, stop: asyncio.Event) -> None:
        async with connect(
            f"ws://127.0.0.1:{port}{path}", max_size=None, compression=None, open_timeout=60
        ) as ws:
            ready.append(i)
            async for message in ws:
                now = time.time() * 1000
                doc = orjson.loads(message)
                frames[i] += 1
                if doc["type"] == "delta" and measuring[0]:
                    deltas[i] += 1
                    data = doc["data"]
                    if "positions" in data:
                        for p in data["positions"].values():
                            if p is not None:
                                latencies.append(now - p[4])
                    elif data.get("position"):
                        latencies.append(now - data["position"]["at"])
                if stop.is_set():
                    return

    ready: list[int] = []
    measuring = [False]

    async def body() -> None:
        stop = asyncio.Event()
        tasks = []
        for start in range(0, len(urls), 100):
            for i in range(start, min(start + 100, len(urls))):
                tasks.append(asyncio.create_task(client(i, urls[i][1], stop)))
            while len(ready) < min(start + 100, len(urls)):
                await asyncio.sleep(0.01)
        conn.send(("connected", len(ready)))
        start_at = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        measuring[0] = True
        await asyncio.sleep(seconds + 0.5)
        measuring[0] = False
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(body())
    conn.send({"latencies": latencies, "frames": frames, "deltas": deltas})


# -- setting up ----------------------------------------------------------------------------


def prepare(
    data_dir: Path, key: bytes, n_customers: int, n_dispatchers: int
) -> tuple[list[tuple[str, float, float, float, float]], list[tuple[str, str, str | None]]]:
    """Simulate a day, seed the log with its technicians (on shift now) and with work
    orders en route, and return the day's pings and the clients' feed paths."""
    from eta_engine.roads import RoadGraph
    from events import kinds as k
    from events.base import Causation
    from events.catalog import topic_for
    from events.codec import encode
    from gateway import tokens
    from simulator import make_params, simulate
    from streams.bootstrap import open_log
    from streams.config import Config
    from streams.log import OutRecord

    graph = RoadGraph.default()
    began = time.perf_counter()
    sim = simulate(make_params("normal", technicians=2000, seed=11, hours=9.0), graph)
    techs: dict[str, Any] = {}
    pings: list[tuple[str, float, float, float, float]] = []
    for _, event in sim.iter_events():
        if isinstance(event, k.TechnicianRegistered):
            techs[event.technician_id] = event
        elif isinstance(event, k.GpsPinged):
            pings.append(
                (
                    event.technician_id,
                    event.lat,
                    event.lon,
                    event.speed_mps or 0.0,
                    event.heading_deg or 0.0,
                )
            )
    print(
        f"simulated day: {len(techs):,} technicians, {len(pings):,} pings "
        f"({time.perf_counter() - began:.1f} s)"
    )
    now = int(time.time() * 1000)
    cause = Causation("bench", "fs.status", 0, 0)
    events: list[Any] = []
    for tid, reg in techs.items():
        events.append(reg)
        events.append(
            k.ShiftStarted(
                id=f"s-{tid}",
                source="bench",
                time=now - 3_600_000,
                subject=tid,
                technician_id=tid,
                van_stock={},
                planned_end=now + 8 * 3_600_000,
            )
        )
    tids = sorted(techs)
    customers = []
    for n, tid in enumerate(tids[:n_customers]):
        wid = f"WO-BENCH-{n:05d}"
        customers.append((wid, tid))
        reg = techs[tid]
        events.append(
            k.WorkOrderStateChanged(
                id=f"w-{wid}",
                source="bench",
                time=now - 60_000,
                subject=wid,
                causation=cause,
                work_order_id=wid,
                status="en_route",
                previous_status="assigned",
                trigger="TechnicianEnRoute",
                technician_id=tid,
                previous_technician_id=None,
                visit=1,
                customer_id=f"C-{n}",
                site_lat=reg.home_lat,
                site_lon=reg.home_lon,
                region=reg.region,
                job_type="boiler_repair",
                priority="normal",
                window_start=now,
                window_end=now + 7_200_000,
                en_route_at=now - 60_000,
            )
        )

    async def seed() -> None:
        log = await open_log(Config(data_dir=data_dir))
        records = [OutRecord(topic_for(e).name, encode(e), e.key.encode(), e.time) for e in events]
        await log.append(records)
        await log.close()

    asyncio.run(seed())
    stamp = int(time.time())
    regions = sorted({t.region for t in techs.values()})
    urls: list[tuple[str, str, str | None]] = [
        ("customer", f"/ws/track/{w}?token={tokens.issue_customer(key, w, now=stamp)}", tid)
        for w, tid in customers
    ]
    for n in range(n_dispatchers):
        if n < n_dispatchers // 5:
            token = tokens.issue_dispatcher(key, now=stamp)
            urls.append(("dispatch-all", f"/ws/dispatch?token={token}", None))
        else:
            token = tokens.issue_dispatcher(key, regions[n % len(regions)], now=stamp)
            urls.append(("dispatch-region", f"/ws/dispatch?token={token}", None))
    # The day's pings in time order (the simulation's event order).
    return pings, urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=5000, help="pings offered per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    n_dispatchers = max(1, args.clients // 20)
    n_customers = args.clients - n_dispatchers
    ctx = mp.get_context("spawn")
    key = os.urandom(32)
    with tempfile.TemporaryDirectory(prefix="fieldstream-bench-gw-") as tmp:
        data_dir = Path(tmp)
        pings, urls = prepare(data_dir, key, n_customers, n_dispatchers)
        # Skip the early morning: start where most technicians are out driving.
        pings = pings[len(pings) // 4 :]
        needed = int(args.rate * args.seconds) + args.rate
        pings = pings[:needed]

        gw_end, gw_child = ctx.Pipe()
        gw = ctx.Process(target=gateway_main, args=(str(data_dir), key, gw_child))
        gw.start()
        port = gw_end.recv()
        rss_before = _rss_kib(gw.pid)  # type: ignore[arg-type]

        cl_end, cl_child = ctx.Pipe()
        began = time.perf_counter()
        clients = ctx.Process(target=clients_main, args=(port, urls, args.seconds, cl_child))
        clients.start()
        _, connected = cl_end.recv()
        connect_s = time.perf_counter() - began
        time.sleep(1.0)
        rss_after = _rss_kib(gw.pid)  # type: ignore[arg-type]
        print(
            f"{connected:,} clients connected in {connect_s:.1f} s "
            f"({n_customers:,} customer feeds, {n_dispatchers} dispatcher feeds)"
        )
        start_at = time.time() + 2.0
        cl_end.send(start_at)
        fd_end, fd_child = ctx.Pipe()
        feeder = ctx.Process(
            target=feeder_main,
            args=(str(data_dir), pings, args.rate, args.seconds, start_at, fd_child),
        )
        feeder.start()
        fed = fd_end.recv()
        result = cl_end.recv()
        feeder.join()
        clients.join()
        gw_end.send("stop")
        metrics = gw_end.recv()
        gw.join()

    lat = sorted(result["latencies"])
    frames = sum(result["frames"])
    per_tech = fed["per_tech"]
    starved = sum(
        1
        for (kind, _, tid), d in zip(urls, result["deltas"], strict=True)
        if kind == "customer" and d == 0 and tid is not None and per_tech.get(tid, 0) > 0
    )
    q = statistics.quantiles(lat, n=100) if len(lat) >= 100 else [float("nan")] * 99
    print(
        f"pings offered: {fed['offered']:,} in {fed['seconds']:.1f} s "
        f"= {fed['offered'] / fed['seconds']:,.0f}/s"
    )
    print(
        f"latency ping append -> frame at client: p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, "
        f"max {lat[-1]:.1f} ms over {len(lat):,} positions received"
    )
    print(
        f"frames delivered: {frames:,} in {args.seconds:.0f} s = "
        f"{frames / args.seconds:,.0f}/s; deltas per client min "
        f"{min(result['deltas'])}, median {statistics.median(result['deltas']):.0f}"
    )
    print(
        f"gateway memory: {rss_before / 1024:.0f} MiB before clients, "
        f"{rss_after / 1024:.0f} MiB with {connected:,} connected = "
        f"{(rss_after - rss_before) / max(1, connected):.0f} KiB per connection"
    )
    print(f"starved clients (their technician pinged, no frame): {starved}")
    overflow = [
        line for line in metrics.splitlines() if line.startswith("fieldstream_ws_overflows_total")
    ]
    print("overflows:", ", ".join(overflow) or "none")


if __name__ == "__main__":
    main()
