"""The ETA stage in the pipeline: deterministic outputs, across runs and across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from events.catalog import DLQ, DLQ_SOURCE, GPS
from events.codec import decode
from events.kinds import GpsPinged
from gateway.feed import Clock, feed
from simulator import encoded_lines
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.eta_stage import EtaProcessor
from streams.log import Log, OutRecord
from streams.pipeline import CHECKPOINT, HORIZON_STEP_MS, Stage, run_until_idle
from streams.replay import read_topic
from streams.state_store import SqliteStateStore
from tests.support import embedded_day, graph, read_all, run, simulated_day


def _stages(log: Log, store: SqliteStateStore, directory: Path) -> list[Stage]:
    stages = build_stages(log, store, Config(data_dir=directory), graph())
    assert isinstance(stages[-1].processor, EtaProcessor)
    return stages


async def _run(directory: Path, stop_after_rounds: int | None = None) -> None:
    log = await open_log(Config(data_dir=directory))
    store = SqliteStateStore.in_dir(directory)
    stages = _stages(log, store, directory)
    if stop_after_rounds is None:
        await run_until_idle(stages)
    else:
        for _ in range(stop_after_rounds):
            heads = [t for t in [await s.next_time() for s in stages] if t is not None]
            horizon = (min(heads) // HORIZON_STEP_MS + 1) * HORIZON_STEP_MS
            for stage in stages:
                await stage.step(horizon)
    store.close()
    await log.close()


async def _outputs(directory: Path) -> dict[str, list[bytes]]:
    log = await open_log(Config(data_dir=directory))
    try:
        return {t: await read_topic(log, t) for t in ("fs.eta", "fs.alerts")}
    finally:
        await log.close()


def _checkpoint_lag(directory: Path) -> tuple[int, int]:
    """The ETA stage's last committed batch and the batch of its last checkpoint."""
    store = SqliteStateStore.in_dir(directory)
    try:
        state = store.load_stage("eta")
    finally:
        store.close()
    return state.batch, int(state.kv.get(CHECKPOINT, {"batch": 0})["batch"])


@pytest.mark.parametrize("stop_after_rounds", [6, 40])
def test_eta_outputs_are_byte_identical_across_runs_and_a_restart(
    tmp_path: Path, stop_after_rounds: int
) -> None:
    """A restart resumes from the last checkpoint (or, before the first, from the start),
    processes the batches after it again and appends nothing twice."""
    sim = simulated_day()
    dirs = [tmp_path / "a", tmp_path / "b", tmp_path / "restarted"]

    async def body() -> list[dict[str, list[bytes]]]:
        for d in dirs:
            log = await embedded_day(d, sim)
            await log.close()
        await _run(dirs[0])
        await _run(dirs[1])
        await _run(dirs[2], stop_after_rounds=stop_after_rounds)  # a process stops mid-day...
        committed, checkpoint = _checkpoint_lag(dirs[2])
        # ...between two checkpoints, so the restart has batches to process again...
        assert committed > checkpoint
        assert (checkpoint == 0) == (stop_after_rounds == 6)
        await _run(dirs[2])  # ...and a new one resumes from the stored engine state
        return [await _outputs(d) for d in dirs]

    a, b, restarted = run(body())
    assert len(a["fs.eta"]) > 100
    assert a == b
    assert restarted == a


def test_an_unreadable_ping_the_engine_reads_goes_to_the_dead_letters(tmp_path: Path) -> None:
    """Pings reach the engine as columns and are read only when it uses them; one that is
    not what ingest writes goes to fs.dlq with the ETA stage as its source, and the stage
    goes on with the rest of the day."""
    sim = simulated_day()
    row = next(r for r in sim.truth if r["arrival_ms"] - r["en_route_ms"] > 12 * 60_000)
    tech, at = row["technician_id"], row["en_route_ms"] + 6 * 60_000

    def kept(raw: bytes) -> bool:
        # The van's real fixes around ``at`` are left out: the bad one is its newest there,
        # so the engine reads it to place the van.
        if b'"type":"GpsPinged"' not in raw or tech.encode() not in raw:
            return True
        event = decode(raw)
        return not (isinstance(event, GpsPinged) and abs(event.time - at) <= 150_000)

    bad = orjson.dumps({"type": "GpsPinged", "id": "bad-fix", "data": {"lat": "north"}})

    async def body() -> tuple[list[Any], list[bytes]]:
        log = await open_log(Config(data_dir=tmp_path))
        lines = [(t, raw) for t, raw in encoded_lines(sim) if kept(raw)]
        # In its place in the log (a late fix is dropped unread), straight onto the topic,
        # as a producer that skips ingest would write it.
        await feed(log, [(t, raw) for t, raw in lines if t <= at], clock=Clock(None))
        await log.append([OutRecord(GPS.name, bad, tech.encode(), at)])
        await feed(log, [(t, raw) for t, raw in lines if t > at], clock=Clock(None))
        store = SqliteStateStore.in_dir(tmp_path)
        await run_until_idle(_stages(log, store, tmp_path))
        dead = await read_all(log, DLQ.name)
        eta = await read_topic(log, "fs.eta")
        store.close()
        await log.close()
        return dead, eta

    dead, eta = run(body())
    sources = [dict(r.headers)[DLQ_SOURCE].decode() for r in dead if r.value == bad]
    assert any(s.startswith("eta:fs.gps/") for s in sources), sources
    assert eta, "the ETA stage went on publishing"
