"""Benchmark: the projection stage (KPI tables, visit facts, live view) over a simulated log.

Run by hand:

    .venv/bin/python benchmarks/bench_projections.py                 # 1 day, 100 technicians
    .venv/bin/python benchmarks/bench_projections.py --days 7 --technicians 500   # the issue's week
    .venv/bin/python benchmarks/bench_projections.py --full          # same as the line above

1. Not timed: simulated days (one per date, consecutive, the same technicians every day) are
   ingested into a fresh embedded log and the pipeline's upstream stages (work orders, fleet,
   ETA engine) run over them, so the log holds everything the projection reads (inputs,
   snapshots, ETAs, alerts).
2. Timed, "live": the projection stage alone, from an empty store, over the whole log in the
   pipeline's 5-minute event-time windows (what ``fieldstream process`` does while catching
   up, and ``fieldstream replay`` when it rebuilds): while records beyond a window are
   already read ahead, the stage takes several windows and folds, flushes and commits them
   together (up to 300,000 records, CATCHUP_RECORDS, never across a day close), committing
   only its small "read" mark per window (see streams/projection_stage.py).
3. Timed, "rebuild": the same from an empty store, stepped without windows, ``--batch``
   records a step, each step flushed and committed on its own.
4. Timed, in the same run, the anchor: the eventsourcing library's projection pattern done
   the naive way, one event at a time: decode it, update its view row (a count per day, key
   and event type) and record its tracking position, in one SQLite transaction per event
   (what a ``ProjectionRunner``'s ``process_event`` does), over ``--anchor-records`` records
   spread evenly over the log. It keeps far less than the projection does, so the ratio
   understates ours; it is there to show what this machine does today.
5. Timed, the read floor: every record the projection reads, read once, as it reads them
   (pings a column at a time), with nothing done with them: a lower bound on any run,
   printed against the time the target allows. Then the decode and write floor: the same
   read with each value decoded once (orjson), plus every row of the rebuilt store inserted
   once into an empty copy of its tables (one transaction): what any projection of these
   JSON events into these tables pays before it computes anything.
All report records projected per second (the target is >= 200,000 events/s on the mix,
about 95% GPS pings); the projection's runs also report the wall time of the whole log.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from anchors import read_once, write_once
from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder

from eta_engine.roads import RoadGraph
from events.catalog import INPUT_TOPICS
from gateway.feed import Clock, feed
from projections.fold import TOPICS
from simulator import encoded_lines, make_params, simulate
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.log import Log
from streams.pipeline import run_until_idle
from streams.projection_stage import COLUMNAR, ProjectionStage, build_projection_stage
from streams.projection_store import STORE_FILE
from streams.replay import read_records
from streams.state_store import SqliteStateStore

TARGET = 200_000


async def prepare(directory: Path, technicians: int, days: int, seed: int) -> tuple[Log, int]:
    graph = RoadGraph.default()
    config = Config(data_dir=directory)
    log = await open_log(config)
    events = 0
    began = time.perf_counter()
    for i in range(days):
        day = date(2026, 11, 23) + timedelta(days=i)
        # One workforce all week (the technicians of a seed), each day its own demand.
        sim = simulate(make_params("normal", technicians=technicians, seed=seed + i,
                                   start_date=day, workforce_seed=seed), graph)  # fmt: skip
        report = await feed(log, encoded_lines(sim), clock=Clock(None))
        events += report.accepted
        print(f"  simulated and ingested {day}: {report.accepted:,} events", flush=True)
    print(f"  ingest done in {time.perf_counter() - began:.1f} s", flush=True)
    began = time.perf_counter()
    store = SqliteStateStore.in_dir(directory)
    upstream = [s for s in build_stages(log, store, config, graph) if s.name != "projections"]
    await run_until_idle(upstream, parallel=True)  # not timed: the ETA stage on a core of its own
    store.close()
    print(f"  upstream stages (work orders, fleet, ETA) in {time.perf_counter() - began:.1f} s")
    return log, events


class NaiveView(SQLiteTrackingRecorder):
    """The anchor's view: how many records of each event type were seen per day and key."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS naive_counts (day INTEGER, subject TEXT, kind TEXT, "
            "n INTEGER, PRIMARY KEY (day, subject, kind)) WITHOUT ROWID",
        ]

    def count(self, day: int, subject: str, kind: str, tracking: Tracking) -> None:
        """One event: its view row and its tracking position, in one transaction."""
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "INSERT INTO naive_counts VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1",
                (day, subject, kind),
            )
            self._insert_tracking(cursor, tracking)


