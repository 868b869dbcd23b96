"""Benchmark: the aggregate stages over a simulated event mix, against the naive anchor.

Run by hand:  .venv/bin/python benchmarks/bench_pipeline.py [--technicians N]

1. A simulated day (about 95% GPS pings) is ingested into a fresh embedded log (not timed).
2. Timed: the workorders and fleet stages process the whole log from scratch (decode, decide,
   persist facts and offsets per batch with the eventsourcing library on SQLite, publish
   derived events). Reported as events of the mix per second (each input event once, however
   many stages and internal topics it passes through), and as records handled per second
   (the input events plus the internal re-keyed records the fleet stage reads).
3. Timed: the same stages over the non-ping events alone.
4. Timed, in the same run, the anchor: the same non-ping events applied the naive way with the
   eventsourcing library: for each event, repository.get (or create), one method call, save.
Ratios are printed against the issue's targets (>= 200k events/s for the mix; non-ping events
>= 10x the naive anchor).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event

from eta_engine.roads import RoadGraph
from events.codec import decode
from gateway.feed import Clock, feed
from simulator import encoded_lines, make_params, simulate
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.pipeline import run_until_idle
from streams.state_store import SqliteStateStore


class NaiveOrder(Aggregate):
    """The anchor's aggregate: one event per input, the library's decorators throughout."""

    @event("Created")
    def __init__(self, work_order_id: str) -> None:
        self.work_order_id = work_order_id
        self.history: list[str] = []

    @event("Recorded")
    def record(self, kind: str, data: dict[str, Any]) -> None:
        self.history.append(kind)


class NaiveApp(Application[UUID]):
    pass


def naive(events: list[Any], path: Path) -> float:
    os.environ["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
    os.environ["SQLITE_DBNAME"] = str(path)
    app = NaiveApp()
    began = time.perf_counter()
    for ev in events:
        key = getattr(ev, "work_order_id", None) or getattr(ev, "technician_id", "")
        agg_id = uuid5(NAMESPACE_URL, key)
        try:
            agg = app.repository.get(agg_id)
        except AggregateNotFoundError:
            agg = NaiveOrder(work_order_id=key)
            agg._id = agg_id
            for pending in agg.pending_events:
                object.__setattr__(pending, "originator_id", agg_id)
        agg.record(kind=ev.type, data={"id": ev.id})
        app.save(agg)
    return time.perf_counter() - began


async def stages_over(lines: list[tuple[int, bytes]], directory: Path) -> tuple[int, float]:
    log = await open_log(Config(data_dir=directory))
    await feed(log, lines, clock=Clock(None))
    store = SqliteStateStore.in_dir(directory)
    # The aggregate stages only (work orders and the fleet): the ETA stage has its own bench.
    stages = build_stages(log, store, Config(data_dir=directory))[:2]
    began = time.perf_counter()
    processed = await run_until_idle(stages)
    seconds = time.perf_counter() - began
    store.close()
    await log.close()
    return processed, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--technicians", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sim = simulate(
        make_params("normal", technicians=args.technicians, seed=args.seed), RoadGraph.default()
    )
    lines = list(encoded_lines(sim))
    non_ping = [(t, raw) for t, raw in lines if b'"type":"GpsPinged"' not in raw]
    share = 1 - len(non_ping) / len(lines)
    print(
        f"simulated day: {args.technicians} technicians, {len(lines):,} events, {share:.1%} pings"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n, s = asyncio.run(stages_over(lines, root / "mix"))
        mix_rate = len(lines) / s
        print(
            f"aggregate stages, mix        {len(lines):>10,} events   {s:7.2f} s  "
            f"{mix_rate:>10,.0f} events/s  ({n / s:,.0f} records/s)"
            f"   target >= 200,000/s: {'ok' if mix_rate >= 200_000 else 'MISSED'}"
        )
        n2, s2 = asyncio.run(stages_over(non_ping, root / "nonping"))
        ours = len(non_ping) / s2
        print(
            f"aggregate stages, non-ping   {len(non_ping):>10,} events   {s2:7.2f} s  "
            f"{ours:>10,.0f} events/s  ({n2 / s2:,.0f} records/s)"
        )
        events = [decode(raw) for _, raw in non_ping]
        s3 = naive(events, root / "naive.sqlite3")
        anchor = len(events) / s3
        print(
            f"naive eventsourcing anchor   {len(events):>10,} events   {s3:7.2f} s  "
            f"{anchor:>10,.0f} events/s"
        )
        print(
            f"non-ping / naive anchor: {ours / anchor:.1f}x   target >= 10x: "
            f"{'ok' if ours / anchor >= 10 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
