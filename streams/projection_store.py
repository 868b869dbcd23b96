"""Where the projection lives: the KPI table, visit facts, the live-tracking view, and the
fold's own state, in SQLite (default) or PostgreSQL.

Tables (all prefixed ``kp_``, so they can share a database and schema with the pipeline's
state store):

========================= ============================================================
``kp_kpi``                one row per (day, dimension, group, metric): the KPI tables
``kp_visits``             one row per visit: the facts the KPIs are computed from
``kp_live_technicians``   per technician: last in-shift position, status, jobs
``kp_live_work_orders``   per work order: status, promised window, ETA, active alert
``kp_offsets``            the next offset to read of every input partition
``kp_meta``               newest event time seen, its record, the days published
``kp_docs``               the fold's entities (JSON documents)
``kp_track``, ``kp_eta``  GPS tracks and ETA points, in chunks (one per batch, compacted)
========================= ============================================================

:meth:`ProjectionStore.commit` writes one batch's rows **and** the offsets after the batch in
one transaction: after a crash either both are there or neither is, so a restart neither
counts an event twice nor loses one.

SQLite: ``DATA_DIR/projections.sqlite3`` in WAL mode with ``synchronous=NORMAL`` (a crash of
the process loses nothing committed; a power cut may lose the last batches, offsets included,
which are then simply projected again). PostgreSQL: ``postgresql://user@host:port/db`` with an
optional ``?schema=NAME`` (as for the pipeline's state store), through psycopg.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from projections.fold import Changes
from projections.views import (
    LIVE_TECHNICIAN_COLUMNS,
    LIVE_WORK_ORDER_COLUMNS,
    VISIT_FACT_COLUMNS,
)
from streams.checkpointer import Checkpointer
from streams.state_store import PostgresUrl

STORE_FILE = "projections.sqlite3"

_VISIT_TYPES = {
    "visit": "INTEGER",
    "fixed": "BOOLEAN",
    "late": "BOOLEAN",
    "part_missing": "BOOLEAN",
    "travel_min": "DOUBLE PRECISION",
    "travel_km": "DOUBLE PRECISION",
    "work_min": "DOUBLE PRECISION",
    "alert_lead_min": "DOUBLE PRECISION",
}
_LIVE_TYPES = {
    "on_shift": "BOOLEAN",
    "alert_active": "BOOLEAN",
    "queue_length": "INTEGER",
    "lat": "DOUBLE PRECISION",
    "lon": "DOUBLE PRECISION",
    "speed_mps": "DOUBLE PRECISION",
    "heading_deg": "DOUBLE PRECISION",
    "alert_probability": "DOUBLE PRECISION",
}
_TEXT = ("id", "day", "team", "region", "job_type", "by", "status", "name", "order", "message")


def _column_type(name: str, overrides: dict[str, str]) -> str:
    if name in overrides:
        return overrides[name]
    if name.endswith(_TEXT) or name in ("current_work_order", "next_work_order"):
        return "TEXT"
    return "BIGINT"


def _table(name: str, columns: Sequence[str], key: Sequence[str], types: dict[str, str]) -> str:
    cols = ", ".join(f"{c} {_column_type(c, types)}" for c in columns)
    return f"CREATE TABLE IF NOT EXISTS {{p}}{name} ({cols}, PRIMARY KEY ({', '.join(key)}))"


_TABLES = (
    "CREATE TABLE IF NOT EXISTS {p}kp_offsets (topic TEXT NOT NULL, part INTEGER NOT NULL, "
    "next_offset BIGINT NOT NULL, PRIMARY KEY (topic, part))",
    "CREATE TABLE IF NOT EXISTS {p}kp_meta (k TEXT NOT NULL, v TEXT NOT NULL, PRIMARY KEY (k))",
    "CREATE TABLE IF NOT EXISTS {p}kp_docs (kind TEXT NOT NULL, id TEXT NOT NULL, "
    "doc {blob} NOT NULL, PRIMARY KEY (kind, id))",
    "CREATE TABLE IF NOT EXISTS {p}kp_track (technician_id TEXT NOT NULL, chunk INTEGER NOT NULL, "
    "newest BIGINT NOT NULL, data {blob} NOT NULL, state {blob} NOT NULL, "
    "PRIMARY KEY (technician_id, chunk))",
    "CREATE TABLE IF NOT EXISTS {p}kp_eta (chunk INTEGER NOT NULL, data {blob} NOT NULL, "
    "PRIMARY KEY (chunk))",
    "CREATE TABLE IF NOT EXISTS {p}kp_kpi (day TEXT NOT NULL, dimension TEXT NOT NULL, "
    "grp TEXT NOT NULL, metric TEXT NOT NULL, value DOUBLE PRECISION, "
    "PRIMARY KEY (day, dimension, grp, metric))",
    _table("kp_visits", VISIT_FACT_COLUMNS, ("work_order_id", "visit"), _VISIT_TYPES),
    _table("kp_live_technicians", LIVE_TECHNICIAN_COLUMNS, ("technician_id",), _LIVE_TYPES),
    _table("kp_live_work_orders", LIVE_WORK_ORDER_COLUMNS, ("work_order_id",), _LIVE_TYPES),
)


def _upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {{p}}{table} ({names}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
    )


_SQL = {
    "offsets": _upsert("kp_offsets", ("topic", "part", "next_offset"), ("topic", "part")),
    "meta": _upsert("kp_meta", ("k", "v"), ("k",)),
    "docs": _upsert("kp_docs", ("kind", "id", "doc"), ("kind", "id")),
    "eta_reset": "DELETE FROM {p}kp_eta",
    "eta_chunks": _upsert("kp_eta", ("chunk", "data"), ("chunk",)),
    "docs_deleted": "DELETE FROM {p}kp_docs WHERE kind = ? AND id = ?",
    "chunk_reset": "DELETE FROM {p}kp_track WHERE technician_id = ?",
    "chunk_prune": "DELETE FROM {p}kp_track WHERE technician_id = ? AND newest < ?",
    "chunks": _upsert("kp_track", ("technician_id", "chunk", "newest", "data", "state"),
                      ("technician_id", "chunk")),
    "kpi": _upsert("kp_kpi", ("day", "dimension", "grp", "metric", "value"),
                   ("day", "dimension", "grp", "metric")),
    "kpi_deleted": "DELETE FROM {p}kp_kpi WHERE day = ? AND dimension = ? AND grp = ?",
    "facts": _upsert("kp_visits", VISIT_FACT_COLUMNS, ("work_order_id", "visit")),
    "live_technicians": _upsert("kp_live_technicians", LIVE_TECHNICIAN_COLUMNS,
                                ("technician_id",)),
    "live_work_orders": _upsert("kp_live_work_orders", LIVE_WORK_ORDER_COLUMNS,
                                ("work_order_id",)),
}  # fmt: skip


@dataclass(slots=True)
class Loaded:
    """Everything a restarting projection reads back."""

    offsets: dict[tuple[str, int], int]
    meta: dict[str, Any]
    docs: list[tuple[str, str, bytes]]
    chunks: list[tuple[str, bytes, bytes]]
    eta_chunks: list[bytes]
    kpi: list[tuple[str, str, str, str, float | None]]
    facts: list[tuple[Any, ...]]
    live_technicians: list[tuple[Any, ...]]
    live_work_orders: list[tuple[Any, ...]]


class ProjectionStore(abc.ABC):
    """The port: SQLite and PostgreSQL adapters share every statement but the dialect."""

    placeholder = "?"
    prefix = ""
    blob = "BLOB"

    def sql(self, statement: str) -> str:
        statement = statement.replace("{p}", self.prefix).replace("{blob}", self.blob)
        return statement.replace("?", self.placeholder)

    @abc.abstractmethod
    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction, committed on normal exit, rolled back on error."""

    @abc.abstractmethod
    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read-only statement (``{p}`` = table prefix, ``?`` = parameter) -> rows."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection (idempotent)."""

    clustered = ""
    """Appended to the CREATE TABLE of the KPI table (SQLite: ``WITHOUT ROWID``: its small
    rows are stored in key order, which makes its many upserts cheaper)."""

    def create(self) -> None:
        with self._transaction() as cur:
            for statement in _TABLES:
                clustered = self.clustered if "kp_kpi " in statement else ""
                cur.execute(self.sql(statement) + clustered)

    # -- writing ------------------------------------------------------------------------------

    def commit(
        self, changes: Changes, offsets: dict[tuple[str, int], int], meta: dict[str, Any]
    ) -> None:
        """Write one batch: its rows, the offsets after it and the meta, atomically."""
        sql = self.sql
        with self._transaction() as cur:
            if changes.eta_reset:
                cur.execute(sql(_SQL["eta_reset"]))
            if changes.eta_chunks:
                cur.executemany(sql(_SQL["eta_chunks"]), changes.eta_chunks)
            if changes.chunk_prunes:  # before this batch's chunks (which carry the state)
                cur.executemany(sql(_SQL["chunk_prune"]), changes.chunk_prunes)
            if changes.chunk_resets:
                cur.executemany(sql(_SQL["chunk_reset"]), [(t,) for t in changes.chunk_resets])
            for name in ("docs", "chunks", "kpi", "facts", "live_technicians", "live_work_orders"):
                rows: list[Any] = getattr(changes, name)
                if rows:
                    cur.executemany(sql(_SQL[name]), rows)
            if changes.kpi_deleted:
                cur.executemany(sql(_SQL["kpi_deleted"]), changes.kpi_deleted)
            if changes.docs_deleted:
                cur.executemany(sql(_SQL["docs_deleted"]), changes.docs_deleted)
            if offsets:
                cur.executemany(
                    sql(_SQL["offsets"]), [(t, p, o) for (t, p), o in sorted(offsets.items())]
                )
            if meta:
                cur.executemany(
                    sql(_SQL["meta"]),
                    [(key, orjson.dumps(value).decode()) for key, value in sorted(meta.items())],
                )

    # -- reading ------------------------------------------------------------------------------

    def load(self) -> Loaded:
        q = self.query
        docs = q("SELECT kind, id, doc FROM {p}kp_docs ORDER BY kind, id")
        chunks = q(
            "SELECT technician_id, data, state FROM {p}kp_track ORDER BY technician_id, chunk"
        )
        kpi = q("SELECT day, dimension, grp, metric, value FROM {p}kp_kpi")
        return Loaded(
            offsets=self.offsets(),
            meta=self.meta(),
            docs=[(kind, key, bytes(doc)) for kind, key, doc in docs],
            chunks=[(t, bytes(d), bytes(st)) for t, d, st in chunks],
            eta_chunks=[bytes(d) for (d,) in q("SELECT data FROM {p}kp_eta ORDER BY chunk")],
            kpi=[(d, dim, g, m, v) for d, dim, g, m, v in kpi],
            facts=q(f"SELECT {', '.join(VISIT_FACT_COLUMNS)} FROM {{p}}kp_visits"),
            live_technicians=q(
                f"SELECT {', '.join(LIVE_TECHNICIAN_COLUMNS)} FROM {{p}}kp_live_technicians"
            ),
            live_work_orders=q(
                f"SELECT {', '.join(LIVE_WORK_ORDER_COLUMNS)} FROM {{p}}kp_live_work_orders"
            ),
        )

    def offsets(self) -> dict[tuple[str, int], int]:
        rows = self.query("SELECT topic, part, next_offset FROM {p}kp_offsets")
        return {(t, p): o for t, p, o in rows}

    def meta(self) -> dict[str, Any]:
        return {key: orjson.loads(v) for key, v in self.query("SELECT k, v FROM {p}kp_meta")}

    def days(self) -> list[str]:
        """Every day the KPI table has rows for, oldest first."""
        return [d for (d,) in self.query("SELECT DISTINCT day FROM {p}kp_kpi ORDER BY day")]

    def kpi_rows(
        self, days: Sequence[str] | None = None, dimension: str | None = None
    ) -> list[tuple[str, str, str, str, float | None]]:
        """KPI rows (day, dimension, group, metric, value), sorted."""
        where: list[str] = []
        params: list[Any] = []
        if days is not None:
            where.append(f"day IN ({', '.join('?' for _ in days)})")
            params += list(days)
        if dimension is not None:
            where.append("dimension = ?")
            params.append(dimension)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.query(
            "SELECT day, dimension, grp, metric, value FROM {p}kp_kpi"
            + clause
            + " ORDER BY day, dimension, grp, metric",
            params,
        )
        return [(d, dim, g, m, v) for d, dim, g, m, v in rows]

    def _dicts(
        self, table: str, columns: Sequence[str], where: str = "", params: Sequence[Any] = ()
    ) -> list[dict[str, Any]]:
        rows = self.query(
            f"SELECT {', '.join(columns)} FROM {{p}}{table}{where} ORDER BY {columns[0]}", params
        )
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def visit_facts(self, days: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per visit (see ``kp_visits``), optionally of some days only."""
        if days is None:
            return self._dicts("kp_visits", VISIT_FACT_COLUMNS)
        where = f" WHERE day IN ({', '.join('?' for _ in days)})"
        return self._dicts("kp_visits", VISIT_FACT_COLUMNS, where, list(days))

    def live_technicians(self) -> list[dict[str, Any]]:
        """The live view of every technician (position only while on shift)."""
        return self._dicts("kp_live_technicians", LIVE_TECHNICIAN_COLUMNS)

    def live_work_orders(self, work_order_id: str | None = None) -> list[dict[str, Any]]:
        """The live view of every work order, or of one."""
        if work_order_id is None:
            return self._dicts("kp_live_work_orders", LIVE_WORK_ORDER_COLUMNS)
        return self._dicts(
            "kp_live_work_orders", LIVE_WORK_ORDER_COLUMNS, " WHERE work_order_id = ?",
            (work_order_id,),
        )  # fmt: skip

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every output and state table in full, sorted (for comparisons in tests)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table, order in (
            ("kp_kpi", "day, dimension, grp, metric"),
            ("kp_visits", "work_order_id, visit"),
            ("kp_live_technicians", "technician_id"),
            ("kp_live_work_orders", "work_order_id"),
            ("kp_docs", "kind, id"),
            ("kp_offsets", "topic, part"),
        ):
            out[table] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in self.query(f"SELECT * FROM {{p}}{table} ORDER BY {order}")
            ]
        return out


ROW_BYTES = 300
"""About what a projection row (a KPI value, a document, a track chunk's share) adds to the
WAL, for the checkpointer's count."""


class SqliteProjectionStore(ProjectionStore):
    """The projection in ``DATA_DIR/projections.sqlite3``."""

    clustered = " WITHOUT ROWID"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, timeout=30.0, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        # WAL checkpoints on a thread of their own, not inside a flush's commit.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = Checkpointer(path)
        self.create()

    @classmethod
    def in_dir(cls, data_dir: Path) -> SqliteProjectionStore:
        return cls(Path(data_dir) / STORE_FILE)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the projection store is closed")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db.cursor()
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.db.execute(self.sql(statement), params).fetchall()]

    def commit(
        self, changes: Changes, offsets: dict[tuple[str, int], int], meta: dict[str, Any]
    ) -> None:
        super().commit(changes, offsets, meta)
        self._checkpointer.wrote(ROW_BYTES * changes.rows)

    def close(self) -> None:
        self._checkpointer.close()
        if self._db is not None:
            self._db.close()
            self._db = None


class PostgresProjectionStore(ProjectionStore):
    """The projection in PostgreSQL (the URL's schema, default ``public``)."""

    placeholder = "%s"
    blob = "BYTEA"

    def __init__(self, url: str) -> None:
        import psycopg
        import psycopg.conninfo

        parts = PostgresUrl.parse(url)
        schema = parts.schema
        conninfo = psycopg.conninfo.make_conninfo(
            host=parts.host,
            port=parts.port,
            user=parts.user,
            password=parts.password or None,
            dbname=parts.dbname,
        )
        self.schema = schema
        self.prefix = f"{schema}."
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = psycopg.connect(
            conninfo, autocommit=True
        )
        with self._transaction() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        self.create()

    @property
    def conn(self) -> Any:
        if self._conn is None:
            raise RuntimeError("the projection store is closed")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(self.sql(statement), list(params))
            return [tuple(r) for r in cur.fetchall()]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_projection_store(data_dir: Path, db: str | None) -> ProjectionStore:
    """PostgreSQL when ``db`` is a postgresql:// URL, else SQLite in ``data_dir``."""
    if db:
        return PostgresProjectionStore(db)
    return SqliteProjectionStore.in_dir(data_dir)
