"""The aggregate stages over a simulated day, on both stores and both logs."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from events import kinds as k
from events.catalog import DERIVED_TOPICS, DLQ, DLQ_MESSAGE, DLQ_RULE
from events.codec import decode, encode
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.log import Log
from streams.pipeline import run_until_idle
from streams.stages import FleetProcessor, WorkOrderProcessor
from streams.state_store import PostgresStateStore, SqliteStateStore, StateStore
from tests.support import (
    embedded_day,
    ingest_day,
    process,
    read_all,
    run,
    run_python,
    simulated_day,
    start_python,
    states,
)


def _check_day(log: Log, stages: list[Any]) -> None:
    async def body() -> None:
        dead = await read_all(log, DLQ.name)
        reasons = [dict(r.headers)[DLQ_MESSAGE].decode() for r in dead]
        assert dead == [], f"unexpected rejections: {reasons[:5]}"

    run(body())
    sim = simulated_day()
    orders = stages[0].processor.orders
    for row in sim.truth:
        order = orders[row["work_order_id"]]
        visit = order.visits[row["visit"] - 1]
        assert visit.arrived_at is not None, row
        if not row["arrival_tapped"]:
            assert visit.arrived_by == "geofence", row
            # detected from the first fix inside the fence: within a few fixes of the truth
            assert abs(visit.arrived_at - row["arrival_ms"]) < 3 * 60_000, row


def test_a_simulated_day_runs_with_no_unexpected_rejection(tmp_path: Path) -> None:
    async def body() -> tuple[Log, list[Any], SqliteStateStore]:
        log = await embedded_day(tmp_path, simulated_day())
        store = SqliteStateStore.in_dir(tmp_path)
        return log, await process(log, store, Config(data_dir=tmp_path)), store

    log, stages, store = run(body())
    _check_day(log, stages)
    assert stages[1].totals["pings"] > 1000
    # Parts reported missing on site reach the technician's stream (the ETA engine's input),
    # keyed by the technician, and the fleet stage passes over them.
    rekeyed = [
        (r.key, decode(r.value))
        for r in run(read_all(log, "fs.by-technician"))
        if b'"type":"PartMissing"' in r.value
    ]
    assert rekeyed
    assert all(
        isinstance(e, k.PartMissing) and key == e.technician_id.encode() for key, e in rekeyed
    )
    assert stages[1].totals["ignored"] >= len(rekeyed)
    run(log.close())
    store.close()


def _rebuild_equals_incremental(tmp_path: Path, make_store: Any) -> None:
    async def body() -> None:
        log = await embedded_day(tmp_path, simulated_day())
        store: StateStore = make_store()
        config = Config(data_dir=tmp_path, batch_size=3_000)
        stages = await process(log, store, config)
        incremental = states(stages)
        # a fresh process restoring everything from the store
        restored = build_stages(log, store, config)
        for stage in restored:
            await stage.start()
        assert states(restored) == incremental
        # and the derived changelog decodes to the same final snapshots
        changelog = {}
        for record in await read_all(log, "fs.workorders"):
            event = decode(record.value)
            assert isinstance(event, k.WorkOrderStateChanged)
            changelog[event.work_order_id] = event.status
        assert changelog == {o: s["status"] for o, s in incremental["orders"].items()}
        store.close()
        await log.close()

    run(body())


def test_rebuild_equals_incremental_on_sqlite(tmp_path: Path) -> None:
    _rebuild_equals_incremental(tmp_path, lambda: SqliteStateStore.in_dir(tmp_path))


@pytest.mark.postgres
def test_rebuild_equals_incremental_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    _rebuild_equals_incremental(tmp_path, lambda: PostgresStateStore(postgres_url))


@pytest.mark.kafka
def test_the_same_stages_on_kafka_give_the_same_state(tmp_path: Path, kafka_bootstrap: str) -> None:
    from streams.kafka import KafkaLog
    from tests.streams.kafka_broker import start_broker

    # A broker of its own: the stages use the catalog's topic names, which must start empty.
    broker = start_broker()

    async def body() -> None:
        sim = simulated_day()
        kafka = await open_log(Config(data_dir=tmp_path / "kafka", kafka=broker.bootstrap))
        assert isinstance(kafka, KafkaLog)
        await ingest_day(kafka, sim)
        store = SqliteStateStore.in_dir(tmp_path / "kafka")
        kafka_stages = await process(kafka, store, Config(data_dir=tmp_path / "kafka"))
        embedded = await embedded_day(tmp_path / "embedded", sim)
        store2 = SqliteStateStore.in_dir(tmp_path / "embedded")
        embedded_stages = await process(embedded, store2, Config(data_dir=tmp_path / "e"))
        assert states(kafka_stages) == states(embedded_stages)
        assert await read_all(kafka, DLQ.name) == []
        store.close()
        store2.close()
        await kafka.close()
        await embedded.close()

    try:
        run(body())
    finally:
        broker.stop()


def test_illegal_and_late_events_reach_the_dlq_with_their_reason(tmp_path: Path) -> None:
    t0 = 1_795_400_000_000
    minute = 60_000

    def ev(cls: type[k.Event], n: int, at: int, **data: Any) -> bytes:
        return encode(cls(id=f"x{n}", source="test", time=t0 + at * minute, subject="WO-1", **data))

    booking = dict(
        work_order_id="WO-1",
        customer_id="C",
        site_lat=42.5,
        site_lon=1.5,
        address="a",
        region="r",
        job_type="j",
        required_skills=["gas"],
        parts_kit={},
        window_start=t0,
        window_end=t0 + 7200_000,
        priority="normal",
        maintenance="reactive",
        value=1.0,
        first_contact_time=t0 - 1,
    )
    lines = [
        encode(
            k.TechnicianRegistered(
                id="r1",
                source="t",
                time=t0,
                subject="T-1",
                technician_id="T-1",
                name="A",
                skills=("hvac",),
                team="x",
                region="r",
                home_lat=42.5,
                home_lon=1.5,
            )
        ),
        ev(k.WorkOrderBooked, 1, 0, **booking),
        ev(k.TechnicianArrived, 2, 1, work_order_id="WO-1", technician_id="T-1"),
        ev(k.TechnicianAssigned, 3, 2, work_order_id="WO-1", technician_id="T-1"),
        ev(
            k.CustomerContacted,
            5,
            60,
            work_order_id="WO-1",
            customer_id="C",
            channel="phone",
            reason="other",
        ),
        ev(
            k.CustomerContacted,
            6,
            10,
            work_order_id="WO-1",
            customer_id="C",
            channel="phone",
            reason="other",
        ),
    ]

    async def body() -> dict[str, str]:
        log = await open_log(Config(data_dir=tmp_path))
        from gateway.feed import Clock, feed

        await feed(log, [(t0 + 10**8, line) for line in lines], clock=Clock(None))
        store = SqliteStateStore.in_dir(tmp_path)
        await run_until_idle(build_stages(log, store, Config(data_dir=tmp_path)))
        dead = await read_all(log, DLQ.name)
        out = {}
        for r in dead:
            headers = dict(r.headers)
            out[orjson.loads(r.value)["id"]] = (
                f"{headers[DLQ_RULE].decode()}: {headers[DLQ_MESSAGE].decode()}"
            )
        store.close()
        await log.close()
        return out

    dead = run(body())
    assert dead["x3"].startswith("missing_skill:")
    assert dead["x2"].startswith("illegal_transition:") and "before any assignment" in dead["x2"]
    assert dead["x6"].startswith("too_late:")
    assert set(dead) == {"x2", "x3", "x6"}


KILL_RUNNER = """
import asyncio, sys
from pathlib import Path
from streams.bootstrap import build_stages, open_log, open_state_store
from streams.config import Config
from streams.pipeline import run_until_idle

