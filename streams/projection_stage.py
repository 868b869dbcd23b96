"""The projection stage: reads the log, folds it, writes rows and offsets in one transaction.

It has the interface :func:`streams.pipeline.run_until_idle` drives (``name``, ``start``,
``next_time``, ``step``, ``lag``, ``totals``, ``positions``); the fold itself is the pure
:mod:`projections` package.

A step takes, like the pipeline's stages, every unread record up to the horizon (or up to
``max_batch`` records without one), hands each partition's records in offset order to
:class:`~projections.fold.Projection` (GPS pings, most of the traffic, are read and handed
over a column at a time: ``Log.read_columns``, no object per ping), and then

1. appends the day-close ``KpiSnapshot`` events, if the newest event time read passed a
   day's end plus the allowed lateness, to fs.kpi (ids are deterministic: a step repeated
   after a crash repeats them with the same ids, which consumers ignore), and
2. commits the batch's rows, the offsets after it and the stage's meta in **one**
   transaction of the projection store.

While catching up (records beyond the step already read ahead), steps are taken without
this: the fold's state does not depend on the batching, so several steps' records are
folded (each partition's in one call), flushed and committed together, once
``catchup_batch`` of them wait (300,000 by default) or the stage has caught up (see
``ProjectionStage._may_defer`` for the conditions that keep the day-close snapshots as they
would be). A stage that has caught up commits every step.

A deferred step still commits, in a small transaction, how far it has read (the meta key
``read``). A restart folds the records between the committed offsets and that mark again
before it reports its next time, so it resumes where it stood when it stopped, not where it
last committed: the pipeline's rounds after a restart start where they stopped, as they do
for a projection that commits every step (were they to start further back, the stages before
it would be stepped again with horizons they have passed, and cut their batches differently
from a run that never stopped).

Partitions are not merged by time: the fold does not depend on the interleaving (see
projections/fold.py), which saves a sort of every batch.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any, cast

import numpy as np

from events import kinds as k
from events.base import Causation
from events.codec import encode
from projections.fold import TOPICS, Changes, Projection, RecordLike
from projections.kpis import DAY_MS, METRIC_NAMES, GroupKey, group_key_text
from projections.pings import Pings
from projections.state import Cause, Settings
from streams.collector import collector_paused
from streams.config import Config
from streams.log import Log, OutRecord, Record
from streams.pipeline import BatchStats
from streams.projection_store import ProjectionStore, open_projection_store
from streams.readahead import PingReadAhead

KPI_TOPIC = "fs.kpi"
READ_CHUNK = 5_000
COLUMNAR = frozenset({"fs.gps"})
"""Inputs read a column at a time (``Log.read_columns``): GPS pings, most of the records."""
CATCHUP_RECORDS = 300_000
"""While catching up, the stage commits once this many records wait (or ``max_batch``, if
that is larger). A flush recomputes every KPI subject and technician-day the records
touched since the last one, and a subject is touched again by each batch that carries more
of its events, so fewer, larger flushes do less work in all (a simulated week for 500
technicians: 36 flushes at 100,000, 15 at 300,000, 8 from 500,000 on, bounded by its day
closes; 27-28 s, 20-22 s, 20.5 s). The cost: what a restart folds again (the records since
the last commit, a few seconds of work at most) and views that, while the stage catches up,
lag the log by up to as many records. A stage that has caught up commits every step."""
READ_AHEAD_FROM = 5_000
"""Pings a partition must have left to read before the stage starts a reader process (see
streams/readahead.py): a backlog worth a process."""
FOLD_RECORDS = 50_000
"""Records taken while catching up are folded once this many wait (or at the flush): a
bound on the records held in memory, in batches large enough that the fold's per-call
costs stay small."""


StepStats = BatchStats
"""What one step did."""


def snapshot_event(
    key: GroupKey, values: Mapping[str, float | None], cause: Cause, tag: str
) -> k.KpiSnapshot:
    """The KpiSnapshot of one group. Its id ``kpi/<day>/<dimension>/<group>/<tag>`` and its
    time and causation come from ``cause`` (the newest record read), never from a clock."""
    text = group_key_text(key)
    return k.KpiSnapshot(
        id=f"kpi/{text}/{tag}",
        source="fieldstream/projections",
        time=cause.time,
        subject=text,
        causation=Causation(cause.id, cause.topic, cause.partition, cause.offset),
        group_key=text,
        day=key[0],
        dimension=key[1],
        group=key[2],
        metrics={name: values.get(name) for name in METRIC_NAMES},
    )


def snapshot_record(event: k.KpiSnapshot) -> OutRecord:
    return OutRecord(KPI_TOPIC, encode(event), event.group_key.encode(), event.time)


def _oldest(batch: Sequence[RecordLike] | Pings) -> int:
    """The smallest timestamp of a non-empty batch."""
    if isinstance(batch, Pings):
        return int(batch.timestamps.min())
    return min(r.timestamp_ms for r in batch)


class _Ahead:
    """One partition's records read ahead and not yet projected (from ``head`` on): a list
    of records, or, for the topics in :data:`COLUMNAR`, pings parsed into columns (no
    object per record)."""

    __slots__ = ("columns", "head", "records")

    def __init__(self, topic: str, partition: int, columnar: bool) -> None:
        self.records: list[Record] = []
        self.columns: Pings | None = None
        self.head = 0
        if columnar:
            self.columns = Pings.empty(topic, partition)

    def _size(self) -> int:
        return len(self.columns) if self.columns is not None else len(self.records)

    def pending(self) -> int:
        return self._size() - self.head

    def time(self, i: int) -> int:
        """The timestamp of the i-th record (from the start of the buffer)."""
        if self.columns is not None:
            return int(self.columns.timestamps[i])
        return self.records[i].timestamp_ms

    def last_time(self) -> int:
        return self.time(self._size() - 1)

    def add(self, batch: list[Record] | Pings) -> None:
        """Append what a read returned (after dropping what was taken already)."""
        if isinstance(batch, Pings):
            assert self.columns is not None
            self.columns = self.columns.joined(self.head, batch)
        else:
            if self.head:
                del self.records[: self.head]
            self.records.extend(batch)
        self.head = 0

    def take(self, horizon: int | None, share: int) -> tuple[Sequence[RecordLike] | Pings, int]:
        """Take, from the head on, the records up to the first one stamped after ``horizon``
        (without one: ``share`` records). Returns them and the offset after the last taken
        (nothing taken: an empty batch)."""
        head = self.head
        size = self._size()
        if horizon is None:
            stop = min(size, head + share)
        elif self.columns is not None:
            after = np.flatnonzero(self.columns.timestamps[head:] > horizon)
            stop = head + int(after[0]) if len(after) else size
        else:
            stop = head
            records = self.records
            while stop < size and records[stop].timestamp_ms <= horizon:
                stop += 1
        self.head = stop
        if self.columns is not None:
            columns = self.columns.slice(head, stop)
            return columns, int(columns.offsets[-1]) + 1 if stop > head else -1
        chunk = self.records[head:stop]
        return chunk, chunk[-1].offset + 1 if chunk else -1


class ProjectionStage:
    """The stage (see the module docstring). One instance per process; call :meth:`close`
    when done (a stage that is dropped closes its store when collected)."""

    name = "projections"
    inputs: tuple[str, ...] = TOPICS

    def __init__(
        self,
        log: Log,
        open_store: Callable[[], ProjectionStore],
        *,
        settings: Settings | None = None,
        max_batch: int = 20_000,
        catchup_batch: int | None = None,
    ) -> None:
        self.log = log
        self._open_store = open_store
        self.settings = settings or Settings()
        self.max_batch = max_batch
        self.catchup_batch = (
            max(max_batch, CATCHUP_RECORDS) if catchup_batch is None else catchup_batch
        )
        """Records folded, while catching up, after which the stage commits (see
        :data:`CATCHUP_RECORDS`)."""
        self.projection = Projection(self.settings)
        self.store: ProjectionStore | None = None
        self.totals: dict[str, int] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._buffers: dict[tuple[str, int], _Ahead] = {}
        self._fetched: dict[tuple[str, int], int] = {}
        self._ends: dict[tuple[str, int], int] = {}
        self._by_topic: dict[str, list[tuple[str, int]]] = {}
        self._batch = 0
        self._started = False
        self._unsaved: dict[tuple[str, int], int] = {}
        """Positions after the records folded but not committed yet (see :meth:`_may_defer`)."""
        self._unsaved_records = 0
        self._unfolded: dict[tuple[str, int], list[Sequence[RecordLike] | Pings]] = {}
        """The batches taken and not folded yet, by partition, in order: folded when the
        stage flushes or :data:`FOLD_RECORDS` of them wait (see :meth:`_fold_taken`)."""
        self._unfolded_records = 0
        self._closed = -(2**62)
        """:meth:`_frontier` as of the last commit."""
        self.read_ahead = True
        """Whether the pings may be read ahead by a process of their own (see
        streams/readahead.py): where it can, once a partition has a backlog."""
        self.read_ahead_chunk: int | None = None
        """Pings per chunk read ahead (None: :data:`streams.readahead.CHUNK`)."""
        self._readers: dict[str, PingReadAhead] = {}
        self._reader_stops: dict[str, weakref.finalize[Any, Any]] = {}
        self._released: list[weakref.finalize[Any, Any]] = []
        """The stops of readers released on catching up, not yet reaped."""

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, load the state and the offsets (idempotent)."""
        if self._started:
            return
        store = self.store = self._open_store()
        weakref.finalize(self, store.close)
        loaded = store.load()
        topics = await self.log.topics()
        for topic in self.inputs:
            for p in range(topics.get(topic, 0)):
                self._positions[(topic, p)] = loaded.offsets.get((topic, p), 0)
                self._by_topic.setdefault(topic, []).append((topic, p))
        self._batch = int(loaded.meta.get("batch", 0))
        self.projection.restore_written(
            loaded.kpi, loaded.facts, loaded.live_technicians, loaded.live_work_orders
        )
        self.projection.restore(loaded.docs, loaded.chunks, loaded.eta_chunks, loaded.meta)
        for topic, p, end in loaded.meta.get("read", []):
            if end > self._positions.get((topic, p), end):
                await self._fold_again((topic, p), end)
        self._started = True

    async def _fold_again(self, tp: tuple[str, int], end: int) -> None:
        """Fold the records of one partition from the committed offset up to ``end`` (the
        ``read`` mark of a stage that stopped while it deferred its commit), without flushing:
        the stage is then where it stood when it stopped."""
        topic, p = tp
        at = self._positions[tp]
        while at < end:
            batch: Sequence[RecordLike] | Pings
            if topic in COLUMNAR:
                got = await self._read_pings(topic, p, at, min(READ_CHUNK, end - at))
                if not len(got):
                    break
                batch = got.slice(0, int(np.searchsorted(got.offsets, end)))
                self.projection.apply_pings(batch)
                last = int(batch.offsets[-1])
            else:
                records = [
                    r for r in await self.log.read(topic, p, at, READ_CHUNK) if r.offset < end
                ]
                if not records:
                    break
                batch = records
                self.projection.apply(topic, records)
                last = records[-1].offset
            self._unsaved_records += len(batch)
            at = last + 1
        self._unsaved[tp] = at
        self._fetched[tp] = at

    async def _read_pings(self, topic: str, partition: int, offset: int, n: int) -> Pings:
        """Up to ``n`` pings of a partition from ``offset`` on, parsed: read ahead by the
        reader process if it has them (see :meth:`_reader`), else read here."""
        reader = self._reader(topic, partition, offset)
        got = None if reader is None else reader.take(partition, offset, n)
        if got is not None:
            log: Any = self.log
            got = replace(got, source=lambda at: log.value_at(topic, partition, at))
        else:
            c = await self.log.read_columns(topic, partition, offset, n)
            got = Pings.parse(topic, partition, c.offsets, c.timestamps, c.keys, c.values)
        if reader is not None and len(got):
            reader.ask(partition, int(got.offsets[-1]) + 1, self._ends.get((topic, partition), 0))
        if reader is not None and reader.idle():
            # Caught up (started again if a backlog builds up). Not waited for: the reader
            # exits as its pipe closes, and is reaped by the next start or by close().
            self._readers.pop(topic)
            reader.release()
            self._released.append(self._reader_stops.pop(topic))
        return got

    def _reap(self) -> None:
        """Stop the readers released (they have exited by now, or are about to)."""
        released, self._released = self._released, []
        for stop in released:
            stop()

    def _reader(self, topic: str, partition: int, offset: int) -> PingReadAhead | None:
        """The reader process of ``topic`` (see streams/readahead.py): started when a
        partition has at least :data:`READ_AHEAD_FROM` pings to read and :attr:`read_ahead`
        allows it, and then asked at once for the first chunks of every partition."""
        reader = self._readers.get(topic)
        if reader is not None or not self.read_ahead:
            return reader
        if self._ends.get((topic, partition), 0) - offset < READ_AHEAD_FROM:
            return None
        self._reap()
        reader = PingReadAhead.start(self.log, topic)
        if reader is None:
            self.read_ahead = False  # it cannot help here
            return None
        self._readers[topic] = reader
        # Stopped by close(), on catching up, or, for a stage dropped without either, when
        # the stage is collected (the reader holds no reference to it).
        self._reader_stops[topic] = weakref.finalize(self, reader.close)
        if self.read_ahead_chunk is not None:
            reader.chunk = self.read_ahead_chunk
        partitions = self._by_topic.get(topic, [])
        for ahead in range(1, reader.depth + 1):  # partition by partition, a chunk at a time
            for tp in partitions:
                at = self._fetched.get(tp, self._positions[tp])
                reader.ask(tp[1], at, min(self._ends.get(tp, 0), at + ahead * reader.chunk))
        return reader

    def close(self) -> None:
        for topic in list(self._readers):
            self._readers.pop(topic)
            self._released.append(self._reader_stops.pop(topic))
        self._reap()
        if self.store is not None:
            self.store.close()

    # -- the stage interface --------------------------------------------------------------------

    @property
    def positions(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the next offset this stage will read (a copy). Records
        before it are folded; they are committed too unless the stage is catching up (see
        :meth:`_may_defer`)."""
        return {**self._positions, **self._unsaved}

    async def lag(self) -> int:
        """Records on the inputs not yet projected."""
        await self.start()
        behind = 0
        positions = self.positions
        for topic in self.inputs:
            for p, end in (await self.log.end_offsets(topic)).items():
                if (topic, p) in positions:
                    behind += max(0, end - positions[(topic, p)])
        return behind

    def _wants(self, tp: tuple[str, int], horizon: int | None, share: int) -> bool:
        buffer = self._buffers.get(tp)
        if buffer is None or not buffer.pending():
            return True
        if horizon is not None:
            return buffer.last_time() <= horizon
        return buffer.pending() < share

    async def _fill(self, horizon: int | None) -> None:
        """Top up the read-ahead buffers: with a horizon, until each partition's buffer
        reaches past it; without, to this partition's share of ``max_batch``. End offsets
        are asked for only when a partition has read all it knew of."""
        share = max(1, self.max_batch // max(1, len(self._positions)))
        for topic, partitions in self._by_topic.items():
            wanting = [tp for tp in partitions if self._wants(tp, horizon, share)]
            if not wanting:
                continue
            if any(self._fetched.get(tp, self._positions[tp]) >= self._ends.get(tp, 0)
                   for tp in wanting):  # fmt: skip
                for p, end in (await self.log.end_offsets(topic)).items():
                    self._ends[(topic, p)] = end
            columnar = topic in COLUMNAR
            for tp in wanting:
                end = self._ends.get(tp, 0)
                buffer = self._buffers.get(tp)
                if buffer is None:
                    buffer = self._buffers[tp] = _Ahead(tp[0], tp[1], columnar)
                while self._fetched.get(tp, self._positions[tp]) < end and self._wants(
                    tp, horizon, share
                ):
                    fetched = self._fetched.get(tp, self._positions[tp])
                    batch: list[Record] | Pings
                    if columnar:
                        batch = await self._read_pings(topic, tp[1], fetched, READ_CHUNK)
                        if not len(batch):
                            break
                        last = int(batch.offsets[-1])
                    else:
                        batch = await self.log.read(topic, tp[1], fetched, READ_CHUNK)
                        if not batch:
                            break
                        last = batch[-1].offset
                    buffer.add(batch)
                    self._fetched[tp] = last + 1

    async def next_time(self) -> int | None:
        """The smallest timestamp among the next unread record of each input partition."""
        await self.start()
        with collector_paused():
            await self._fill(None)
        heads = [buffer.time(buffer.head) for buffer in self._buffers.values() if buffer.pending()]
        return min(heads) if heads else None

    async def step(self, horizon: int | None = None) -> StepStats:
        """Project one batch: with ``horizon``, every unread record of every input partition
        up to the first one stamped after it; without, up to ``max_batch`` records. (The
        cyclic garbage collector is paused meanwhile: see :func:`collector_paused`.)"""
        await self.start()
        with collector_paused():
            return await self._step(horizon)

    async def _step(self, horizon: int | None) -> StepStats:
        assert self.store is not None
        began = time.perf_counter()
        await self._fill(horizon)
        share = max(1, self.max_batch // max(1, len(self._positions)))
        n_records = 0
        by_topic: dict[str, int] = {}
        oldest: int | None = None
        for tp in self._positions:  # inputs in TOPICS order, each partition in offset order
            buffer = self._buffers.get(tp)
            if buffer is None or not buffer.pending():
                continue
            batch, after = buffer.take(horizon, share)
            if not len(batch):
                continue
            self._unfolded.setdefault(tp, []).append(batch)
            self._unsaved[tp] = after
            n_records += len(batch)
            by_topic[tp[0]] = by_topic.get(tp[0], 0) + len(batch)
            first = _oldest(batch)
            oldest = first if oldest is None else min(oldest, first)
        if not n_records and not self._unsaved:
            return StepStats(0, 0, time.perf_counter() - began, {})
        self._unsaved_records += n_records
        self._unfolded_records += n_records
        self.totals["records"] = self.totals.get("records", 0) + n_records
        # (Whether to defer does not depend on what is folded: see _may_defer.)
        if n_records and self._may_defer(self._low_watermark(), oldest):
            if self._unfolded_records >= FOLD_RECORDS:
                self._fold_taken()  # the records taken are held until folded: a bound
            self.store.commit(Changes(), {}, {"read": self._read_mark()})
            return StepStats(n_records, 0, time.perf_counter() - began, {}, by_topic)
        projection = self.projection
        self._fold_taken()
        low = self._low_watermark()
        changes = projection.flush()
        outputs: list[OutRecord] = []
        for day, cause in projection.closable_days(low):
            for key in projection.book.keys_of_day(day):
                event = snapshot_event(key, projection.book.values(key), cause, "close")
                outputs.append(snapshot_record(event))
            projection.published.add(day)
        if outputs:
            await self.log.append(outputs)
        self._batch += 1
        meta: dict[str, Any] = {"batch": self._batch, "read": [], **projection.meta()}
        self.store.commit(changes, self._unsaved, meta)
        self._positions.update(self._unsaved)
        self._unsaved = {}
        self._unsaved_records = 0
        self._closed = max(self._closed, self._frontier(low))
        counts = dict(changes.counts)
        counts["rows"] = changes.rows
        if outputs:
            counts["KpiSnapshot"] = len(outputs)
        for name, n in counts.items():
            self.totals[name] = self.totals.get(name, 0) + n
        return StepStats(n_records, len(outputs), time.perf_counter() - began, counts, by_topic)

    def _fold_taken(self) -> None:
        """Fold the records taken and not folded yet: each partition's in one call (the fold
        does not depend on how records are batched or how partitions interleave, so a
        catch-up's windows are folded together, without each window's per-call costs),
        inputs in :data:`projections.fold.TOPICS` order."""
        unfolded, self._unfolded = self._unfolded, {}
        self._unfolded_records = 0
        projection = self.projection
        for tp in self._positions:
            batches = unfolded.get(tp)
            if not batches:
                continue
            if isinstance(batches[0], Pings):
                projection.apply_pings(Pings.concatenated(cast(list[Pings], batches)))
            else:
                projection.apply(tp[0], list(chain.from_iterable(batches)))  # type: ignore[arg-type]

    def _read_mark(self) -> list[list[Any]]:
        """The ``read`` mark: [topic, partition, next offset] of each partition with records
        folded but not committed."""
        return [[t, p, o] for (t, p), o in sorted(self._unsaved.items())]

    def _frontier(self, low: int) -> int:
        """The number (days since the epoch, as the fold counts them) of the first day that
        ``low`` has not closed yet: days before it are closed (their end plus the allowed
        lateness is behind every input partition)."""
        settings = self.projection.settings
        return (low + settings.day_offset_ms - settings.lateness_ms) // DAY_MS

    def _may_defer(self, low: int, oldest: int | None) -> bool:
        """Whether the batch just folded may wait for the next ones before it is flushed and
        committed (what is folded but not committed is simply read and folded again after a
        restart, so exactly-once holds either way). Only while catching up, and only when a
        flush now could publish nothing that a later one would not publish the same:

        * fewer than :attr:`catchup_batch` records wait, and records beyond this step are
          already read ahead (a stage that has caught up commits every step, so the live view and
          the KPI tables are never behind the log it has read);
        * no day closed since the last commit (its KpiSnapshots are taken at once, from
          the state as of this step, as without deferring);
        * no record of the batch is within the allowed lateness of a closed day (such a
          record may give a closed, unpublished day its first KPI group or the cause of its
          close, which a flush at once would publish).
        """
        if self._unsaved_records >= self.catchup_batch:
            return False
        if not any(buffer.pending() for buffer in self._buffers.values()):
            return False
        frontier = self._frontier(low)
        if frontier > self._closed:
            return False
        settings = self.projection.settings
        if oldest is None:
            return False
        late = (oldest + settings.day_offset_ms - settings.lateness_ms) // DAY_MS
        return late >= max(frontier, self._closed)

    def _low_watermark(self) -> int:
        """A time every input partition has read past: the smallest timestamp among the next
        unread records (a partition read up to its known end does not hold it back; one
        with records not fetched yet does, entirely)."""
        low: int | None = None
        for tp in self._positions:
            buffer = self._buffers.get(tp)
            if buffer is not None and buffer.pending():
                t = buffer.time(buffer.head)
            elif self._fetched.get(tp, self._positions[tp]) < self._ends.get(tp, 0):
                return -(2**62)
            else:
                continue
            low = t if low is None else min(low, t)
        return self.projection.watermark if low is None else low

    async def run_until_idle(self) -> int:
        """Project everything on the log (this stage alone), in event-time windows as the
        pipeline does. Returns the number of records projected."""
        step_ms = 300_000
        total = 0
        while True:
            head = await self.next_time()
            if head is None:
                return total
            total += (await self.step((head // step_ms + 1) * step_ms)).records


def build_projection_stage(log: Log, config: Config) -> ProjectionStage:
    """The projection stage for a configuration: SQLite in ``config.data_dir``, or the
    PostgreSQL database ``config.db`` names; fixes as late as ``config.lateness_ms``."""
    data_dir = Path(config.data_dir)
    db = config.db
    return ProjectionStage(
        log,
        lambda: open_projection_store(data_dir, db),
        settings=Settings(lateness_ms=config.lateness_ms),
        max_batch=config.batch_size,
    )


async def publish_day(store: ProjectionStore, log: Log, day: str) -> list[k.KpiSnapshot]:
    """On demand: a KpiSnapshot of every group of ``day`` as the store holds it now, to
    fs.kpi. Time and causation are those of the newest record projected; the id carries its
    time, so publishing twice without new input repeats the same ids."""
    meta = store.meta()
    cause_row = meta.get("cause")
    if cause_row is None:
        raise ValueError("nothing has been projected yet")
    cause = Cause(*cause_row)
    groups: dict[GroupKey, dict[str, float | None]] = {}
    for d, dim, grp, metric, value in store.kpi_rows([day]):
        groups.setdefault((d, dim, grp), {})[metric] = value
    events = [
        snapshot_event(key, values, cause, f"at-{cause.time}")
        for key, values in sorted(groups.items())
    ]
    if events:
        await log.append([snapshot_record(e) for e in events])
    return events
