"""EmbeddedLog: the log port on one SQLite file, the default for a single machine.

The file (``DATA_DIR/log.sqlite3``) holds topics, partitions, records and consumer-group
positions. It runs in WAL mode, so:

* an appended batch is one transaction: it is all visible or not at all, and once
  :meth:`EmbeddedLog.append` returns it survives ``kill -9`` of the writer (and, with the
  default ``synchronous=FULL``, a power cut; an append with ``durable=False`` skips that
  fsync, and :meth:`EmbeddedLog.sync` later makes every append before it durable with one);
* readers in other processes see every committed batch and never block the writer;
* several processes may append; SQLite serialises their transactions (``BEGIN IMMEDIATE``
  takes the write lock before offsets are read, so offsets never collide).

Retention and compaction settings are recorded but not enforced: the embedded log keeps
everything, which is what a replay of a day or a week on one machine wants.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streams.checkpointer import Checkpointer
from streams.log import (
    BatchMark,
    Columns,
    Headers,
    Log,
    OutRecord,
    Record,
    TopicPartition,
    TopicSpec,
    UnknownTopicError,
)
from streams.partitioner import partition_for

LOG_FILE = "log.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL,
    compacted INTEGER NOT NULL DEFAULT 0,
    retention_ms INTEGER
);
CREATE TABLE IF NOT EXISTS partitions (
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_records (
    pos INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB
);
CREATE TABLE IF NOT EXISTS batch_marks (
    stage TEXT NOT NULL,
    batch INTEGER NOT NULL,
    inputs BLOB NOT NULL,
    PRIMARY KEY (stage, batch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sync_marks (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
"""


_OFFSET_BITS = 34
_PARTITION_BITS = 10
MAX_PARTITIONS = 1 << _PARTITION_BITS


def _pos(topic_id: int, partition: int, offset: int = 0) -> int:
    """A record's row key: topic, partition and offset packed into SQLite's 64-bit rowid.

    Keying the table by position keeps its B-tree interior pages to bare integers (a WITHOUT
    ROWID table copies whole rows, values included, into them) and makes reading a partition
    from an offset one range scan of the table itself, with no separate index.
    """
    return (topic_id << (_OFFSET_BITS + _PARTITION_BITS)) | (partition << _OFFSET_BITS) | offset


_OFFSET_MASK = (1 << _OFFSET_BITS) - 1


def _migrate(db: sqlite3.Connection) -> None:
    """Move the records of a log written by an earlier version (a ``records`` table keyed by
    topic, partition and offset) into the position-keyed table, in one transaction."""
    old = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'")
    if old.fetchone() is None:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "INSERT INTO log_records (pos, ts, key, value, headers) "
            f"SELECT (topic_id << {_OFFSET_BITS + _PARTITION_BITS}) | (partition << {_OFFSET_BITS})"
            " | offset, ts, key, value, headers FROM records"
        )
        db.execute("DROP TABLE records")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _pack_headers(headers: Headers) -> bytes | None:
    # latin-1 maps each byte to one code point, so arbitrary header bytes survive JSON intact.
    if not headers:
        return None
    return orjson.dumps([[name, value.decode("latin-1")] for name, value in headers])


def _unpack_headers(blob: bytes | None) -> Headers:
    if blob is None:
        return ()
    return tuple((name, value.encode("latin-1")) for name, value in orjson.loads(blob))


MARKS_KEPT = 10_000
"""Batch marks kept per stage (older ones are deleted as new ones are written): a restart
needs only those after the stage's last commit."""


