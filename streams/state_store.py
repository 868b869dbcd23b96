"""Where the stages keep their state: aggregates' facts, consumed offsets, and the rest.

The aggregates' facts are persisted with the eventsourcing library (its mapper, event store
and recorders; an orjson transcoder), one events table per aggregate kind. Each stage's own
tables (consumed offsets, the history of its batches, parked events, small key-value state,
technicians' last positions) are written **in the same database transaction** as the facts of
a batch, by a recorder subclass. So a crash and restart neither loses nor double-applies an
event: either a batch's facts and the offsets after it are both stored, or neither is.

SQLite (a file in the data directory) is the default; PostgreSQL is used when the database
URL is ``postgresql://...``. Both pass the same tests (tests/streams/test_state_store.py).
"""

from __future__ import annotations

import abc
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson
from eventsourcing.persistence import EventStore, Mapper, StoredEvent, Transcoder
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
)
from eventsourcing.utils import get_topic

from aggregates.facts import Fact, with_fields
from streams.checkpointer import Checkpointer

STATE_FILE = "state.sqlite3"
AGGREGATE_KINDS = ("workorder", "technician")


class OrjsonTranscoder(Transcoder):
    """Facts hold only JSON types (their data came from a validated JSON event), so orjson
    serialises them directly: several times faster than the library's default JSON
    transcoder, which matters when a day is replayed."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


_FACT_TOPIC = get_topic(Fact)


def stored_fact(fact: Fact) -> StoredEvent:
    """What the library's mapper (with :class:`OrjsonTranscoder`, no compression, no cipher:
    the stores' own) makes of a fact, without its generic steps (the topic looked up, the
    object's ``vars`` copied and two keys popped, a class version looked for). The same bytes
    (tested against the mapper); the library still reads them back.

    The stored event (a frozen dataclass of the library's, without slots) is made by
    :func:`aggregates.facts.with_fields`, as a fact is: its ``__init__`` would set the four
    fields one ``object.__setattr__`` at a time, for every fact committed."""
    return with_fields(
        StoredEvent,
        {
            "originator_id": fact.originator_id,
            "originator_version": fact.originator_version,
            "topic": _FACT_TOPIC,
            "state": orjson.dumps(
                {
                    "kind": fact.kind,
                    "event_id": fact.event_id,
                    "at": fact.at,
                    "source": fact.source,
                    "subject": fact.subject,
                    "data": fact.data,
                    "effect": fact.effect,
                }
            ),
        },
    )


def read_fact(
    mapper: Mapper[str], originator_id: str, version: int, topic: str, state: bytes
) -> Fact:
    """A stored fact read back: what the library's mapper makes of it (the same attributes,
    in the same order), without its generic steps (the topic resolved, an identifier
    converter found, an upcast looked for) for the facts :func:`stored_fact` wrote. Anything
    else takes the mapper. Every fact is read back once when a stage restores its aggregates."""
    if topic == _FACT_TOPIC:
        fields = orjson.loads(state)
        if type(fields) is dict and "class_version" not in fields:
            fields["originator_id"] = originator_id
            fields["originator_version"] = version
            return with_fields(Fact, fields)
    fact = mapper.to_domain_event(StoredEvent(originator_id, version, topic, state))
    assert isinstance(fact, Fact)
    return fact


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """An input waiting for an earlier event; rejected with ``rule``/``message`` after
    ``deadline`` (stream time)."""

    aggregate_id: str
    event_id: str
    topic: str
    partition: int
    offset: int
    time: int
    deadline: int
    rule: str
    message: str
    raw: bytes


@dataclass(slots=True)
class StageCommit:
    """Everything a stage changes besides facts, committed with them in one transaction."""

    stage: str
    offsets: dict[tuple[str, int], int]
    """(topic, partition) -> next offset to read."""
    batch: int
    batch_inputs: dict[str, tuple[int, int]]
    """``topic/partition`` -> [first, end) offsets this batch consumed (kept for audit)."""
    kv: dict[str, Any] = field(default_factory=dict)
    parked_add: list[ParkedRecord] = field(default_factory=list)
    parked_remove: list[str] = field(default_factory=list)
    """Event ids no longer parked (applied or rejected)."""
    positions: dict[str, tuple[int, float, float, float | None, float | None]] = field(
        default_factory=dict
    )
    """technician_id -> (time, lat, lon, speed_mps, heading_deg)."""


@dataclass(slots=True)
class StageState:
    """A stage's stored state, as :meth:`StateStore.load_stage` reads it back."""

    offsets: dict[tuple[str, int], int]
    batch: int
    kv: dict[str, Any]
    parked: list[ParkedRecord]
    positions: dict[str, tuple[int, float, float, float | None, float | None]]


