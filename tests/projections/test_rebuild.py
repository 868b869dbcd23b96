"""Rebuilt from scratch equals built incrementally: the projection's tables and state do not
depend on how the log was batched, nor on the store (SQLite or PostgreSQL)."""

from __future__ import annotations

import shutil
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest

from events import kinds as k
from events.codec import decode
from projections.fold import TOPICS, Projection
from simulator import make_params, simulate
from streams.bootstrap import build_stages, open_log
from streams.config import Config
from streams.log import Record
from streams.pipeline import run_until_idle
from streams.projection_store import PostgresProjectionStore, SqliteProjectionStore
from streams.state_store import PostgresStateStore, SqliteStateStore
from tests.projections.compare import normalised, rebuild, state, tables
from tests.projections.conftest import ProcessedDay
from tests.support import embedded_day, graph, ingest_day, process, run


@pytest.mark.parametrize("batch", [None, 700, 200_000])
def test_a_rebuild_on_sqlite_equals_the_incremental_projection(
    processed_day: ProcessedDay, tmp_path: Path, batch: int | None
) -> None:
    live = SqliteProjectionStore.in_dir(processed_day.data_dir)
    rebuilt_path = tmp_path / "rebuilt.sqlite3"
    rebuild(processed_day.data_dir, lambda: SqliteProjectionStore(rebuilt_path), batch)
    rebuilt = SqliteProjectionStore(rebuilt_path)
    try:
        assert len(tables(live)["kp_kpi"]) > 1000
        assert tables(rebuilt) == tables(live)
        assert state(rebuilt) == state(live)
    finally:
        live.close()
        rebuilt.close()