class EmbeddedLog(Log):
    """The log port on a SQLite file. Use :meth:`open`; one instance per task."""

    keeps_marks = True

    def __init__(
        self, connection: sqlite3.Connection, path: Path, synchronous: str = "FULL"
    ) -> None:
        self._db = connection
        self.path = path
        self._topics: dict[str, tuple[int, int]] = {}
        self._synchronous = synchronous
        """The connection's own setting, which every durable append keeps."""
        self._relaxed = False
        """Whether the connection is at ``NORMAL`` for appends made with ``durable=False``."""
        self._unsynced = synchronous == "FULL"
        """Whether an append may not be durable yet: one since the last sync skipped its
        fsync, or (when the log is opened) a process before this one did."""
        self._checkpointer = Checkpointer(path)

    @classmethod
    def open(cls, data_dir: Path | str, *, synchronous: str = "FULL") -> EmbeddedLog:
        """Open (creating if needed) the log in ``data_dir``.

        ``synchronous`` is SQLite's: ``FULL`` survives power loss, ``NORMAL`` survives a
        crash of the process but may lose the last batches on power loss.
        """
        if synchronous not in ("FULL", "NORMAL", "OFF"):
            raise ValueError(f"synchronous must be FULL, NORMAL or OFF, not {synchronous!r}")
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOG_FILE
        db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA cache_size=-65536")
        # Checkpoints run on a thread of their own (see streams/checkpointer.py).
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.executescript(_SCHEMA)
        _migrate(db)
        return cls(db, path, synchronous)

    # -- topics --------------------------------------------------------------------------------

    def _topic(self, name: str) -> tuple[int, int]:
        found = self._topics.get(name)
        if found is None:
            row = self._db.execute(
                "SELECT id, partitions FROM topics WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise UnknownTopicError(name)
            found = self._topics[name] = (row[0], row[1])
        return found

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for spec in specs:
                if not 1 <= spec.partitions <= MAX_PARTITIONS:
                    raise ValueError(
                        f"{spec.name}: a topic takes 1 to {MAX_PARTITIONS} partitions here, "
                        f"not {spec.partitions}"
                    )
                cursor = db.execute(
                    "INSERT OR IGNORE INTO topics (name, partitions, compacted, retention_ms) "
                    "VALUES (?, ?, ?, ?)",
                    (spec.name, spec.partitions, int(spec.compacted), spec.retention_ms),
                )
                if cursor.rowcount:
                    topic_id = cursor.lastrowid
                    db.executemany(
                        "INSERT INTO partitions (topic_id, partition, next_offset) "
                        "VALUES (?, ?, 0)",
                        [(topic_id, p) for p in range(spec.partitions)],
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def topics(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, partitions FROM topics").fetchall())

    # -- append --------------------------------------------------------------------------------

    def _relax(self, relaxed: bool) -> None:
        """Switch the connection between ``NORMAL`` (no fsync at commit; in WAL mode a
        transaction is still atomic and survives a crash of the process) and its own
        setting."""
        if relaxed != self._relaxed:
            mode = "NORMAL" if relaxed else self._synchronous
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._relaxed = relaxed

    async def append(
        self,
        records: Sequence[OutRecord],
        *,
        durable: bool = True,
        mark: BatchMark | None = None,
    ) -> list[tuple[int, int]]:
        if not records and mark is None:
            return []
        if self._synchronous == "FULL":
            self._relax(not durable)
            self._unsynced = self._unsynced or not durable
        topics = {name: self._topic(name) for name in {r.topic for r in records}}
        # Resolve every record's partition before taking the write lock.
        placed: list[tuple[int, int]] = []
        for r in records:
            topic_id, count = topics[r.topic]
            if r.partition is not None:
                if not 0 <= r.partition < count:
                    raise ValueError(f"{r.topic} has no partition {r.partition}")
                placed.append((topic_id, r.partition))
            elif r.key is not None:
                placed.append((topic_id, partition_for(r.key, count)))
            else:
                placed.append((topic_id, 0))
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # Read the next offsets inside the write transaction: another process may append.
            next_offset: dict[tuple[int, int], int] = {}
            for tp in set(placed):
                next_offset[tp] = db.execute(
                    "SELECT next_offset FROM partitions WHERE topic_id = ? AND partition = ?", tp
                ).fetchone()[0]
            now = time.time_ns() // 1_000_000
            size = 0
            rows = []
            positions: list[tuple[int, int]] = []
            for (_t, value, key, stamp, headers, _p), tp in zip(records, placed, strict=True):
                offset = next_offset[tp]
                next_offset[tp] = offset + 1
                positions.append((tp[1], offset))
                size += len(value)
                rows.append(
                    (
                        _pos(tp[0], tp[1], offset),
                        now if stamp is None else stamp,
                        key,
                        value,
                        _pack_headers(headers) if headers else None,
                    )
                )
            db.executemany(
                "INSERT INTO log_records (pos, ts, key, value, headers) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany(
                "UPDATE partitions SET next_offset = ? WHERE topic_id = ? AND partition = ?",
                [(offset, t, p) for (t, p), offset in next_offset.items()],
            )
            if mark is not None:
                db.execute(
                    "INSERT OR REPLACE INTO batch_marks (stage, batch, inputs) VALUES (?, ?, ?)",
                    (mark.stage, mark.batch, orjson.dumps(mark.inputs)),
                )
                db.execute(
                    "DELETE FROM batch_marks WHERE stage = ? AND batch <= ?",
                    (mark.stage, mark.batch - MARKS_KEPT),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._checkpointer.wrote(size)
        return positions

    async def marks(self, stage: str, after: int) -> dict[int, dict[str, tuple[int, int]]]:
        rows = self._db.execute(
            "SELECT batch, inputs FROM batch_marks WHERE stage = ? AND batch > ? ORDER BY batch",
            (stage, after),
        ).fetchall()
        return {b: {k: (v[0], v[1]) for k, v in orjson.loads(i).items()} for b, i in rows}

    async def sync(self) -> None:
        """One small transaction at the log's own ``synchronous`` setting: in WAL mode its
        commit fsyncs the write-ahead log, and with it every transaction written before."""
        if not self._unsynced:
            return
        self._relax(False)
        self._db.execute(
            "INSERT INTO sync_marks (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1"
        )
        self._checkpointer.wrote()
        self._unsynced = False

    # -- read ----------------------------------------------------------------------------------

    def _rows(
        self, columns: str, topic: str, partition: int, offset: int, max_records: int
    ) -> list[Any]:
        topic_id, _ = self._topic(topic)
        base = _pos(topic_id, partition)
        return self._db.execute(
            f"SELECT {columns} FROM log_records WHERE pos >= ? AND pos < ? ORDER BY pos LIMIT ?",
            (base + offset, base + _OFFSET_MASK + 1, max_records),
        ).fetchall()

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 10_000
    ) -> list[Record]:
        rows = self._rows("pos, ts, key, value, headers", topic, partition, offset, max_records)
        return [
            Record(
                topic,
                partition,
                pos & _OFFSET_MASK,
                ts,
                key,
                value,
                _unpack_headers(headers) if headers else (),
            )
            for pos, ts, key, value, headers in rows
        ]

    async def read_columns(
        self, topic: str, partition: int, offset: int, max_records: int = 10_000
    ) -> Columns:
        rows = self._rows("pos, ts, key, value", topic, partition, offset, max_records)
        if not rows:
            return Columns.of(topic, partition, [])
        positions, stamps, keys, values = zip(*rows, strict=True)
        return Columns(
            topic,
            partition,
            np.array(positions, dtype=np.int64) & _OFFSET_MASK,
            np.array(stamps, dtype=np.int64),
            list(keys),
            list(values),
        )

    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        topic_id, _ = self._topic(topic)
        base = _pos(topic_id, partition)
        row = self._db.execute(
            "SELECT min(pos) FROM log_records WHERE pos >= ? AND pos < ? AND ts >= ?",
            (base, base + _OFFSET_MASK + 1, timestamp_ms),
        ).fetchone()
        if row[0] is not None:
            return int(row[0]) & _OFFSET_MASK
        return (await self.end_offsets(topic))[partition]

    async def end_offsets(self, topic: str) -> dict[int, int]:
        topic_id, _ = self._topic(topic)
        return dict(
            self._db.execute(
                "SELECT partition, next_offset FROM partitions WHERE topic_id = ? "
                "ORDER BY partition",
                (topic_id,),
            ).fetchall()
        )

    # -- consumer groups -----------------------------------------------------------------------

    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO group_offsets (grp, topic, partition, offset) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (grp, topic, partition) DO UPDATE SET offset = excluded.offset",
                [(group, tp.topic, tp.partition, offset) for tp, offset in offsets.items()],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._checkpointer.wrote()

    async def committed(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        found: dict[TopicPartition, int | None] = {}
        for tp in partitions:
            row = self._db.execute(
                "SELECT offset FROM group_offsets WHERE grp = ? AND topic = ? AND partition = ?",
                (group, tp.topic, tp.partition),
            ).fetchone()
            found[tp] = None if row is None else int(row[0])
        return found

    async def close(self) -> None:
        self._checkpointer.close()
        self._db.close()