_TABLES = (
    "CREATE TABLE IF NOT EXISTS {p}fs_offsets (stage TEXT NOT NULL, topic TEXT NOT NULL, "
    "part INTEGER NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (stage, topic, part))",
    "CREATE TABLE IF NOT EXISTS {p}fs_batches (stage TEXT NOT NULL, batch BIGINT NOT NULL, "
    "inputs TEXT NOT NULL, PRIMARY KEY (stage, batch))",
    "CREATE TABLE IF NOT EXISTS {p}fs_kv (stage TEXT NOT NULL, k TEXT NOT NULL, "
    "v TEXT NOT NULL, PRIMARY KEY (stage, k))",
    "CREATE TABLE IF NOT EXISTS {p}fs_parked (stage TEXT NOT NULL, event_id TEXT NOT NULL, "
    "aggregate_id TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL, "
    "off BIGINT NOT NULL, time BIGINT NOT NULL, deadline BIGINT NOT NULL, rule TEXT NOT NULL, "
    "message TEXT NOT NULL, raw {blob} NOT NULL, PRIMARY KEY (stage, event_id))",
    "CREATE TABLE IF NOT EXISTS {p}fs_positions (stage TEXT NOT NULL, "
    "technician_id TEXT NOT NULL, time BIGINT NOT NULL, lat DOUBLE PRECISION NOT NULL, "
    "lon DOUBLE PRECISION NOT NULL, speed DOUBLE PRECISION, heading DOUBLE PRECISION, "
    "PRIMARY KEY (stage, technician_id))",
)


class _Dialect:
    """The few SQL differences between SQLite and PostgreSQL that the stage tables meet."""

    def __init__(self, placeholder: str, prefix: str, blob: str) -> None:
        self.placeholder = placeholder
        self.prefix = prefix
        self.blob = blob

    def sql(self, statement: str) -> str:
        statement = statement.replace("{p}", self.prefix).replace("{blob}", self.blob)
        return statement.replace("?", self.placeholder)

    def tables(self) -> list[str]:
        return [self.sql(t) for t in _TABLES]


def _write_commit(cursor: Any, dialect: _Dialect, commit: StageCommit) -> None:
    """The stage-table part of a batch's transaction."""
    sql = dialect.sql
    stage = commit.stage
    if commit.offsets:
        cursor.executemany(
            sql(
                "INSERT INTO {p}fs_offsets (stage, topic, part, next_offset) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (stage, topic, part) DO UPDATE SET next_offset = excluded.next_offset"
            ),
            [(stage, t, p, o) for (t, p), o in commit.offsets.items()],
        )
    cursor.execute(
        sql("INSERT INTO {p}fs_batches (stage, batch, inputs) VALUES (?, ?, ?)"),
        (
            stage,
            commit.batch,
            orjson.dumps({k: list(v) for k, v in commit.batch_inputs.items()}).decode(),
        ),
    )
    if commit.kv:
        cursor.executemany(
            sql(
                "INSERT INTO {p}fs_kv (stage, k, v) VALUES (?, ?, ?) "
                "ON CONFLICT (stage, k) DO UPDATE SET v = excluded.v"
            ),
            [(stage, k, orjson.dumps(v).decode()) for k, v in commit.kv.items()],
        )
    if commit.parked_remove:
        cursor.executemany(
            sql("DELETE FROM {p}fs_parked WHERE stage = ? AND event_id = ?"),
            [(stage, event_id) for event_id in commit.parked_remove],
        )
    if commit.parked_add:
        cursor.executemany(
            sql(
                "INSERT INTO {p}fs_parked (stage, event_id, aggregate_id, topic, part, off, time, "
                "deadline, rule, message, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (stage, event_id) DO NOTHING"
            ),
            [
                (
                    stage,
                    r.event_id,
                    r.aggregate_id,
                    r.topic,
                    r.partition,
                    r.offset,
                    r.time,
                    r.deadline,
                    r.rule,
                    r.message,
                    r.raw,
                )
                for r in commit.parked_add
            ],
        )
    if commit.positions:
        cursor.executemany(
            sql(
                "INSERT INTO {p}fs_positions (stage, technician_id, time, lat, lon, speed, "
                "heading) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stage, technician_id) DO "
                "UPDATE SET time = excluded.time, lat = excluded.lat, lon = excluded.lon, "
                "speed = excluded.speed, heading = excluded.heading"
            ),
            [(stage, tid, *pos) for tid, pos in commit.positions.items()],
        )


