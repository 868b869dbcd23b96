"""Checkpoints of the embedded log's WAL run on their own thread, not inside the appends."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from streams.checkpointer import Checkpointer
from streams.embedded import EmbeddedLog
from streams.log import OutRecord, TopicSpec

VALUE = b"x" * 1000


def _wait_for(cp: Checkpointer, runs: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while cp.runs < runs and time.monotonic() < deadline:
        time.sleep(0.01)


def test_appends_never_checkpoint_and_the_thread_keeps_the_wal_short(tmp_path: Path) -> None:
    async def go() -> None:
        log = EmbeddedLog.open(tmp_path)
        # The writer's own connection never checkpoints: a commit past the default
        # 1,000 pages would otherwise copy the WAL back inside the append.
        assert log._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        cp = log._checkpointer
        cp.every_bytes = 1 << 20
        await log.create_topics([TopicSpec("t", 2)])
        wal = tmp_path / "log.sqlite3-wal"
        sizes = []
        for batch in range(40):  # 40 MB of values, 1 MB per append
            runs = cp.runs
            await log.append([OutRecord("t", VALUE, key=b"k%d" % i) for i in range(1000)])
            if batch % 4 == 3:
                _wait_for(cp, runs + 1)
                sizes.append(wal.stat().st_size)
        assert cp.runs >= 10
        # Checkpointed WAL is written from its start again (at the first append after a
        # checkpoint that copied everything, so a race or two lets it grow by a few MB):
        # it stays well under the 57 MB that all 40 appends take without checkpoints.
        assert max(sizes) < 30 << 20, sizes
        await log.close()
        assert cp._thread is None

    asyncio.run(go())
    db = sqlite3.connect(tmp_path / "log.sqlite3")
    assert db.execute("SELECT sum(n) FROM log_segments").fetchone()[0] == 40_000
    db.close()


def test_a_log_that_is_only_read_starts_no_thread(tmp_path: Path) -> None:
    async def go() -> None:
        log = EmbeddedLog.open(tmp_path)
        await log.create_topics([TopicSpec("t", 1)])
        await log.append([OutRecord("t", b"v")])
        assert [r.value for r in await log.read("t", 0, 0)] == [b"v"]
        assert log._checkpointer._thread is None
        await log.close()

    asyncio.run(go())


def test_the_projection_store_checkpoints_on_its_own_thread_too(tmp_path: Path) -> None:
    from projections.fold import Changes
    from streams.projection_store import SqliteProjectionStore

    store = SqliteProjectionStore.in_dir(tmp_path)
    try:
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        cp = store._checkpointer
        cp.every_bytes = 1 << 14  # two commits' worth
        for i in range(4):
            store.commit(Changes(), {("fs.gps", 0): i}, {"batch": i})
        _wait_for(cp, 1)
        assert cp.runs >= 1
    finally:
        store.close()
    assert cp._thread is None


def test_a_wal_grown_past_its_bound_is_restarted(tmp_path: Path) -> None:
    """A WAL that passive checkpoints let grow past RESTART_AFTER times the interval (a writer
    that never pauses) is restarted: the next write starts the file from its beginning."""
    from streams.checkpointer import RESTART_AFTER

    async def go() -> None:
        log = EmbeddedLog.open(tmp_path)
        cp = log._checkpointer
        cp.every_bytes = 1 << 30  # no checkpoint while the WAL is written
        await log.create_topics([TopicSpec("t", 1)])
        for _ in range(8):  # about 1 MB of WAL
            await log.append([OutRecord("t", VALUE, partition=0) for _ in range(100)])
        cp.every_bytes = (1 << 20) // (2 * RESTART_AFTER)  # the WAL is now twice the bound
        cp.wrote(cp.every_bytes)
        _wait_for(cp, 1)
        assert (cp.runs, cp.restarts) == (1, 1)
        await log.append([OutRecord("t", b"small", partition=0)])
        other = sqlite3.connect(tmp_path / "log.sqlite3")
        _busy, frames, _copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        other.close()
        assert frames < 20, frames  # the small append's pages only, at the file's start
        await log.close()

    asyncio.run(go())
