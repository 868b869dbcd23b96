"""The gateway under load: 2,000 websocket clients on loopback while 5,000 pings/s flow.

Separate processes, as in production: the gateway (tailing an embedded log), a feeder that
offers pings through ingest, and the clients (``--client-processes``, 2 by default, as load
generators on other machines would be). The pings are a simulated day's GPS fixes (2,000
technicians on the real roads of Andorra), replayed in their order at the target rate with
their times re-stamped to the wall clock as they are offered, so a frame's latency is
``receive time - fix time``: from the moment the ping is stamped and handed to ingest
(encoded, validated and committed to the log) until the bytes of the frame carrying it
reach a client's process. The clients speak just enough RFC 6455 to do that cheaply (see
:class:`FeedClient`): on two cores, a client library's per-frame work would compete with
the gateway it measures.

Clients: 1,900 customer feeds (each a work order en route with its own technician) and 100
dispatcher feeds (80 of one region each, 20 of all regions). Printed: p50/p99/max latency of
every position received (a dispatcher frame counts each of its positions), and two parts of
it: the feeder's own share (stamp to commit) and the gateway's (stamp to the end of the pass
that wrote the frame to the clients' sockets, measured in the gateway); frames/s delivered
while measuring, the gateway's memory per connection (resident set growth when the clients
connect), the CPU each process used during the run, and starved clients (a customer whose
technician pinged during the run but who got no frame). Target: p99 <= 100 ms, no client
starved.

Then, in the same run, the anchor: the same load (a copy of the same log, the same clients
and pings) served the naive way with the websockets library, each delta encoded per
subscriber and sent with one awaited ``send`` after another (benchmarks/naive_gateway.py);
printed: its latency, frames and CPU, and the gateway's ratios to them.

    .venv/bin/python benchmarks/bench_gateway.py [--clients 2000] [--rate 5000] [--seconds 30]
        [--no-anchor]

``BENCH_PROFILE=FILE`` writes a cProfile of the gateway process (CPU time) to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from naive_gateway import naive_gateway_main


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the gateway process -------------------------------------------------------------------


def gateway_main(data_dir: str, key: bytes, conn: Any) -> None:
    _raise_fd_limit()
    from gateway.server import Gateway, Settings
    from streams.config import Config

    lags: list[float] = []

    async def body() -> None:
        gw = Gateway(Config(data_dir=Path(data_dir)), Settings(port=0), key=key)
        publish = gw.hub.publish

        def timed_publish(changes: Any) -> int:
            # How long after it was stamped each new position's fan-out pass ended (its
            # frames written to the sockets of the clients that could take them at once): an
            # upper bound of the gateway's share, as the pass writes dispatcher frames first.
            published = publish(changes)
            now = time.time() * 1000
            for tid in changes.positions:
                position = gw.view.position(tid)
                if position is not None:
                    lags.append(now - position[4])
            return published

        gw.hub.publish = timed_publish  # type: ignore[method-assign]
        async with gw:
            await gw.wait_ready()
            conn.send(gw.port)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
            text = gw.metrics.render().decode()
            conn.send((text, lags))

    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        # CPU time, not wall time: on a shared machine, time spent waiting for a core would
        # be charged to whatever function happened to be running.
        profile = cProfile.Profile(time.process_time)
        profile.runcall(asyncio.run, body())
        profile.dump_stats(os.environ["BENCH_PROFILE"])
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
    import numpy as np

    from events.codec import encode_ping_columns
    from streams.bootstrap import open_log
    from streams.config import Config
    from streams.ingest import Ingestor

    # The simulator's own column encoder: the bytes encode(GpsPinged(...)) would give, for a
    # fraction of the feeder's CPU (which shares the machine with the gateway).
    techs = [tid.encode() for tid, *_ in pings]
    ids = [f"bench-{i}".encode() for i in range(1, len(pings) + 1)]
    lat, lon, speed, heading = (np.array([p[c] for p in pings]) for c in range(1, 5))

    async def body() -> dict[str, Any]:
        log = await open_log(Config(data_dir=Path(data_dir)))
        now_ms = 0
        ingestor = Ingestor(log, clock=lambda: now_ms, source="bench")
        per_tech: dict[str, int] = {}
        appends: list[float] = []
        offered = 0
        tick = 0.02
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        began = time.perf_counter()
        while time.perf_counter() - began < seconds and offered < len(pings):
            due = min(len(pings), int((time.perf_counter() - began + tick) * rate))
            stamp = int(time.time() * 1000)
            i, offered = offered, max(offered, due)
            batch = encode_ping_columns(
                "bench",
                ids[i:offered],
                np.full(offered - i, stamp),
                techs[i:offered],
                lat[i:offered],
                lon[i:offered],
                speed[i:offered],
                heading[i:offered],
            )
            for p in pings[i:offered]:
                per_tech[p[0]] = per_tech.get(p[0], 0) + 1
            if batch:
                now_ms = stamp
                report = await ingestor.ingest(batch)
                assert report.rejected == 0, report.by_rule
                appends.append(time.time() * 1000 - stamp)
            await asyncio.sleep(max(0.0, began + (due / rate) - time.perf_counter()))
        elapsed = time.perf_counter() - began
        await log.close()
        return {
            "offered": offered,
            "seconds": elapsed,
            "per_tech": per_tech,
            "appends": appends,
        }

    conn.send(asyncio.run(body()))


# -- the clients process -------------------------------------------------------------------


class FeedClient(asyncio.Protocol):
    """A minimal websocket client (RFC 6455) for the load: the handshake, unmasked text
    frames in, pongs and the close echoed back. A frame's arrival time is taken when its
    last bytes reach this process (``data_received``), before it is decoded, so the
    client's own work is not charged to the gateway, and its decoding costs a few
    microseconds where a full client library's frame machinery costs tens."""

    def __init__(self, i: int, path: str, port: int, stats: ClientStats) -> None:
        self.i = i
        self.path = path
        self.port = port
        self.stats = stats
        self.buffer = bytearray()
        self.open = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"client {self.i}: connection lost"))
        self.stats.lost += self.open and not self.stats.closing

    def data_received(self, data: bytes) -> None:
        now = time.time() * 1000
        buffer = self.buffer
        buffer += data
        at = 0
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101 "):
                self.opened.set_exception(ConnectionError(bytes(buffer[:end]).decode()))
                return
            self.open = True
            self.opened.set_result(None)
            at = end + 4
        size = len(buffer)
        while size - at >= 2:
            opcode, n = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
            head = 2
            if n == 126:
                if size - at < 4:
                    break
                n, head = int.from_bytes(buffer[at + 2 : at + 4], "big"), 4
            elif n == 127:
                if size - at < 10:
                    break
                n, head = int.from_bytes(buffer[at + 2 : at + 10], "big"), 10
            if size - at < head + n:
                break
            payload = bytes(buffer[at + head : at + head + n])
            at += head + n
            if opcode == 0x1:
                self.stats.frame(self.i, payload, now)
            elif opcode == 0x9:
                self.send(0xA, payload)  # pong
            elif opcode == 0x8:
                self.send(0x8, payload[:2])
                assert self.transport is not None
                self.transport.close()
        del buffer[:at]

    def send(self, opcode: int, payload: bytes) -> None:
        """A client frame: masked, as RFC 6455 requires (payloads here are under 126 bytes)."""
        assert self.transport is not None and len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[k % 4] for k, b in enumerate(payload))
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)