class _SQLiteRecorder(SQLiteAggregateRecorder):
    """The library's SQLite recorder, also writing a :class:`StageCommit` in the same
    transaction as the facts (``insert_events(stored, stage_commit=...)``)."""

    dialect = _Dialect("?", "", "BLOB")

    def construct_create_table_statements(self) -> list[str]:
        # The library's table is WITHOUT ROWID, which copies whole rows (each fact's state,
        # about a kilobyte) into the B-tree's interior pages and splits them on every insert.
        # A rowid table with a unique index on the same key answers the same queries, still
        # refuses a second fact at one version, and appends at a fraction of the cost.
        table = self.events_table_name
        return [
            f"CREATE TABLE IF NOT EXISTS {table} (originator_id TEXT NOT NULL, "
            "originator_version INTEGER NOT NULL, topic TEXT, state BLOB)",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_position "
            f"ON {table} (originator_id, originator_version)",
            *self.dialect.tables(),
        ]

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        super()._insert_events(c, stored_events)
        commit = kwargs.get("stage_commit")
        if commit is not None:
            _write_commit(c, self.dialect, commit)


class StateStore(abc.ABC):
    """The port the stages persist through (SQLite or PostgreSQL adapter)."""

    def __init__(self) -> None:
        self._mapper: Mapper[str] = Mapper(transcoder=OrjsonTranscoder())
        self._stores: dict[str, EventStore[str]] = {}

    def _events(self, kind: str) -> EventStore[str]:
        return self._stores[kind]

    def commit(self, kind: str, facts: Sequence[Fact], commit: StageCommit) -> None:
        """Store a batch: its facts (of aggregate ``kind``) and the stage's changes, atomically."""
        stored = [stored_fact(f) for f in facts]
        self._events(kind).recorder.insert_events(stored, stage_commit=commit)

    def commit_many(self, batches: Sequence[tuple[str, Sequence[Fact], StageCommit]]) -> None:
        """Store several batches, of one or several stages, in **one** transaction: each as
        :meth:`commit` stores it, in the order given (a stage's batches in their order)."""
        if batches:
            self._commit_many(
                [(k, [stored_fact(f) for f in fs], c) for k, fs, c in _upserts_once(batches)]
            )

    @abc.abstractmethod
    def _commit_many(self, batches: Sequence[tuple[str, list[StoredEvent], StageCommit]]) -> None:
        """:meth:`commit_many` with the facts already mapped to stored events."""

    def facts(self, kind: str, aggregate_id: str) -> list[Fact]:
        """An aggregate's facts in order."""
        out = []
        for stored in self._events(kind).recorder.select_events(aggregate_id):
            fact = self._mapper.to_domain_event(stored)
            assert isinstance(fact, Fact)
            out.append(fact)
        return out

    @abc.abstractmethod
    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read-only statement (``{p}`` stands for the table prefix, ``?`` for a
        parameter) and return its rows as tuples."""

    def all_facts(self, kind: str) -> Iterator[Fact]:
        """Every fact of ``kind``, grouped by aggregate, each aggregate's in version order."""
        rows = self._query(
            f"SELECT originator_id, originator_version, topic, state FROM {{p}}{kind}_facts "
            "ORDER BY originator_id, originator_version"
        )
        return self._decode_rows(rows)

    def aggregate_ids(self, kind: str) -> list[str]:
        """The ids of every stored aggregate of ``kind``, sorted."""
        rows = self._query(f"SELECT DISTINCT originator_id FROM {{p}}{kind}_facts ORDER BY 1")
        return [r[0] for r in rows]

    def load_stage(self, stage: str) -> StageState:
        """What a stage committed last (empty for a new stage)."""
        return _stage_state({name: self._query(q, (stage,)) for name, q in _STAGE_QUERIES.items()})

    def batches(self, stage: str, after: int = 0) -> list[tuple[int, dict[str, tuple[int, int]]]]:
        """The stage's batches numbered above ``after``, in order, each with the input ranges
        it consumed."""
        rows = self._query(
            "SELECT batch, inputs FROM {p}fs_batches WHERE stage = ? AND batch > ? ORDER BY batch",
            (stage, after),
        )
        return [(b, {k: (v[0], v[1]) for k, v in orjson.loads(i).items()}) for b, i in rows]

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def _decode_rows(self, rows: Sequence[Any]) -> Iterator[Fact]:
        for originator_id, version, topic, state in rows:
            yield read_fact(self._mapper, originator_id, version, topic, bytes(state))


