"""The ETA stage in the pipeline: deterministic outputs, across runs and across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.eta_stage import EtaProcessor
from streams.log import Log
from streams.pipeline import CHECKPOINT, HORIZON_STEP_MS, Stage, run_until_idle
from streams.replay import read_topic
from streams.state_store import SqliteStateStore
from tests.support import embedded_day, graph, run, simulated_day


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
