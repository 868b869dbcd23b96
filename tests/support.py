"""Helpers shared by the pipeline tests: simulated days (computed once) and running stages."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from eta_engine.roads import RoadGraph
from events import kinds as k
from gateway.feed import Clock, feed
from simulator import Simulation, encoded_lines, make_params, simulate
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.log import Log, Record
from streams.pipeline import Stage, run_until_idle
from streams.replay import read_records
from streams.state_store import StateStore


@cache
def graph() -> RoadGraph:
    return RoadGraph.default()


@cache
def simulated_day(
    scenario: str = "normal", technicians: int = 10, seed: int = 5, hours: float = 9.0
) -> Simulation:
    return simulate(make_params(scenario, technicians=technicians, seed=seed, hours=hours), graph())


async def ingest_day(log: Log, sim: Simulation) -> None:
    report = await feed(log, encoded_lines(sim), clock=Clock(None))
    assert report.rejected == 0, report.by_rule


async def read_all(log: Log, topic: str) -> list[Record]:
    return await read_records(log, topic)


async def process(log: Log, store: StateStore, config: Config) -> list[Stage]:
    stages = build_stages(log, store, config, graph())
    await run_until_idle(stages)
    return stages


def states(stages: list[Stage]) -> dict[str, Any]:
    """Every aggregate's state, as plain data, for field-by-field comparison."""
    orders = getattr(stages[0].processor, "orders")  # noqa: B009
    techs = getattr(stages[1].processor, "technicians")  # noqa: B009
    return {
        "orders": {k: v.as_dict() for k, v in sorted(orders.items())},
        "technicians": {k: v.as_dict() for k, v in sorted(techs.items())},
    }


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def gps_ping(
    technician: str,
    at: int,
    lat: float = 42.5,
    lon: float = 1.5,
    *,
    id: str,
    source: str = "test/app",
    speed_mps: float | None = None,
    accuracy_m: float | None = None,
) -> k.GpsPinged:
    """A GPS ping of ``technician`` at ``at`` (its subject the technician, no heading)."""
    return k.GpsPinged(
        id=id,
        source=source,
        time=at,
        subject=technician,
        technician_id=technician,
        lat=lat,
        lon=lon,
        speed_mps=speed_mps,
        heading_deg=None,
        accuracy_m=accuracy_m,
    )


async def embedded_day(data_dir: Path, sim: Simulation) -> Log:
    log = await open_log(Config(data_dir=data_dir))
    await ingest_day(log, sim)
    return log


REPO = Path(__file__).resolve().parents[1]


def python_env() -> dict[str, str]:
    """The environment a Python child of a test runs in (the repository on its path)."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def run_python(code: str, *args: str, timeout: float = 300) -> None:
    """Run ``code`` in a fresh Python from the repository's root, to its end; fail the test
    with its standard error if it fails."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=python_env(),
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh Python from the repository's root, its standard output a
    pipe of text lines (to be killed, say, at a line it prints)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=python_env(),
    )