def _upserts_once(
    batches: Sequence[tuple[str, Sequence[Fact], StageCommit]],
) -> list[tuple[str, Sequence[Fact], StageCommit]]:
    """The batches of one transaction with each stage's upserted rows (offsets, kv entries,
    positions) written once, with their last values, by the stage's last batch: in one
    transaction a later batch's row replaces an earlier one's anyway, and a group of rounds
    otherwise upserts every moving technician's position once per round. Facts, batch
    records and parked events are written as they were, in order."""
    last = {commit.stage: i for i, (_, _, commit) in enumerate(batches)}
    if len(last) == len(batches):
        return list(batches)
    merged: dict[str, tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]] = {}
    out = []
    for i, (kind, facts, commit) in enumerate(batches):
        offsets, kv, positions = merged.setdefault(commit.stage, ({}, {}, {}))
        offsets.update(commit.offsets)
        kv.update(commit.kv)
        positions.update(commit.positions)
        if last[commit.stage] == i:
            written = replace(commit, offsets=offsets, kv=kv, positions=positions)
        else:
            written = replace(commit, offsets={}, kv={}, positions={})
        out.append((kind, facts, written))
    return out


def _stage_state(rows: Mapping[str, Sequence[Any]]) -> StageState:
    return StageState(
        offsets={(t, p): o for t, p, o in rows["offsets"]},
        batch=max((b for (b,) in rows["batch"] if b is not None), default=0),
        kv={k: orjson.loads(v) for k, v in rows["kv"]},
        parked=[
            ParkedRecord(a, e, t, p, o, tm, d, r, m, bytes(raw))
            for e, a, t, p, o, tm, d, r, m, raw in rows["parked"]
        ],
        positions={tid: (tm, la, lo, sp, hd) for tid, tm, la, lo, sp, hd in rows["positions"]},
    )


_STAGE_QUERIES = {
    "offsets": "SELECT topic, part, next_offset FROM {p}fs_offsets WHERE stage = ?",
    "batch": "SELECT max(batch) FROM {p}fs_batches WHERE stage = ?",
    "kv": "SELECT k, v FROM {p}fs_kv WHERE stage = ?",
    "parked": "SELECT event_id, aggregate_id, topic, part, off, time, deadline, rule, message, "
    "raw FROM {p}fs_parked WHERE stage = ? ORDER BY time, event_id",
    "positions": "SELECT technician_id, time, lat, lon, speed, heading FROM {p}fs_positions "
    "WHERE stage = ?",
}


class _NormalSyncPool(SQLiteConnectionPool):
    """The library's pool, with ``synchronous=NORMAL`` on every connection.

    In WAL mode NORMAL keeps every transaction atomic and survives a crash of the process; on
    a power cut it may lose the last commits. For the state that is safe by construction: a
    batch's facts and its offsets are one transaction, so they are lost together and the batch
    is simply processed again (its outputs, already durable on the log, repeat with the same
    ids, which consumers ignore). It saves an fsync per batch.
    """

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection.cursor().execute("PRAGMA synchronous=NORMAL")
        # The store's Checkpointer copies the WAL back, off the committing thread.
        connection.cursor().execute("PRAGMA wal_autocheckpoint=0")
        return connection


FACT_BYTES = 400
"""About what a stored fact takes (its state as the library stores it, and its index entry)."""