class ClientStats:
    """What the clients of one process received."""

    def __init__(self, n: int) -> None:
        self.latencies: list[float] = []
        self.frames = [0] * n
        self.deltas = [0] * n
        self.measuring = False
        self.closing = False
        self.lost = 0

    def frame(self, i: int, payload: bytes, now: float) -> None:
        if not self.measuring:
            return
        self.frames[i] += 1
        doc = orjson.loads(payload)
        if doc["type"] != "delta":
            return
        self.deltas[i] += 1
        data = doc["data"]
        if "positions" in data:
            self.latencies.extend(now - p[4] for p in data["positions"].values() if p is not None)
        elif data.get("position"):
            self.latencies.append(now - data["position"]["at"])


def clients_main(
    port: int, urls: list[tuple[str, str, str | None]], seconds: float, conn: Any
) -> None:
    """One process of clients: connect them all, say so, measure from the start time
    received until ``seconds`` later, send back what they received."""
    _raise_fd_limit()
    stats = ClientStats(len(urls))

    async def body() -> None:
        loop = asyncio.get_running_loop()
        transports = []
        for start in range(0, len(urls), 100):
            batch = []
            for i in range(start, min(start + 100, len(urls))):
                path = urls[i][1]
                transport, client = await loop.create_connection(
                    lambda i=i, path=path: FeedClient(i, path, port, stats), "127.0.0.1", port
                )
                transports.append(transport)
                batch.append(client.opened)
            await asyncio.wait_for(asyncio.gather(*batch), 60)
        conn.send(("connected", len(transports)))
        start_at = await loop.run_in_executor(None, conn.recv)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stats.measuring = True
        await asyncio.sleep(seconds + 0.5)
        stats.measuring = False
        stats.closing = True
        for transport in transports:
            transport.abort()

    asyncio.run(body())
    conn.send(
        {
            "latencies": stats.latencies,
            "frames": stats.frames,
            "deltas": stats.deltas,
            "lost": stats.lost,
        }
    )


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


