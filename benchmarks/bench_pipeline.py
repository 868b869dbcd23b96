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
5. Timed, the I/O floor of the mix: the log and store work the stages' design requires, with
   no processing at all: every record the stages read, read once (pings a column at a time,
   as the fleet stage reads them); every record they appended, appended again to a fresh log
   (5,000 a call, one sync); every fact they stored, committed again to a fresh state store
   (one transaction per hour of event time, as the group commit does). A lower bound on any
   run of these stages on this machine, printed against the time the mix target allows.
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

from anchors import read_once
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event

from eta_engine.roads import RoadGraph
from events.codec import decode
from gateway.feed import Clock, feed
from simulator import encoded_lines, make_params, simulate
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.log import OutRecord
from streams.pipeline import GROUP_ROUNDS, HORIZON_STEP_MS, run_until_idle
from streams.replay import read_records
from streams.stages import FleetProcessor, WorkOrderProcessor
from streams.state_store import SqliteStateStore, StageCommit

TARGET = 200_000


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


async def io_floor(
    directory: Path, floor_dir: Path, hours: int
) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds and counts of the I/O the stages did in ``directory`` (see 5.): records read,
    records appended, facts committed."""
    log = await open_log(Config(data_dir=directory), create_topics=False)
    inputs = dict.fromkeys((*WorkOrderProcessor.inputs, *FleetProcessor.inputs))
    began = time.perf_counter()
    n_read = await read_once(log, inputs, {FleetProcessor.columnar})
    read = time.perf_counter() - began
    outputs = ("fs.workorders", "fs.by-technician", "fs.geofence", "fs.dlq")
    appended = [
        OutRecord(topic, r.value, r.key, r.timestamp_ms)
        for topic in outputs
        for r in await read_records(log, topic)
    ]
    appended.sort(key=lambda r: r.timestamp_ms)  # as the rounds appended them
    await log.close()
    store = SqliteStateStore.in_dir(directory)
    facts = {kind: list(store.all_facts(kind)) for kind in ("workorder", "technician")}
    store.close()
    floor_dir.mkdir()
    fresh = await open_log(Config(data_dir=floor_dir))
    began = time.perf_counter()
    for i in range(0, len(appended), 5_000):
        await fresh.append(appended[i : i + 5_000], durable=False)
    await fresh.sync()
    append = time.perf_counter() - began
    await fresh.close()
    target = SqliteStateStore.in_dir(floor_dir)
    batches = []
    for kind, all_of_kind in facts.items():
        step = -(-len(all_of_kind) // hours) or 1
        for i in range(0, len(all_of_kind), step):
            batch = len(batches) + 1
            batches.append((kind, all_of_kind[i : i + step], StageCommit(kind, {}, batch, {})))
    began = time.perf_counter()
    for i in range(hours):
        target.commit_many(batches[i::hours])
    commit = time.perf_counter() - began
    target.close()
    seconds = {"read": read, "append": append, "commit": commit}
    counts = {"read": n_read, "append": len(appended), "commit": sum(map(len, facts.values()))}
    return seconds, counts


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
            f"   target >= 200,000/s: {'ok' if mix_rate >= TARGET else 'MISSED'}"
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
        span_ms = max(t for t, _ in lines) - min(t for t, _ in lines)
        hours = max(1, -(-span_ms // (GROUP_ROUNDS * HORIZON_STEP_MS)))
        seconds, counts = asyncio.run(io_floor(root / "mix", root / "floor", hours))
        floor = sum(seconds.values())
        allowed = len(lines) / TARGET
        parts = " + ".join(
            f"{name} {counts[name]:,} {unit} {seconds[name]:.2f} s"
            for name, unit in (("read", "records"), ("append", "records"), ("commit", "facts"))
        )
        print(
            f"I/O floor of the mix, no processing: {parts} = {floor:.2f} s, "
            f"{floor / allowed:.2f}x the {allowed:.2f} s the 200k/s target allows the whole run "
            f"(the stages took {s:.2f} s)"
        )


if __name__ == "__main__":
    main()
