"""A simulated day, processed once by the whole pipeline (projection included), for the
projection tests; and the raw material of the independent KPI computation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from simulator import Simulation, make_params, simulate
from streams.config import Config
from streams.log import Record
from streams.state_store import SqliteStateStore
from tests.support import embedded_day, graph, process, read_all, run


@cache
def kpi_day() -> Simulation:
    """A rush-hour day (late arrivals, alerts, "where are you?" calls) with more disputes and
    cancellations than usual, so that every KPI has something to count."""
    params = make_params("rush-hour", technicians=12, seed=5, dispute_rate=0.25, cancel_rate=0.06)
    return simulate(params, graph())


@dataclass(frozen=True)
class ProcessedDay:
    data_dir: Path
    sim: Simulation
    records: dict[str, list[Record]]
    """Every record of every topic, each partition in offset order."""


@pytest.fixture(scope="session")
def processed_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessedDay]:
    """The day ingested into an embedded log and processed by ``build_stages`` (work orders,
    fleet, projections, ETA engine) until idle, as ``fieldstream process`` does."""
    data = tmp_path_factory.mktemp("kpi-day")
    sim = kpi_day()

    async def body() -> dict[str, list[Record]]:
        log = await embedded_day(data, sim)
        store = SqliteStateStore.in_dir(data)
        stages = await process(log, store, Config(data_dir=data))
        for stage in stages:
            close = getattr(stage, "close", None)
            if close is not None:
                close()
        store.close()
        topics = await log.topics()
        records = {topic: await read_all(log, topic) for topic in sorted(topics)}
        await log.close()
        return records

    yield ProcessedDay(data, sim, run(body()))