def run_load(
    server: Any, data_dir: Path, key: bytes, urls: list[tuple[str, str, str | None]],
    pings: list[tuple[str, float, float, float, float]], args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """One run: ``server`` (the gateway's or the anchor's main) on ``data_dir``, the clients
    connected, the pings fed for ``args.seconds``; what each process measured."""
    ctx = mp.get_context("spawn")
    gw_end, gw_child = ctx.Pipe()
    gw = ctx.Process(target=server, args=(str(data_dir), key, gw_child))
    gw.start()
    port = gw_end.recv()
    rss_before = _rss_kib(gw.pid)  # type: ignore[arg-type]

    began = time.perf_counter()
    n_procs = max(1, min(args.client_processes, len(urls)))
    shares = [urls[k::n_procs] for k in range(n_procs)]
    client_ends, client_procs = [], []
    for share in shares:
        cl_end, cl_child = ctx.Pipe()
        proc = ctx.Process(target=clients_main, args=(port, share, args.seconds, cl_child))
        proc.start()
        client_ends.append(cl_end)
        client_procs.append(proc)
    connected = sum(cl_end.recv()[1] for cl_end in client_ends)
    connect_s = time.perf_counter() - began
    time.sleep(1.0)
    rss_after = _rss_kib(gw.pid)  # type: ignore[arg-type]
    start_at = time.time() + 2.0
    for cl_end in client_ends:
        cl_end.send(start_at)
    fd_end, fd_child = ctx.Pipe()
    feeder = ctx.Process(
        target=feeder_main,
        args=(str(data_dir), pings, args.rate, args.seconds, start_at, fd_child),
    )
    feeder.start()
    pids = {"gateway": gw.pid, "feeder": feeder.pid}
    pids.update({f"clients {k + 1}": proc.pid for k, proc in enumerate(client_procs)})
    time.sleep(max(0.0, start_at - time.time()))
    cpu_before = {name: _cpu_s(pid) for name, pid in pids.items()}  # type: ignore[arg-type]
    time.sleep(args.seconds)
    cpu = {n: _cpu_s(pid) - cpu_before[n] for n, pid in pids.items()}  # type: ignore[arg-type]
    fed = fd_end.recv()
    results = [cl_end.recv() for cl_end in client_ends]
    feeder.join()
    for proc in client_procs:
        proc.join()
    gw_end.send("stop")
    metrics, gw_lags = gw_end.recv()
    gw.join()

    lat = sorted(x for r in results for x in r["latencies"])
    per_tech = fed["per_tech"]
    starved = sum(
        1
        for share, r in zip(shares, results, strict=True)
        for (kind, _, tid), d in zip(share, r["deltas"], strict=True)
        if kind == "customer" and d == 0 and tid is not None and per_tech.get(tid, 0) > 0
    )
    return {
        "connected": connected,
        "connect_s": connect_s,
        "rss": (rss_before, rss_after),
        "fed": fed,
        "latencies": lat,
        "q": statistics.quantiles(lat, n=100) if len(lat) >= 100 else [float("nan")] * 99,
        "frames": sum(sum(r["frames"]) for r in results),
        "deltas": [d for r in results for d in r["deltas"]] or [0],
        "starved": starved,
        "lost": sum(r["lost"] for r in results),
        "cpu": cpu,
        "metrics": metrics,
        "gw_lags": gw_lags,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=5000, help="pings offered per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--client-processes", type=int, default=2, help="processes the clients are spread over"
    )
    parser.add_argument("--no-anchor", action="store_true", help="skip the naive anchor's run")
    args = parser.parse_args()
    n_dispatchers = max(1, args.clients // 20)
    n_customers = args.clients - n_dispatchers
    key = os.urandom(32)
    with tempfile.TemporaryDirectory(prefix="fieldstream-bench-gw-") as tmp:
        data_dir = Path(tmp) / "gateway"
        data_dir.mkdir()
        pings, urls = prepare(data_dir, key, n_customers, n_dispatchers)
        # Skip the early morning: start where most technicians are out driving.
        pings = pings[len(pings) // 4 :]
        needed = int(args.rate * args.seconds) + args.rate
        pings = pings[:needed]
        anchor_dir = Path(tmp) / "anchor"
        shutil.copytree(data_dir, anchor_dir)  # the anchor starts from the same log
        ours = run_load(gateway_main, data_dir, key, urls, pings, args)
        naive = None
        if not args.no_anchor:
            naive = run_load(naive_gateway_main, anchor_dir, key, urls, pings, args)

    rss_before, rss_after = ours["rss"]
    connected = ours["connected"]
    print(
        f"{connected:,} clients connected in {ours['connect_s']:.1f} s "
        f"({n_customers:,} customer feeds, {n_dispatchers} dispatcher feeds)"
    )
    fed = ours["fed"]
    print(
        f"pings offered: {fed['offered']:,} in {fed['seconds']:.1f} s "
        f"= {fed['offered'] / fed['seconds']:,.0f}/s"
    )
    q, lat = ours["q"], ours["latencies"]
    print(
        f"latency ping append -> frame at client: p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, "
        f"max {lat[-1]:.1f} ms over {len(lat):,} positions received"
    )
    appends = sorted(fed["appends"])
    aq = statistics.quantiles(appends, n=100)
    print(
        f"  stamped -> appended (the feeder: encode, validate, commit): p50 {aq[49]:.1f} ms, "
        f"p99 {aq[98]:.1f} ms, max {appends[-1]:.1f} ms"
    )
    gw_lags = sorted(x for x in ours["gw_lags"] if x < 600_000)  # not the seeded positions
    if len(gw_lags) >= 100:
        gq = statistics.quantiles(gw_lags, n=100)
        print(
            f"  stamped -> end of the gateway's fan-out pass that wrote it: p50 {gq[49]:.1f} ms, "
            f"p99 {gq[98]:.1f} ms, max {gw_lags[-1]:.1f} ms"
        )
    deltas = ours["deltas"]
    print(
        f"frames delivered: {ours['frames']:,} in {args.seconds:.0f} s = "
        f"{ours['frames'] / args.seconds:,.0f}/s; deltas per client min "
        f"{min(deltas)}, median {statistics.median(deltas):.0f}"
    )
    print(
        f"gateway memory: {rss_before / 1024:.0f} MiB before clients, "
        f"{rss_after / 1024:.0f} MiB with {connected:,} connected = "
        f"{(rss_after - rss_before) / max(1, connected):.0f} KiB per connection"
    )
    print(
        "CPU during the run: "
        + ", ".join(f"{n} {c / args.seconds:.0%}" for n, c in ours["cpu"].items())
        + " of one core"
    )
    print(
        f"starved clients (their technician pinged, no frame): {ours['starved']}; "
        f"connections lost during the run: {ours['lost']}"
    )
    overflow = [
        line
        for line in ours["metrics"].splitlines()
        if line.startswith("fieldstream_ws_overflows_total")
    ]
    print("overflows:", ", ".join(overflow) or "none")
    if naive is None:
        return
    nq, nlat = naive["q"], naive["latencies"]
    print(
        f"naive websockets fan-out (anchor), the same load: p50 {nq[49]:.1f} ms, "
        f"p99 {nq[98]:.1f} ms, max {nlat[-1] if nlat else float('nan'):.1f} ms over "
        f"{len(nlat):,} positions received; frames delivered "
        f"{naive['frames'] / args.seconds:,.0f}/s; starved clients {naive['starved']}; "
        f"server process CPU "
        f"{naive['cpu']['gateway'] / args.seconds:.0%} of one core"
    )
    print(
        f"gateway vs the anchor: p99 latency {nq[98] / q[98]:.1f}x lower, "
        f"frames delivered {ours['frames'] / max(1, naive['frames']):.2f}x, server CPU "
        f"{ours['cpu']['gateway'] / max(1e-9, naive['cpu']['gateway']):.2f}x the anchor's"
    )


if __name__ == "__main__":
    main()
