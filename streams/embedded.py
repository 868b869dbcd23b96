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

Records are stored in segments: one row per run of up to :data:`SEGMENT_RECORDS` records of
one partition appended together, its timestamps, key, value and header lengths packed as
arrays followed by the bytes themselves (see :func:`_pack`). An append writes one row per
partition it touches instead of one per record, and a read slices records out of a few
blobs; SQLite's cost per row, not per byte, was most of the log's time.

Retention and compaction settings are recorded but not enforced: the embedded log keeps
everything, which is what a replay of a day or a week on one machine wants.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import accumulate, repeat
from pathlib import Path
from struct import pack, unpack_from

import numpy as np
import numpy.typing as npt
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

_log = logging.getLogger("fieldstream.log")

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
CREATE TABLE IF NOT EXISTS log_segments (
    pos INTEGER PRIMARY KEY,
    n INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    data BLOB NOT NULL
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
    """A position: topic, partition and offset packed into SQLite's 64-bit rowid. A segment's
    row key is the position of its first record.

    Keying the table by position keeps its B-tree interior pages to bare integers (a WITHOUT
    ROWID table copies whole rows, values included, into them) and makes reading a partition
    from an offset one range scan of the table itself, with no separate index.
    """
    return (topic_id << (_OFFSET_BITS + _PARTITION_BITS)) | (partition << _OFFSET_BITS) | offset


_OFFSET_MASK = (1 << _OFFSET_BITS) - 1

SEGMENT_RECORDS = 1_000
"""Records per segment at most. A read that starts inside a segment copies the whole blob,
so a segment is kept to a few hundred kilobytes of typical records."""

_TIMES = np.dtype("<i8")


def _pack(
    stamps: Sequence[int],
    keys: Sequence[bytes | None],
    values: Sequence[bytes],
    headers: Sequence[bytes | None],
) -> bytes:
    """One segment's blob: ``n`` timestamps (int64), then ``n`` key lengths (-1 for no key),
    ``n`` value lengths and ``n`` packed-header lengths (0 for none) as int32, all
    little-endian, then the keys, the values and the packed headers, each run concatenated."""
    if None in keys:
        key_lengths = [-1 if k is None else len(k) for k in keys]
        key_bytes = b"".join([k for k in keys if k is not None])
    else:
        key_lengths = list(map(len, keys))  # type: ignore[arg-type]
        key_bytes = b"".join(keys)  # type: ignore[arg-type]
    if any(headers):
        header_lengths = [0 if h is None else len(h) for h in headers]
        header_bytes = b"".join([h for h in headers if h is not None])
    else:
        header_lengths = [0] * len(values)
        header_bytes = b""
    n = len(values)
    return b"".join(
        (
            pack(f"<{n}q", *stamps),
            pack(f"<{3 * n}i", *key_lengths, *map(len, values), *header_lengths),
            key_bytes,
            b"".join(values),
            header_bytes,
        )
    )


class _Segment:
    """A segment's blob read back: records' bytes sliced out of it by the running sums of
    their lengths. Plain ``struct`` and ``itertools``: most reads of the internal topics take
    a few records out of a few small segments, where array set-up would cost more than the
    slicing."""

    __slots__ = ("_keyless", "_lengths", "_starts", "data", "n")

    def __init__(self, data: bytes, n: int) -> None:
        self.data = data
        self.n = n
        lengths = unpack_from(f"<{3 * n}i", data, 8 * n)
        self._lengths = lengths
        key_lengths = lengths[:n]
        self._keyless = min(key_lengths, default=0) < 0
        """Whether some record has no key (length -1, no bytes)."""
        if self._keyless:
            key_lengths = tuple(k if k > 0 else 0 for k in key_lengths)
        # Where each key, value and header run starts in the blob, then where the last ends.
        self._starts = list(accumulate(key_lengths + lengths[n:], initial=20 * n))

    def stamps(self, start: int, stop: int) -> list[int]:
        return list(unpack_from(f"<{stop - start}q", self.data, 8 * start))

    def stamp_array(self, start: int, stop: int) -> npt.NDArray[np.int64]:
        return np.frombuffer(self.data, _TIMES, stop - start, 8 * start)

    def _slices(self, first: int, last: int) -> list[bytes]:
        data = self.data
        starts = self._starts
        ends = starts[first + 1 : last + 1]
        return [data[a:b] for a, b in zip(starts[first:last], ends, strict=True)]

    def keys(self, start: int, stop: int) -> list[bytes | None]:
        found: list[bytes | None] = list(self._slices(start, stop))
        if self._keyless:
            for i, length in enumerate(self._lengths[start:stop]):
                if length < 0:
                    found[i] = None
        return found

    def values(self, start: int, stop: int) -> list[bytes]:
        n = self.n
        return self._slices(n + start, n + stop)

    def headers(self, start: int, stop: int) -> list[Headers]:
        n = self.n
        if not any(self._lengths[2 * n + start : 2 * n + stop]):
            return [()] * (stop - start)
        return [
            _unpack_headers(blob) if blob else ()
            for blob in self._slices(2 * n + start, 2 * n + stop)
        ]


def _segment_rows(
    topic_id: int, partition: int, first: int, records: Sequence[OutRecord], now: int
) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """The segment rows of ``records`` (one partition's, in order, the first at offset
    ``first``), records without a timestamp stamped ``now``; and their blobs' total size."""
    rows = []
    size = 0
    for at in range(0, len(records), SEGMENT_RECORDS):
        _topics, values, keys, stamps, headers, _partitions = zip(
            *records[at : at + SEGMENT_RECORDS], strict=True
        )
        if None in stamps:
            stamps = tuple(now if t is None else t for t in stamps)
        data = _pack(stamps, keys, values, [_pack_headers(h) if h else None for h in headers])
        size += len(data)
        rows.append((_pos(topic_id, partition, first + at), len(values), max(stamps), data))
    return rows, size


def _db_path(db: sqlite3.Connection) -> str:
    """The file of the connection's main database."""
    return str(db.execute("PRAGMA database_list").fetchone()[2])


def _migrate(db: sqlite3.Connection) -> None:
    """Move the records of a log written by an earlier version into segments, in one
    transaction: a ``log_records`` table (one row per record, keyed by position) or, older
    still, a ``records`` table keyed by topic, partition and offset."""
    tables = {
        name
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('records', 'log_records')"
        )
    }
    if not tables:
        return
    source = (
        "SELECT pos, ts, key, value, headers FROM log_records ORDER BY pos"
        if "log_records" in tables
        else f"SELECT (topic_id << {_OFFSET_BITS + _PARTITION_BITS}) | (partition << "
        f"{_OFFSET_BITS}) | offset AS pos, ts, key, value, headers FROM records ORDER BY pos"
    )
    # Once per data directory, and about a second per 100,000 records: say why this open waits.
    _log.warning("converting the log to segments (once, for this version): %s", _db_path(db))
    db.execute("BEGIN IMMEDIATE")
    try:
        run: list[OutRecord] = []
        run_start = -1
        reader = db.cursor()
        writer = db.cursor()

        def flush() -> None:
            if run:
                head = run_start >> _OFFSET_BITS
                rows, _ = _segment_rows(
                    head >> _PARTITION_BITS,
                    head & (MAX_PARTITIONS - 1),
                    run_start & _OFFSET_MASK,
                    run,
                    0,
                )
                writer.executemany(
                    "INSERT INTO log_segments (pos, n, max_ts, data) VALUES (?, ?, ?, ?)", rows
                )
                run.clear()

        for pos, ts, key, value, headers in reader.execute(source):
            # A run is one partition's consecutive offsets.
            if not run or pos != run_start + len(run) or len(run) == SEGMENT_RECORDS:
                flush()
                run_start = pos
            run.append(OutRecord("", value, key, ts, _unpack_headers(headers) if headers else ()))
        flush()
        for table in tables:
            db.execute(f"DROP TABLE {table}")
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
"""Batch marks kept per stage at least (older ones are deleted as new ones are written, every
:data:`_MARKS_PRUNED_EVERY` batches): a restart needs only those after the stage's last
commit."""

