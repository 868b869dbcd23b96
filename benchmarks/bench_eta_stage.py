"""Pings per second through the ETA stage, end to end, on the embedded log.

Run by hand:  .venv/bin/python benchmarks/bench_eta_stage.py [--technicians N] [--scenario S]

1. A simulated day is ingested into a fresh embedded log, and the aggregate stages (work
   orders, fleet) process it, so fs.by-technician holds the work-order snapshots (not timed).
2. Timed: the ETA stage alone processes fs.gps and fs.by-technician from scratch, on the
   pipeline's event-time grid: reading the log, decoding, the engine (map-matching, fields,
   speed and duration learning, windows, alerts), encoding and appending EtaUpdated and alert
   events, and committing offsets and checkpoints to the SQLite state store.

Prints pings/s (the fs.gps records the stage consumed, per second of the timed run) against
the issue's target of 50,000/s, the records and outputs it handled, and the process's CPU
time over the timed run (on a shared machine the wall time also counts other processes').
Then, timed in the same run, the anchor (benchmarks/anchors.py): the naive ETA, a
shortest-path search per ping, over 300 of the day's pings sent on the way to a job.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anchors import en_route_pings, naive_eta_rate

from eta_engine.roads import RoadGraph
from gateway.feed import Clock, feed
from simulator import encoded_lines, make_params, simulate
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.pipeline import run_until_idle
from streams.state_store import SqliteStateStore

TARGET = 50_000


async def prepare(lines: list[tuple[int, bytes]], directory: Path, graph: RoadGraph) -> None:
    config = Config(data_dir=directory)
    log = await open_log(config)
    await feed(log, lines, clock=Clock(None))
    store = SqliteStateStore.in_dir(directory)
    await run_until_idle(build_stages(log, store, config, graph)[:2])
    store.close()
    await log.close()


async def timed(
    directory: Path, graph: RoadGraph, profile: bool = False
) -> tuple[dict[str, int], float, float]:
    config = Config(data_dir=directory)
    log = await open_log(config)
    store = SqliteStateStore.in_dir(directory)
    eta = build_stages(log, store, config, graph)[-1]
    await eta.start()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    began, began_cpu = time.perf_counter(), time.process_time()
    await run_until_idle([eta])
    seconds = time.perf_counter() - began
    cpu = time.process_time() - began_cpu
    if profiler is not None:
        profiler.disable()
        profiler.print_stats("tottime")
    totals = dict(eta.totals)
    totals["pings"] = sum(
        b - a
        for _, ranges in store.batches(eta.name)
        for name, (a, b) in ranges.items()
        if name.startswith("fs.gps/")
    )
    store.close()
    await log.close()
    return totals, seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--technicians", type=int, default=300)
    parser.add_argument("--scenario", default="normal")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the timed part")
    parser.add_argument(
        "--anchor-pings", type=int, default=300, help="pings the naive anchor is timed on"
    )
    args = parser.parse_args()
    graph = RoadGraph.default()
    sim = simulate(make_params(args.scenario, technicians=args.technicians, seed=args.seed), graph)
    lines = list(encoded_lines(sim))
    print(f"simulated day: {args.scenario}, {args.technicians} technicians, {len(lines):,} events")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        asyncio.run(prepare(lines, directory, graph))
        totals, seconds, cpu = asyncio.run(timed(directory, graph, args.profile))
    pings = totals["pings"]
    rate = pings / seconds
    print(
        f"eta stage end to end: {pings:,} pings ({totals.get('records', 0):,} records, "
        f"{totals.get('EtaUpdated', 0):,} EtaUpdated, "
        f"{totals.get('LateAlertRaised', 0):,} alerts raised) in {seconds:.2f} s "
        f"({cpu:.2f} s CPU): "
        f"{rate:,.0f} pings/s   target >= {TARGET:,}/s: {'ok' if rate >= TARGET else 'MISSED'}"
    )
    n_naive, naive = naive_eta_rate(graph, en_route_pings(sim), args.anchor_pings)
    print(
        f"naive anchor (a shortest-path search per ping, for the day's pings on the way to a "
        f"job): {n_naive:,} pings, {naive:,.0f}/s; the stage {rate / naive:,.0f}x the anchor"
    )


if __name__ == "__main__":
    main()
