"""EmbeddedLog: the shared contract, plus durability across processes and kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from streams.embedded import EmbeddedLog
from streams.log import Log, OutRecord, TopicSpec
from tests.streams.contract import LogContract

REPO = Path(__file__).resolve().parents[2]


class TestEmbeddedLog(LogContract):
    @pytest.fixture(autouse=True)
    def _data_dir(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path

    async def open_log(self) -> Log:
        return EmbeddedLog.open(self.data_dir)


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from streams.embedded import EmbeddedLog
    from streams.log import OutRecord, TopicSpec

    async def main(data_dir, batch):
        log = EmbeddedLog.open(data_dir)
        await log.create_topics([TopicSpec("t", 2)])
        n = 0
        while True:
            await log.append(
                [OutRecord("t", b"x" * 100, b"k%d" % (i % 7)) for i in range(n, n + batch)]
            )
            n += batch
            print(n, flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def _count(data_dir: Path) -> tuple[int, dict[int, list[int]]]:
    async def main() -> tuple[int, dict[int, list[int]]]:
        log = EmbeddedLog.open(data_dir)
        try:
            offsets: dict[int, list[int]] = {}
            for partition in await log.end_offsets("t"):
                offsets[partition] = [r.offset for r in await log.read("t", partition, 0, 10**7)]
            return sum(len(v) for v in offsets.values()), offsets
        finally:
            await log.close()

    return asyncio.run(main())


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.1])
def test_kill_9_keeps_every_committed_batch_and_no_partial_one(
    tmp_path: Path, delay: float
) -> None:
    batch = 997  # a prime, so a torn batch could not hide as a multiple of anything else
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), str(batch)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    reported = 0
    deadline = time.monotonic() + 30
    while reported < batch * 3 and time.monotonic() < deadline:
        reported = int(proc.stdout.readline())
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for line in proc.stdout:  # batches the writer reported before it died
        reported = int(line)
    total, offsets = _count(tmp_path)
    assert total >= reported, "a batch reported as appended was lost"
    assert total % batch == 0, f"a partial batch is visible ({total} records)"
    for partition_offsets in offsets.values():
        assert partition_offsets == list(range(len(partition_offsets))), "gap in offsets"


def test_a_reader_in_another_process_sees_appends(tmp_path: Path) -> None:
    reader = textwrap.dedent(
        """
        import asyncio, sys, time
        from streams.embedded import EmbeddedLog

        async def main(data_dir):
            log = EmbeddedLog.open(data_dir)
            deadline = time.monotonic() + 20
            seen = 0
            while seen < 300 and time.monotonic() < deadline:
                seen = sum((await log.end_offsets("t")).values())
                await asyncio.sleep(0.01)
            records = await log.read("t", 0, 0)
            print(seen, records[-1].value.decode())

        asyncio.run(main(sys.argv[1]))
        """
    )

    async def prepare() -> EmbeddedLog:
        log = EmbeddedLog.open(tmp_path)
        await log.create_topics([TopicSpec("t", 1)])
        return log

    log = asyncio.run(prepare())
    proc = subprocess.Popen(
        [sys.executable, "-c", reader, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )

    async def write() -> None:
        for i in range(3):
            await log.append([OutRecord("t", b"%d" % (i * 100 + j)) for j in range(100)])
            await asyncio.sleep(0.05)
        await log.close()

    asyncio.run(write())
    out, _ = proc.communicate(timeout=30)
    assert out.split() == ["300", "299"]


def test_a_failed_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    async def main() -> None:
        log = EmbeddedLog.open(tmp_path)
        await log.create_topics([TopicSpec("t", 2)])
        with pytest.raises(ValueError, match="no partition 5"):
            await log.append([OutRecord("t", b"ok"), OutRecord("t", b"bad", partition=5)])
        assert await log.end_offsets("t") == {0: 0, 1: 0}
        await log.close()

    asyncio.run(main())


_EARLIER_TOPICS = """
        CREATE TABLE topics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            partitions INTEGER NOT NULL, compacted INTEGER NOT NULL DEFAULT 0,
            retention_ms INTEGER);
        CREATE TABLE partitions (topic_id INTEGER NOT NULL, partition INTEGER NOT NULL,
            next_offset INTEGER NOT NULL, PRIMARY KEY (topic_id, partition)) WITHOUT ROWID;