_MARKS_PRUNED_EVERY = 64


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
        self._next_offsets: dict[tuple[int, int], int] = {}
        """Every partition's next offset as of this connection's last append, valid while
        :attr:`_data_version` says no other connection has written since."""
        self._data_version: int | None = None

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

    def reopen(self) -> EmbeddedLog:
        """A new connection to the same log, with the same ``synchronous`` setting (for a
        process forked from this one, which must not use this connection)."""
        return EmbeddedLog.open(self.path.parent, synchronous=self._synchronous)

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """No checkpoint of this log runs inside this block (see
        :meth:`streams.checkpointer.Checkpointer.paused`): fork inside it."""
        with self._checkpointer.paused():
            yield

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
        # Resolve every record's partition, and group the records by it, before taking the
        # write lock.
        placed: list[tuple[int, int]] = []
        groups: dict[tuple[int, int], list[OutRecord]] = {}
        for r in records:
            topic_id, count = topics[r.topic]
            if r.partition is not None:
                if not 0 <= r.partition < count:
                    raise ValueError(f"{r.topic} has no partition {r.partition}")
                tp = (topic_id, r.partition)
            elif r.key is not None:
                tp = (topic_id, partition_for(r.key, count))
            else:
                tp = (topic_id, 0)
            placed.append(tp)
            group = groups.get(tp)
            if group is None:
                groups[tp] = [r]
            else:
                group.append(r)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # The next offsets as of inside the write transaction: another connection (in this
            # process or another) may have appended since this one last did, which SQLite's
            # data_version tells (it changes with every commit of another connection).
            version = db.execute("PRAGMA data_version").fetchone()[0]
            known = self._next_offsets
            if version != self._data_version or not all(tp in known for tp in groups):
                known = self._next_offsets = {
                    (t, p): o
                    for t, p, o in db.execute(
                        "SELECT topic_id, partition, next_offset FROM partitions"
                    )
                }
                self._data_version = version
            next_offset = {tp: known[tp] for tp in groups}
            now = time.time_ns() // 1_000_000
            size = 0
            rows: list[tuple[int, int, int, bytes]] = []
            for tp, group in groups.items():
                made, made_size = _segment_rows(tp[0], tp[1], next_offset[tp], group, now)
                rows += made
                size += made_size
            positions: list[tuple[int, int]] = []
            for tp in placed:
                offset = next_offset[tp]
                next_offset[tp] = offset + 1
                positions.append((tp[1], offset))
            db.executemany(
                "INSERT INTO log_segments (pos, n, max_ts, data) VALUES (?, ?, ?, ?)", rows
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
                if mark.batch % _MARKS_PRUNED_EVERY == 0:
                    db.execute(
                        "DELETE FROM batch_marks WHERE stage = ? AND batch <= ?",
                        (mark.stage, mark.batch - MARKS_KEPT),
                    )
            db.execute("COMMIT")
        except BaseException:
            self._data_version = None  # the offsets known may be ahead of the log's
            db.execute("ROLLBACK")
            raise
        known.update(next_offset)
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

    def _spans(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[tuple[_Segment, int, int, int]]:
        """The segments holding up to ``max_records`` records of a partition from ``offset``
        on, in offset order, each with the range of its records wanted and the offset of the
        first of those."""
        topic_id, _ = self._topic(topic)
        base = _pos(topic_id, partition)
        at = base + offset
        cursor = self._db.execute(
            # From the last segment that starts at or before the offset (it may hold it).
            "SELECT pos, n, data FROM log_segments WHERE pos >= coalesce("
            "(SELECT max(pos) FROM log_segments WHERE pos >= ? AND pos <= ?), ?) "
            "AND pos < ? ORDER BY pos",
            (base, at, base, base + _OFFSET_MASK + 1),
        )
        spans = []
        wanted = max_records
        try:
            for pos, n, data in cursor:
                start = max(0, at - pos)
                if start >= n:
                    continue
                stop = min(n, start + wanted)
                spans.append((_Segment(data, n), start, stop, (pos & _OFFSET_MASK) + start))
                wanted -= stop - start
                if wanted <= 0:
                    break
        finally:
            cursor.close()  # ends the statement, and with it the read snapshot
        return spans

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 10_000
    ) -> list[Record]:
        found: list[Record] = []
        for segment, start, stop, first in self._spans(topic, partition, offset, max_records):
            # tuple.__new__ on the fields: half the cost of calling the named tuple's class.
            found += map(
                tuple.__new__,
                repeat(Record),
                zip(
                    repeat(topic),
                    repeat(partition),
                    range(first, first + stop - start),
                    segment.stamps(start, stop),
                    segment.keys(start, stop),
                    segment.values(start, stop),
                    segment.headers(start, stop),
                ),
            )
        return found

    def value_at(self, topic: str, partition: int, offset: int) -> bytes | None:
        """The value of one record (None if there is none at ``offset``), read at once: for
        the few whose event id a stage needs from pings it did not read itself."""
        for segment, start, stop, first in self._spans(topic, partition, offset, 1):
            if first == offset and stop > start:
                return segment.values(start, stop)[0]
        return None

    async def read_columns(
        self, topic: str, partition: int, offset: int, max_records: int = 10_000
    ) -> Columns:
        spans = self._spans(topic, partition, offset, max_records)
        if not spans:
            return Columns.of(topic, partition, [])
        keys: list[bytes | None] = []
        values: list[bytes] = []
        for segment, start, stop, _first in spans:
            keys += segment.keys(start, stop)
            values += segment.values(start, stop)
        return Columns(
            topic,
            partition,
            np.concatenate(
                [
                    np.arange(first, first + stop - start, dtype=np.int64)
                    for _s, start, stop, first in spans
                ]
            ),
            np.concatenate(
                [segment.stamp_array(start, stop) for segment, start, stop, _f in spans]
            ),
            keys,
            values,
        )

    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        topic_id, _ = self._topic(topic)
        base = _pos(topic_id, partition)
        # The first segment holding a record at or after the time holds the first such record.
        row = self._db.execute(
            "SELECT pos, n, data FROM log_segments WHERE pos >= ? AND pos < ? AND max_ts >= ? "
            "ORDER BY pos LIMIT 1",
            (base, base + _OFFSET_MASK + 1, timestamp_ms),
        ).fetchone()
        if row is not None:
            pos, n, data = row
            later = np.frombuffer(data, _TIMES, n) >= timestamp_ms
            return int(pos & _OFFSET_MASK) + int(np.argmax(later))
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