async def naive(log: Log, path: Path, limit: int) -> tuple[int, float]:
    """The anchor (see 4.) over ``limit`` of the log's records, evenly spread (read before
    the clock starts). Returns the records done and the seconds."""
    everything = [r for topic in TOPICS for r in await read_records(log, topic)]
    step = max(1, len(everything) // max(1, limit))
    sample = everything[::step][:limit]
    sample.sort(key=lambda r: (r.topic, r.partition, r.offset))  # each position moves forward
    view = NaiveView(SQLiteDatastore(str(path)))
    view.create_table()
    began = time.perf_counter()
    for record in sample:
        kind = orjson.loads(record.value)["type"]
        view.count(
            record.timestamp_ms // 86_400_000,
            (record.key or b"").decode(),
            kind,
            Tracking(f"{record.topic}/{record.partition}", record.offset + 1),
        )
    seconds = time.perf_counter() - began
    view.datastore.pool.close()
    return len(sample), seconds


def fresh(directory: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (directory / f"{STORE_FILE}{suffix}").unlink(missing_ok=True)


async def timed(log: Log, directory: Path, batch: int | None) -> tuple[int, float, ProjectionStage]:
    fresh(directory)
    config = Config(data_dir=directory, batch_size=batch or 20_000)
    stage = build_projection_stage(log, config)
    if batch is not None:
        stage.catchup_batch = batch  # one transaction per batch
    began = time.perf_counter()
    if batch is None:
        n = await stage.run_until_idle()
    else:
        n = 0
        while True:
            done = (await stage.step(None)).records
            if not done:
                break
            n += done
    return n, time.perf_counter() - began, stage


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--technicians", type=int, default=100)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--batch", type=int, default=100_000, help="records per rebuild batch")
    parser.add_argument("--full", action="store_true", help="the issue's week: 7 days, 500 techs")
    parser.add_argument(
        "--anchor-records", type=int, default=5_000, help="records the naive anchor projects"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="keep the prepared log here, and reuse it if it exists"
    )
    args = parser.parse_args()
    if args.full:
        args.technicians, args.days = 500, 7
    print(f"projection benchmark: {args.days} day(s) x {args.technicians} technicians")
    with tempfile.TemporaryDirectory(prefix="fieldstream-bench-proj-") as tmp:
        directory = args.data_dir or Path(tmp)
        if (directory / "log.sqlite3").exists():
            log = await open_log(Config(data_dir=directory), create_topics=False)
            events = 0
            for topic in INPUT_TOPICS:
                events += sum((await log.end_offsets(topic.name)).values())
            print(f"  reusing the log in {directory}")
        else:
            log, events = await prepare(directory, args.technicians, args.days, args.seed)
        rates = []
        for label, batch in (
            ("live (5-min windows)", None),
            (f"rebuild ({args.batch:,}/batch)", args.batch),
        ):
            n, seconds, stage = await timed(log, directory, batch)
            rate = n / seconds
            rates.append(rate)
            kpi_rows = len(stage.store.kpi_rows()) if stage.store is not None else 0
            stage.close()
            print(
                f"projections {label}: {n:,} records in {seconds:.2f} s = {rate:,.0f} records/s "
                f"({rate / TARGET:.2f}x the 200k/s target); {kpi_rows:,} KPI rows"
            )
        with tempfile.TemporaryDirectory(prefix="fieldstream-bench-naive-") as naive_dir:
            n, seconds = await naive(log, Path(naive_dir) / "naive.sqlite3", args.anchor_records)
        anchor = n / seconds
        print(
            f"naive eventsourcing projection (anchor): {n:,} records in {seconds:.2f} s = "
            f"{anchor:,.0f} records/s; live {rates[0] / anchor:.1f}x, "
            f"rebuild {rates[1] / anchor:.1f}x the anchor"
        )
        began = time.perf_counter()
        n = await read_once(log, TOPICS, COLUMNAR)
        read = time.perf_counter() - began
        allowed = n / TARGET
        print(
            f"read floor: {n:,} records read once, nothing done with them, in {read:.2f} s, "
            f"{read / allowed:.2f}x the {allowed:.2f} s the 200k/s target allows the whole run"
        )
        began = time.perf_counter()
        await read_once(log, TOPICS, COLUMNAR, decode=True)
        decoded = time.perf_counter() - began
        with tempfile.TemporaryDirectory(prefix="fieldstream-bench-write-") as write_dir:
            rows, written = write_once(directory / STORE_FILE, Path(write_dir) / "floor.sqlite3")
        floor = decoded + written
        print(
            f"decode and write floor: the same records read and decoded once (orjson) in "
            f"{decoded:.2f} s, the store's {rows:,} rows inserted once in {written:.2f} s: "
            f"{floor:.2f} s, {floor / allowed:.2f}x the {allowed:.2f} s allowed, leaving "
            f"{max(0.0, allowed - floor):.2f} s for the projection's own work"
        )
        print(f"input events in the log: {events:,}")
        await log.close()


if __name__ == "__main__":
    asyncio.run(main())
