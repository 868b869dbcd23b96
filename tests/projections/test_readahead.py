"""The projection stage's pings read ahead by a process of their own (streams/readahead.py):
the same tables and state as read by the stage itself, and a failure in the reader fails the
read with the reader's traceback."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streams.projection_stage as stage_module
from projections.pings import Pings
from streams import readahead
from streams.embedded import EmbeddedLog
from streams.follower import cores
from streams.projection_store import SqliteProjectionStore
from tests.projections.compare import rebuild, state, tables
from tests.projections.conftest import ProcessedDay
from tests.support import run

needs_two_cores = pytest.mark.skipif(cores() < 2, reason="the reader needs a second core")


@needs_two_cores
@pytest.mark.parametrize("batch", [None, 3_000])
def test_pings_read_ahead_give_the_tables_of_pings_read_by_the_stage(
    processed_day: ProcessedDay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int | None
) -> None:
    monkeypatch.setattr(stage_module, "READ_AHEAD_FROM", 100)
    monkeypatch.setattr(readahead, "CHUNK", 70)  # chunks that are cut by windows and batches
    monkeypatch.setattr(readahead, "DEPTH", 3)
    taken: list[int] = []
    take = readahead.PingReadAhead.take

    def counted(self: readahead.PingReadAhead, partition: int, offset: int, most: int) -> Any:
        got = take(self, partition, offset, most)
        if got is not None:
            taken.append(len(got))
        return got

    monkeypatch.setattr(readahead.PingReadAhead, "take", counted)
    ahead_path = tmp_path / "ahead.sqlite3"
    rebuild(processed_day.data_dir, lambda: SqliteProjectionStore(ahead_path), batch)
    pings = len(processed_day.records["fs.gps"])
    assert sum(taken) > pings // 2  # most pings came from the reader
    monkeypatch.setattr(stage_module.ProjectionStage, "_reader", lambda *_: None)
    own_path = tmp_path / "own.sqlite3"
    rebuild(processed_day.data_dir, lambda: SqliteProjectionStore(own_path), batch)
    ahead, own = SqliteProjectionStore(ahead_path), SqliteProjectionStore(own_path)
    try:
        assert len(state(own)["tracks"]) > 0
        assert tables(ahead) == tables(own)
        assert state(ahead) == state(own)
        # the causes (the newest record's event id, looked up for pings read ahead)
        assert ahead.meta()["cause"] == own.meta()["cause"]
        assert ahead.meta()["close_causes"] == own.meta()["close_causes"]
    finally:
        ahead.close()
        own.close()


class _Broken(Pings):
    @classmethod
    def parse(cls, *args: Any, **kwargs: Any) -> Pings:
        raise RuntimeError("no pings today")


@needs_two_cores
def test_a_failure_in_the_reader_fails_the_read_with_its_traceback(
    processed_day: ProcessedDay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readahead, "Pings", _Broken)  # (the forked reader has it too)

    async def body() -> None:
        log = EmbeddedLog.open(processed_day.data_dir)
        reader = readahead.PingReadAhead.start(log, "fs.gps")
        assert reader is not None
        try:
            reader.ask(0, 0, 10 * reader.chunk)
            with pytest.raises(readahead.ReaderFailedError, match="no pings today"):
                reader.take(0, 0, reader.chunk)
        finally:
            reader.close()
            await log.close()

    run(body())


@needs_two_cores
def test_chunks_not_where_the_stage_reads_are_dropped(processed_day: ProcessedDay) -> None:
    async def body() -> None:
        log = EmbeddedLog.open(processed_day.data_dir)
        reader = readahead.PingReadAhead.start(log, "fs.gps")
        assert reader is not None
        reader.chunk = 10
        try:
            reader.ask(1, 0, 100)
            assert reader.take(1, 5, 1_000) is None  # not at offset 5: all dropped
            reader.ask(1, 5, 100)
            got = reader.take(1, 5, 1_000)
            assert got is not None
            own = await log.read_columns("fs.gps", 1, 5, 10)
            assert got.offsets.tolist() == own.offsets.tolist()
            assert got.keys == own.keys
            parsed = Pings.parse("fs.gps", 1, own.offsets, own.timestamps, own.keys, own.values)
            assert np.array_equal(got.lat, parsed.lat) and got.fixes() == parsed.fixes()
            assert got.values is None  # looked up instead (the stage sets a source)
            assert reader.take(1, 15, 5) is None  # a chunk larger than the read: dropped
            await asyncio.sleep(0)
        finally:
            reader.close()
            await log.close()

    run(body())


def _started_readers(monkeypatch: pytest.MonkeyPatch) -> list[readahead.PingReadAhead]:
    """Every reader the stage starts, recorded (with a small chunk, so a day has many)."""
    monkeypatch.setattr(stage_module, "READ_AHEAD_FROM", 100)
    monkeypatch.setattr(readahead, "CHUNK", 70)
    started: list[readahead.PingReadAhead] = []
    start = readahead.PingReadAhead.start

    def recorded(log: Any, topic: str) -> readahead.PingReadAhead | None:
        reader = start(log, topic)
        if reader is not None:
            started.append(reader)
        return reader

    monkeypatch.setattr(readahead.PingReadAhead, "start", recorded)
    return started


def _stage(day: ProcessedDay, tmp_path: Path) -> tuple[EmbeddedLog, stage_module.ProjectionStage]:
    """The day's log and a projection stage over it, with a fresh store."""
    log = EmbeddedLog.open(day.data_dir)
    store = tmp_path / "p.sqlite3"
    return log, stage_module.ProjectionStage(log, lambda: SqliteProjectionStore(store))


def _alive(reader: readahead.PingReadAhead) -> bool:
    process = reader._process
    return process is not None and process.is_alive()


@needs_two_cores
def test_the_reader_stops_once_the_stage_has_caught_up(
    processed_day: ProcessedDay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _started_readers(monkeypatch)

    async def body() -> None:
        log, stage = _stage(processed_day, tmp_path)
        try:
            n = await stage.run_until_idle()
            assert n > 0
            assert started, "no reader was started"
            assert stage._readers == {}
            for reader in started:  # released: each exits on its own, without close()
                assert reader._process is not None
                reader._process.join(timeout=10)
            assert not any(_alive(reader) for reader in started)
        finally:
            stage.close()
            await log.close()

    run(body())


@needs_two_cores
def test_a_stage_dropped_without_close_stops_its_reader(
    processed_day: ProcessedDay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _started_readers(monkeypatch)

    async def body() -> None:
        log, stage = _stage(processed_day, tmp_path)
        await stage.step(None)  # the day's first batch: a reader starts, far from caught up
        assert len(started) == 1 and _alive(started[0])
        assert stage.store is not None
        stage.store.close()
        del stage
        gc.collect()
        assert not _alive(started[0])
        await log.close()

    run(body())