"""
"""The topic and partition tables as both earlier layouts wrote them."""


def test_a_log_written_in_the_earlier_layout_is_migrated_intact(tmp_path: Path) -> None:
    """Data directories from before the position-keyed table open with every record kept."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "log.sqlite3")
    db.executescript(
        _EARLIER_TOPICS
        + """
        CREATE TABLE records (topic_id INTEGER NOT NULL, partition INTEGER NOT NULL,
            offset INTEGER NOT NULL, ts INTEGER NOT NULL, key BLOB, value BLOB NOT NULL,
            headers BLOB, PRIMARY KEY (topic_id, partition, offset)) WITHOUT ROWID;
        INSERT INTO topics VALUES (1, 'fs.a', 2, 0, NULL), (2, 'fs.b', 1, 0, NULL);
        INSERT INTO partitions VALUES (1, 0, 2), (1, 1, 1), (2, 0, 1);
        INSERT INTO records VALUES (1, 0, 0, 10, X'6B', X'7631', NULL),
            (1, 0, 1, 20, X'6B', X'7632', NULL), (1, 1, 0, 15, NULL, X'7633', NULL),
            (2, 0, 0, 30, X'6B', X'7634', '[["h","x"]]');
        """
    )
    db.commit()
    db.close()

    async def go() -> None:
        log = EmbeddedLog.open(tmp_path)
        a0 = await log.read("fs.a", 0, 0)
        assert [(r.offset, r.timestamp_ms, r.value) for r in a0] == [(0, 10, b"v1"), (1, 20, b"v2")]
        assert [(r.offset, r.value) for r in await log.read("fs.a", 1, 0)] == [(0, b"v3")]
        (b,) = await log.read("fs.b", 0, 0)
        assert (b.value, b.headers) == (b"v4", (("h", b"x"),))
        assert await log.offset_for_time("fs.a", 0, 15) == 1
        assert await log.append([OutRecord("fs.a", b"v5", partition=0)]) == [(0, 2)]
        assert [r.value for r in await log.read("fs.a", 0, 1)] == [b"v2", b"v5"]
        await log.close()

    asyncio.run(go())


def test_the_previous_layout_of_one_row_per_record_is_migrated_intact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Data directories written with one ``log_records`` row per record open with every
    record kept, in segments."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "log.sqlite3")
    db.executescript(
        _EARLIER_TOPICS
        + """
        CREATE TABLE log_records (pos INTEGER PRIMARY KEY, ts INTEGER NOT NULL, key BLOB,
            value BLOB NOT NULL, headers BLOB);
        INSERT INTO topics VALUES (1, 'fs.a', 2, 0, NULL);
        INSERT INTO partitions VALUES (1, 0, 3), (1, 1, 1);
        """
    )
    base = 1 << 44  # topic 1, partition 0, offset 0 (topic << 44 | partition << 34 | offset)
    db.executemany(
        "INSERT INTO log_records VALUES (?, ?, ?, ?, ?)",
        [
            (base, 10, b"k", b"v1", None),
            (base + 1, 5, None, b"v2", '[["h","x"]]'),
            (base + 2, 30, b"k", b"v3", None),
            (base + (1 << 34), 15, b"j", b"v4", None),
        ],
    )
    db.commit()
    db.close()

    async def go() -> None:
        log = EmbeddedLog.open(tmp_path)
        got = [
            (r.offset, r.timestamp_ms, r.key, r.value, r.headers)
            for r in await log.read("fs.a", 0, 0)
        ]
        assert got == [
            (0, 10, b"k", b"v1", ()),
            (1, 5, None, b"v2", (("h", b"x"),)),
            (2, 30, b"k", b"v3", ()),
        ]
        assert [(r.key, r.value) for r in await log.read("fs.a", 1, 0)] == [(b"j", b"v4")]
        assert await log.offset_for_time("fs.a", 0, 11) == 2
        assert await log.append([OutRecord("fs.a", b"v5", partition=0)]) == [(0, 3)]
        await log.close()

    asyncio.run(go())
    asyncio.run(EmbeddedLog.open(tmp_path).close())  # nothing left to convert: nothing said
    assert [r.getMessage() for r in caplog.records if r.name == "fieldstream.log"] == [
        f"converting the log to segments (once, for this version): {tmp_path / 'log.sqlite3'}"
    ]
    db = sqlite3.connect(tmp_path / "log.sqlite3")
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "log_records" not in tables
    db.close()


