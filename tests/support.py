"""Helpers shared by the pipeline tests: simulated days (computed once) and running stages."""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path
from typing import Any

from eta_engine.roads import RoadGraph
from gateway.feed import Clock, feed
from simulator import Simulation, encoded_lines, make_params, simulate
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.log import Log, Record
from streams.pipeline import Stage, run_until_idle
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
    out: list[Record] = []
    for partition, end in (await log.end_offsets(topic)).items():
        offset = 0
        while offset < end:
            batch = await log.read(topic, partition, offset)
            out += batch
            offset = batch[-1].offset + 1
    return out


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


async def embedded_day(data_dir: Path, sim: Simulation) -> Log:
    log = await open_log(Config(data_dir=data_dir))
    await ingest_day(log, sim)
    return log