class SqliteStateStore(StateStore):
    """The state in a SQLite file (``DATA_DIR/state.sqlite3``), WAL mode."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._datastore = SQLiteDatastore(db_name=str(path), originator_id_type="text")
        self._datastore.pool.close()
        self._datastore.pool = _NormalSyncPool(db_name=str(path))
        self._lock = threading.Lock()
        for kind in AGGREGATE_KINDS:
            recorder = _SQLiteRecorder(self._datastore, events_table_name=f"{kind}_facts")
            recorder.create_table()
            self._stores[kind] = EventStore(self._mapper, recorder)
        self._dialect = _SQLiteRecorder.dialect
        self._checkpointer = Checkpointer(path)

    @classmethod
    def in_dir(cls, data_dir: Path) -> SqliteStateStore:
        return cls(Path(data_dir) / STATE_FILE)

    def commit(self, kind: str, facts: Sequence[Fact], commit: StageCommit) -> None:
        super().commit(kind, facts, commit)
        self._checkpointer.wrote(FACT_BYTES * len(facts))

    def _commit_many(self, batches: Sequence[tuple[str, list[StoredEvent], StageCommit]]) -> None:
        with self._datastore.transaction(commit=True) as c:
            for kind, stored, commit in batches:
                recorder = self._events(kind).recorder
                assert isinstance(recorder, _SQLiteRecorder)
                recorder._insert_events(c, stored, stage_commit=commit)
        self._checkpointer.wrote(FACT_BYTES * sum(len(stored) for _, stored, _ in batches))

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._datastore.transaction(commit=False) as c:
            c.execute(self._dialect.sql(statement), params)
            return [tuple(row) for row in c.fetchall()]

    def close(self) -> None:
        self._checkpointer.close()
        self._datastore.close()


# -- PostgreSQL -------------------------------------------------------------------------------

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class PostgresUrl:
    """The parts of ``postgresql://user:password@host:port/dbname?schema=NAME``."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    schema: str

    @classmethod
    def parse(cls, url: str) -> PostgresUrl:
        parsed = urlparse(url)
        if parsed.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"not a postgresql:// URL: {url!r}")
        query = dict(p.split("=", 1) for p in parsed.query.split("&") if "=" in p)
        schema = query.get("schema", "public")
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must be a lower-case SQL identifier, not {schema!r}")
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 5432,
            user=unquote(parsed.username or "postgres"),
            password=unquote(parsed.password or ""),
            dbname=(parsed.path or "/postgres").lstrip("/") or "postgres",
            schema=schema,
        )


class PostgresStateStore(StateStore):
    """The state in a PostgreSQL database (the schema of the URL, default ``public``)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        from eventsourcing.postgres import PostgresAggregateRecorder, PostgresDatastore

        parts = PostgresUrl.parse(url)
        self._datastore = PostgresDatastore(
            dbname=parts.dbname,
            host=parts.host,
            port=parts.port,
            user=parts.user,
            password=parts.password,
            schema=parts.schema,
            originator_id_type="text",
            pool_size=2,
        )
        self._dialect = _Dialect("%s", f"{parts.schema}.", "BYTEA")
        dialect = self._dialect
        datastore = self._datastore

        class _PgRecorder(PostgresAggregateRecorder):
            """The library's PostgreSQL recorder, with the stage commit in the same
            transaction (the library inserts in autocommit mode; a batch needs one
            transaction)."""

            def insert_events(
                self, stored_events: Sequence[StoredEvent], **kwargs: Any
            ) -> Sequence[int] | None:
                with datastore.transaction(commit=True) as curs:
                    if stored_events:
                        self._insert_stored_events(curs, stored_events)
                    commit = kwargs.get("stage_commit")
                    if commit is not None:
                        _write_commit(curs, dialect, commit)
                return None

        with datastore.transaction(commit=True) as curs:
            curs.execute(f"CREATE SCHEMA IF NOT EXISTS {parts.schema}")
            for statement in dialect.tables():
                curs.execute(statement)
        for kind in AGGREGATE_KINDS:
            recorder = _PgRecorder(datastore, events_table_name=f"{kind}_facts")
            recorder.create_table()
            self._stores[kind] = EventStore(self._mapper, recorder)
        self.schema = parts.schema

    def _commit_many(self, batches: Sequence[tuple[str, list[StoredEvent], StageCommit]]) -> None:
        from eventsourcing.postgres import PostgresAggregateRecorder

        with self._datastore.transaction(commit=True) as curs:
            for kind, stored, commit in batches:
                if stored:
                    recorder = self._events(kind).recorder
                    assert isinstance(recorder, PostgresAggregateRecorder)
                    recorder._insert_stored_events(curs, stored)
                _write_commit(curs, self._dialect, commit)

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._datastore.transaction(commit=False) as curs:
            curs.execute(self._dialect.sql(statement), params)
            return [tuple(row.values()) for row in curs.fetchall()]

    def close(self) -> None:
        self._datastore.close()


def open_state_store(data_dir: Path, db: str | None) -> StateStore:
    """PostgreSQL when ``db`` is a postgresql:// URL, else SQLite in ``data_dir``."""
    if db:
        return PostgresStateStore(db)
    return SqliteStateStore.in_dir(data_dir)