async def main(data_dir):
    config = Config(data_dir=Path(data_dir), batch_size=400)
    log = await open_log(config)
    store = open_state_store(config.data_dir, None)
    stages = build_stages(log, store, config)
    # Batches are committed in groups (several rounds in one transaction); their outputs are
    # appended one batch at a time before. Say when each happens, to be killed after either.
    commit_many, append = store.commit_many, log.append
    def committed(*args, **kwargs):
        commit_many(*args, **kwargs)
        print("committed", flush=True)
    async def appended(*args, **kwargs):
        out = await append(*args, **kwargs)
        print("appended", flush=True)
        return out
    store.commit_many, log.append = committed, appended
    await run_until_idle(stages)
    print("done", flush=True)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize(
    ("what", "kill_after"), [("appended", 5), ("appended", 60), ("committed", 1), ("committed", 2)]
)
def test_kill_9_mid_run_then_restart_equals_a_clean_run(
    tmp_path: Path, what: str, kill_after: int
) -> None:
    sim = simulated_day()
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"

    async def prepare(directory: Path) -> None:
        log = await embedded_day(directory, sim)
        await log.close()

    run(prepare(crashed))
    run(prepare(clean))
    proc = start_python(KILL_RUNNER, str(crashed))
    assert proc.stdout is not None
    seen = 0
    while seen < kill_after:
        line = proc.stdout.readline()
        assert line, "the runner ended before it could be killed"
        seen += line.startswith(what)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_python(KILL_RUNNER, str(crashed))  # the restart
    run_python(KILL_RUNNER, str(clean))

    async def final(
        directory: Path,
    ) -> tuple[dict[str, Any], list[str], dict[str, list[tuple[Any, ...]]]]:
        log = await open_log(Config(data_dir=directory))
        store = SqliteStateStore.in_dir(directory)
        stages = build_stages(log, store, Config(data_dir=directory))
        for stage in stages:
            await stage.start()
        applied = [
            f"{kind}:{f.originator_id}:{f.event_id}"
            for kind in ("workorder", "technician")
            for f in store.all_facts(kind)
        ]
        derived = {
            topic: [r[1:] for r in await read_all(log, topic)]
            for topic in (*(t.name for t in DERIVED_TOPICS), DLQ.name, "fs.by-technician")
        }
        store.close()
        await log.close()
        return states(stages), applied, derived

    crashed_state, crashed_applied, crashed_log = run(final(crashed))
    clean_state, clean_applied, clean_log = run(final(clean))
    assert len(crashed_applied) == len(set(crashed_applied)), "an event was applied twice"
    assert sorted(crashed_applied) == sorted(clean_applied), "an event was lost or added"
    assert crashed_state == clean_state
    # The batches the crash cut short were processed again without appending their outputs
    # a second time: every derived topic is the clean run's, record for record.
    assert sum(map(len, clean_log.values())) > 1000
    for topic, records in clean_log.items():
        assert crashed_log[topic] == records, topic


def test_processors_never_raise_on_garbage() -> None:
    from streams.log import Record

    records = [
        Record("fs.status", 0, 0, 1, b"k", b"\xff\xfe"),
        Record("fs.bookings", 0, 1, 2, None, b'{"type":"WorkOrderBooked"}'),
        Record("fs.gps", 0, 0, 3, None, b"[]"),
        Record("fs.by-technician", 0, 0, 4, b"T", b'{"type": 5}'),
    ]
    out1 = WorkOrderProcessor().process(records[:2])
    out2 = FleetProcessor().process(records[2:])
    assert len([o for o in out1.outputs if o.topic == DLQ.name]) == 2
    assert len([o for o in out2.outputs if o.topic == DLQ.name]) == 2