def test_segments_give_back_every_record_from_any_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records are stored a segment at a time: reads that start and stop anywhere within or
    across segments, columns, and the search by time all see exactly the records appended,
    whatever mix of missing keys, headers, explicit and missing timestamps they carry."""
    import random

    from streams import embedded

    monkeypatch.setattr(embedded, "SEGMENT_RECORDS", 7)  # many segments, some cut mid-batch
    rng = random.Random(5)
    model: dict[int, list[tuple[int | None, bytes | None, bytes, tuple[tuple[str, bytes], ...]]]]
    model = {0: [], 1: []}

    async def go() -> None:
        log = EmbeddedLog.open(tmp_path)
        await log.create_topics([TopicSpec("t", 2)])
        for _ in range(40):
            batch = []
            for _ in range(rng.choice([1, 2, 6, 7, 8, 20])):
                partition = rng.randrange(2)
                key = None if rng.random() < 0.3 else b"k%d" % rng.randrange(1000)
                value = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
                stamp = None if rng.random() < 0.1 else rng.randrange(0, 10_000)
                headers = (
                    (("trace", bytes([rng.randrange(256)]) * 3), ("x", b""))
                    if rng.random() < 0.2
                    else ()
                )
                batch.append(OutRecord("t", value, key, stamp, headers, partition))
                model[partition].append((stamp, key, value, headers))
            assert len(await log.append(batch)) == len(batch)
        for partition, expected in model.items():
            everything = await log.read("t", partition, 0, 10**6)
            assert [(r.key, r.value, r.headers) for r in everything] == [e[1:] for e in expected]
            stamps = [r.timestamp_ms for r in everything]
            for got, (stamp, *_rest) in zip(stamps, expected, strict=True):
                assert stamp is None or got == stamp
            assert [r.offset for r in everything] == list(range(len(expected)))
            for _ in range(60):
                offset = rng.randrange(len(expected) + 2)
                limit = rng.randrange(1, 30)
                part = await log.read("t", partition, offset, limit)
                assert part == everything[offset : offset + limit]
                columns = await log.read_columns("t", partition, offset, limit)
                assert columns.offsets.tolist() == [r.offset for r in part]
                assert columns.timestamps.tolist() == [r.timestamp_ms for r in part]
                assert columns.keys == [r.key for r in part]
                assert columns.values == [r.value for r in part]
                when = rng.randrange(-10, 10_010)
                first = next((i for i, t in enumerate(stamps) if t >= when), len(stamps))
                assert await log.offset_for_time("t", partition, when) == first
        await log.close()

    asyncio.run(go())


def test_two_writers_on_one_log_take_turns_without_colliding(tmp_path: Path) -> None:
    """Each connection keeps the next offsets it last wrote; another connection's append in
    between (SQLite's data_version moves) makes it read them again, so offsets continue."""

    async def go() -> None:
        a = EmbeddedLog.open(tmp_path)
        b = EmbeddedLog.open(tmp_path)
        await a.create_topics([TopicSpec("t", 2)])
        expected: list[bytes] = []
        for i in range(6):
            writer = a if i % 3 else b
            value = b"v%d" % i
            assert await writer.append([OutRecord("t", value, partition=1)]) == [(1, i)]
            expected.append(value)
        # A failed append leaves the offsets known as they were.
        with pytest.raises(ValueError, match="no partition 7"):
            await a.append([OutRecord("t", b"x", partition=1), OutRecord("t", b"y", partition=7)])
        assert await a.append([OutRecord("t", b"v6", partition=1)]) == [(1, 6)]
        expected.append(b"v6")
        assert [r.value for r in await b.read("t", 1, 0)] == expected
        assert await b.end_offsets("t") == {0: 0, 1: 7}
        await a.close()
        await b.close()

    asyncio.run(go())
