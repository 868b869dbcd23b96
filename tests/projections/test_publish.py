"""KpiSnapshot events on fs.kpi: at the close of each day, and on demand."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from events import kinds as k
from events.codec import decode, encode
from projections.kpis import METRIC_NAMES, day_start
from streams.embedded import EmbeddedLog
from streams.log import OutRecord
from streams.projection_stage import publish_day
from streams.projection_store import SqliteProjectionStore
from tests.projections.compare import rebuild
from tests.projections.conftest import ProcessedDay
from tests.support import read_all, run

DAY_MS = 86_400_000
DAY = "2026-11-23"


def _copy_with_a_late_event(day: ProcessedDay, into: Path) -> k.TechnicianRegistered:
    """The day's log, plus a registration 30 minutes into the next day (UTC)."""
    into.mkdir()
    for name in ("log.sqlite3", "log.sqlite3-wal"):
        if (day.data_dir / name).exists():
            shutil.copy(day.data_dir / name, into / name)
    first = next(
        e for e in day.sim.event_list if isinstance(e, k.TechnicianRegistered)
    )  # the same technician again, unchanged, the next morning
    event = replace(first, id="late-registration", time=day_start(DAY) + DAY_MS + 30 * 60_000)

    async def append() -> None:
        log = EmbeddedLog.open(into)
        await log.append([OutRecord("fs.dispatch", encode(event), event.key.encode(), event.time)])
        await log.close()

    run(append())
    return event


def _snapshots(data_dir: Path) -> list[k.KpiSnapshot]:
    async def body() -> list[k.KpiSnapshot]:
        log = EmbeddedLog.open(data_dir)
        try:
            out = []
            for r in await read_all(log, "fs.kpi"):
                event = decode(r.value)
                assert isinstance(event, k.KpiSnapshot)
                assert r.key == event.group_key.encode()
                out.append(event)
            return out
        finally:
            await log.close()

    result: list[k.KpiSnapshot] = run(body())
    return result


def test_a_closed_day_is_published_once_per_group_with_its_kpis(
    processed_day: ProcessedDay, tmp_path: Path
) -> None:
    data = tmp_path / "two-days"
    _copy_with_a_late_event(processed_day, data)
    close = day_start(DAY) + DAY_MS + 15 * 60_000
    last = max(
        (r for rs in processed_day.records.values() for r in rs if r.timestamp_ms < close),
        key=lambda r: (r.timestamp_ms, r.topic, r.partition, r.offset),
    )
    assert _snapshots(data) == []  # the day never closed on its own log
    store_path = tmp_path / "p.sqlite3"
    rebuild(data, lambda: SqliteProjectionStore(store_path), None)
    published = _snapshots(data)
    store = SqliteProjectionStore(store_path)
    try:
        rows = store.kpi_rows([DAY])
    finally:
        store.close()
    groups: dict[str, dict[str, float | None]] = {}
    for d, dim, grp, metric, value in rows:
        groups.setdefault(f"{d}/{dim}/{grp}", {})[metric] = value
    assert {s.group_key for s in published} == set(groups)
    assert len(published) == len(groups) > 20
    for s in published:
        assert s.id == f"kpi/{s.group_key}/close"
        assert s.metrics == groups[s.group_key]
        assert set(s.metrics) == set(METRIC_NAMES)
        assert (s.day, s.dimension, s.group) == tuple(s.group_key.split("/", 2))
        # caused by the day's last event (before its end plus the allowed lateness)
        assert s.time == last.timestamp_ms
        assert (s.causation.topic, s.causation.partition, s.causation.offset) == (
            last.topic,
            last.partition,
            last.offset,
        )
        assert s.causation.id == decode(last.value).id

    # a replay publishes the same events, byte for byte
    rebuild(data, lambda: SqliteProjectionStore(tmp_path / "again.sqlite3"), 3_000)
    again = _snapshots(data)[len(published) :]
    assert [encode(s) for s in again] == [encode(s) for s in published]


def test_publishing_on_demand_sends_the_stored_kpis(
    processed_day: ProcessedDay, tmp_path: Path
) -> None:
    data = tmp_path / "copy"
    data.mkdir()
    shutil.copy(processed_day.data_dir / "log.sqlite3", data / "log.sqlite3")
    store = SqliteProjectionStore.in_dir(processed_day.data_dir)

    async def body() -> list[k.KpiSnapshot]:
        log = EmbeddedLog.open(data)
        try:
            return await publish_day(store, log, "2026-11-23")
        finally:
            await log.close()

    try:
        events = run(body())
        meta = store.meta()
        fleet = {m: v for _, _, _, m, v in store.kpi_rows(["2026-11-23"], "all")}
    finally:
        store.close()
    assert _snapshots(data) == events
    whole = next(e for e in events if e.group_key == "2026-11-23/all/all")
    assert whole.metrics == fleet
    assert whole.time == meta["watermark"]
    assert whole.id == f"kpi/2026-11-23/all/all/at-{meta['watermark']}"