def test_windows_folded_a_few_hundred_records_at_a_time_equal_the_incremental_projection(
    processed_day: ProcessedDay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While catching up, the windows' records are folded once FOLD_RECORDS of them wait
    (and at each flush): folded in small groups between flushes, the tables are the same."""
    import streams.projection_stage as stage

    monkeypatch.setattr(stage, "FOLD_RECORDS", 300)
    folds: list[int] = []
    fold = stage.ProjectionStage._fold_taken

    def counted(self: stage.ProjectionStage) -> None:
        folds.append(self._unfolded_records)
        fold(self)

    monkeypatch.setattr(stage.ProjectionStage, "_fold_taken", counted)
    live = SqliteProjectionStore.in_dir(processed_day.data_dir)
    rebuilt_path = tmp_path / "rebuilt.sqlite3"
    rebuild(processed_day.data_dir, lambda: SqliteProjectionStore(rebuilt_path), None)
    rebuilt = SqliteProjectionStore(rebuilt_path)
    try:
        flushes = int(rebuilt.meta()["batch"])
        assert len(folds) > 2 * flushes  # most folds came between flushes
        assert tables(rebuilt) == tables(live)
        assert state(rebuilt) == state(live)
    finally:
        live.close()
        rebuilt.close()


def test_a_batch_spanning_more_than_the_kept_track_equals_small_batches(tmp_path: Path) -> None:
    """Tracks are pruned to ``retain_track_ms`` (two days) behind their newest fix. A batch
    spanning more than that (here three short days in one batch, as a week rebuilt in large
    batches) still measures every leg and shift on the fixes before they are pruned."""
    data = tmp_path / "log"

    async def prepare() -> None:
        log = await open_log(Config(data_dir=data))
        for i in range(3):
            day = date(2026, 11, 23) + timedelta(days=i)
            params = make_params("normal", technicians=4, seed=3 + i, start_date=day, hours=4)
            await ingest_day(log, simulate(params, graph()))
        store = SqliteStateStore.in_dir(data)
        stages = [s for s in build_stages(log, store, Config(data_dir=data), graph())
                  if s.name != "projections"]  # fmt: skip
        await run_until_idle(stages)
        store.close()
        await log.close()

    run(prepare())
    paths = {batch: tmp_path / f"rebuilt-{batch}.sqlite3" for batch in (300, 200_000)}
    for batch, path in paths.items():
        rebuild(data, lambda p=path: SqliteProjectionStore(p), batch)
    small, whole = (SqliteProjectionStore(path) for path in paths.values())
    try:
        assert any(km for km in state(small)["km"].values())  # tracks were pruned
        assert len({row[0] for row in tables(small)["kp_kpi"]}) == 3
        assert tables(whole) == tables(small)
    finally:
        small.close()
        whole.close()


def _other_schema(url: str) -> str:
    base, _, _ = url.partition("?")
    return f"{base}?schema=fs_test_{uuid.uuid4().hex[:12]}"


def _drop(url: str) -> None:
    import psycopg

    base, _, query = url.partition("?")
    schema = query.split("=", 1)[1]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.postgres
def test_incremental_and_rebuilt_on_postgres_equal_sqlite(
    processed_day: ProcessedDay, tmp_path: Path, postgres_url: str
) -> None:
    """The whole pipeline with ``--db postgresql://...`` (state and projections there), then
    a rebuild into another schema: both equal the SQLite projection of the same log."""
    data = tmp_path / "pg-day"

    async def pipeline() -> None:
        log = await embedded_day(data, processed_day.sim)
        store = PostgresStateStore(postgres_url)
        stages = await process(log, store, Config(data_dir=data, db=postgres_url))
        for stage in stages:
            close = getattr(stage, "close", None)
            if close is not None:
                close()
        store.close()
        await log.close()

    run(pipeline())
    assert not (data / "projections.sqlite3").exists()
    rebuilt_url = _other_schema(postgres_url)
    try:
        rebuild(data, lambda: PostgresProjectionStore(rebuilt_url), 5_000)
        sqlite = SqliteProjectionStore.in_dir(processed_day.data_dir)
        incremental = PostgresProjectionStore(postgres_url)
        rebuilt = PostgresProjectionStore(rebuilt_url)
        try:
            expected = normalised(tables(sqlite))
            assert normalised(tables(incremental)) == expected
            assert normalised(tables(rebuilt)) == expected
            assert state(incremental) == state(sqlite)
            assert state(rebuilt) == state(sqlite)
        finally:
            sqlite.close()
            incremental.close()
            rebuilt.close()
    finally:
        _drop(rebuilt_url)
        shutil.rmtree(data, ignore_errors=True)


def test_the_stage_reports_what_the_pipeline_runner_meters(
    processed_day: ProcessedDay, tmp_path: Path
) -> None:
    """Positions and per-topic counts, as the pipeline's stages give them (for metrics)."""
    from streams.embedded import EmbeddedLog
    from streams.projection_stage import ProjectionStage
    from tests.support import run

    async def body() -> None:
        log = EmbeddedLog.open(processed_day.data_dir)
        stage = ProjectionStage(log, lambda: SqliteProjectionStore(tmp_path / "p.sqlite3"))
        stats = await stage.step(None)
        assert stats.records == sum(stats.by_topic.values()) > 0
        assert set(stats.by_topic) <= set(stage.inputs)
        moved = {tp: o for tp, o in stage.positions.items() if o}
        assert sum(moved.values()) == stats.records
        stage.close()
        await log.close()

    run(body())


def _book(projection: Projection) -> dict[tuple[str, str, str], dict[str, float | None]]:
    return {key: projection.book.values(key) for key in projection.book.groups}


def test_a_customer_s_first_booking_folded_last_makes_the_others_repeat(
    processed_day: ProcessedDay,
) -> None:
    """Whether an order is a repeat customer's depends on the customer's first booking. Held
    back until the customer's later orders were folded and flushed, that booking still turns
    the order that was first until then into a repeat customer's order."""
    booked: dict[str, list[tuple[int, Record]]] = {}
    for record in processed_day.records["fs.bookings"]:
        event = decode(record.value)
        if isinstance(event, k.WorkOrderBooked):
            booked.setdefault(event.customer_id, []).append((event.time, record))
    earliest = min(
        (min(bookings, key=lambda b: b[0]) for bookings in booked.values() if len(bookings) > 1),
        key=lambda b: b[0],
    )[1]

    def folded(held: Record | None) -> Projection:
        projection = Projection()
        for topic in TOPICS:
            by_partition: dict[int, list[Record]] = {}
            for r in processed_day.records.get(topic, []):
                if r is not held:
                    by_partition.setdefault(r.partition, []).append(r)
            for records in by_partition.values():
                projection.apply(topic, records)
        projection.flush()
        if held is not None:
            projection.apply(held.topic, [held])
            projection.flush()
        return projection

    whole, late = folded(None), folded(earliest)
    repeats = [
        values["repeat_customer_rate"]
        for (_day, dim, _grp), values in _book(whole).items()
        if dim == "all"
    ]
    assert any(rate for rate in repeats)  # the day has repeat customers
    assert _book(late) == _book(whole)
