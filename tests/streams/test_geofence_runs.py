"""The fleet stage's geofence over long runs of fixes: arrays rule out most fixes at once,
and what they leave is checked one by one; the outcome must be each fix's in turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import streams.stages as stages_module
from simulator import make_params, simulate
from streams.bootstrap import build_stages
from streams.config import Config
from streams.pipeline import run_until_idle
from streams.state_store import SqliteStateStore
from tests.support import embedded_day, graph, read_all, run, states


def _outcome(data_dir: Path, sim: Any) -> dict[str, Any]:
    async def body() -> dict[str, Any]:
        log = await embedded_day(data_dir, sim)
        store = SqliteStateStore.in_dir(data_dir)
        stages = build_stages(log, store, Config(data_dir=data_dir), graph())[:2]
        await run_until_idle(stages)
        out: dict[str, Any] = {
            topic: [r[1:] for r in await read_all(log, topic)]
            for topic in ("fs.geofence", "fs.by-technician", "fs.workorders", "fs.dlq")
        }
        out["state"] = states(stages)
        out["positions"] = store.load_stage("fleet").positions
        out["totals"] = stages[1].totals
        store.close()
        await log.close()
        return out

    return dict(run(body()))


def test_fences_filtered_with_arrays_detect_what_each_fix_in_turn_detects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fix a second while driving (what vehicle trackers record): long runs of fixes of a
    # technician en route between two of the batch's records.
    sim = simulate(
        make_params("rush-hour", technicians=8, seed=4, hours=5, ping_interval_s=(1.0, 1.0)),
        graph(),
    )
    outcomes = []
    # Every run through the arrays; the batch's prefilter alone (runs never); none at all.
    for vector_min, batch_fence in ((1, False), (10**9, True), (10**9, False)):
        monkeypatch.setattr(stages_module, "_VECTOR_MIN", vector_min)
        monkeypatch.setattr(stages_module, "_BATCH_FENCE", batch_fence)
        outcomes.append(_outcome(tmp_path / f"{vector_min}-{batch_fence}", sim))
    arrays, prefiltered, one_by_one = outcomes
    assert len(one_by_one["fs.geofence"]) >= 10  # arrivals and departures were detected
    assert one_by_one["totals"]["pings"] > 10_000
    for key, value in one_by_one.items():
        assert arrays[key] == value, key
        assert prefiltered[key] == value, key
