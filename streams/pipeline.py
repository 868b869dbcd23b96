"""The stage runner: batches in, one transaction of state and offsets out.

A stage reads every partition of its input topics that it owns, from the offsets it committed
last, takes up to ``max_batch`` records, and hands them to its processor **in one
deterministic order**: partitions merged by record time (ties: topic in the order the stage
lists them, partition, offset), each partition kept in offset order. The processor decides,
pure; the runner then

1. appends the processor's outputs (derived events, dead letters, re-keyed records) to the
   log in one append, and
2. commits the processor's facts, its other state changes and the offsets after the batch in
   **one** database transaction, recording the batch's input ranges.

A crash between 1 and 2 re-runs the batch on restart, so outputs are at-least-once and state
is exactly-once; derived events carry deterministic ids, and consumers treat a repeated id as a
no-op. A crash anywhere else loses nothing and applies nothing twice (tested with kill -9).

The processors never read a clock: every derived event takes its time from its input.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from aggregates.facts import Fact
from events.catalog import DLQ, DLQ_FIELD, DLQ_MESSAGE, DLQ_RULE, DLQ_SOURCE
from streams.collector import collector_paused
from streams.log import BatchMark, Columns, Log, OutRecord, Record
from streams.state_store import ParkedRecord, StageCommit, StageState, StateStore


@dataclass(slots=True)
class StageResult:
    """What a processor produced from one batch."""

    facts: list[Fact] = field(default_factory=list)
    outputs: list[OutRecord] = field(default_factory=list)
    kv: dict[str, Any] = field(default_factory=dict)
    parked_add: list[ParkedRecord] = field(default_factory=list)
    parked_remove: list[str] = field(default_factory=list)
    positions: dict[str, tuple[int, float, float, float | None, float | None]] = field(
        default_factory=dict
    )
    counts: dict[str, int] = field(default_factory=dict)
    checkpoint: bool = False
    """Set by a processor whose state is a checkpoint rather than facts: ``kv`` holds its
    whole state as of the end of this batch. The runner records the offsets it was taken at,
    and a restart resumes from there (see :class:`Stage`)."""

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def dead_letter(
        self, record: Record, rule: str, message: str, stage: str, field_name: str = ""
    ) -> None:
        """Send ``record`` to fs.dlq unchanged, with the reason in its headers."""
        self.outputs.append(
            OutRecord(
                DLQ.name,
                record.value,
                key=record.key,
                timestamp_ms=record.timestamp_ms,
                headers=(
                    (DLQ_RULE, rule.encode()),
                    (DLQ_FIELD, field_name.encode()),
                    (DLQ_MESSAGE, message.encode()),
                    (
                        DLQ_SOURCE,
                        f"{stage}:{record.topic}/{record.partition}@{record.offset}".encode(),
                    ),
                ),
            )
        )
        self.count(f"rejected.{rule}")


@dataclass(slots=True)
class Interleaved:
    """A batch's records of a *columnar* topic (see :class:`Processor`), a column at a time,
    in the batch's merged order, and where they fall among the batch's other records: row
    record ``i`` comes right after the first ``before[i]`` of these."""

    topic: str
    timestamps: npt.NDArray[np.int64]
    partitions: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    keys: list[bytes | None]
    values: list[bytes]
    before: list[int]

    def __len__(self) -> int:
        return len(self.values)

    def record(self, i: int) -> Record:
        """The ``i``-th as a :class:`Record` (for a dead letter; headers are not read)."""
        return Record(
            self.topic,
            int(self.partitions[i]),
            int(self.offsets[i]),
            int(self.timestamps[i]),
            self.keys[i],
            self.values[i],
        )


def interleave(records: Sequence[Record], topic: str) -> tuple[list[Record], Interleaved]:
    """Split a batch already in merged order into its other records and its ``topic``
    records as an :class:`Interleaved` (what the runner hands a columnar processor)."""
    rows: list[Record] = []
    cols: list[Record] = []
    before: list[int] = []
    for r in records:
        if r.topic == topic:
            cols.append(r)
        else:
            rows.append(r)
            before.append(len(cols))
    n = len(cols)
    return rows, Interleaved(
        topic,
        np.fromiter((r.timestamp_ms for r in cols), np.int64, n),
        np.fromiter((r.partition for r in cols), np.int64, n),
        np.fromiter((r.offset for r in cols), np.int64, n),
        [r.key for r in cols],
        [r.value for r in cols],
        before,
    )


class _ColumnBuffer:
    """The read-ahead of one partition of a columnar topic: fetched columns and a cursor."""

    __slots__ = ("columns", "start")

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self.start = 0

    def __len__(self) -> int:
        return len(self.columns) - self.start

    def head_time(self) -> int:
        return int(self.columns.timestamps[self.start])

    def last_time(self) -> int:
        return int(self.columns.timestamps[-1])

    def extend(self, more: Columns) -> None:
        self.columns = self.columns.joined(self.start, more)
        self.start = 0

    def head_offset(self) -> int:
        return int(self.columns.offsets[self.start])

    def take(self, horizon: int | None, limit: int, before: int | None = None) -> Columns | None:
        """The unread prefix up to the first record stamped after ``horizon`` (with a
        horizon), or of at most ``limit`` records (without); with ``before``, only records at
        offsets below it."""
        end = len(self.columns)
        if before is not None:
            end = self.start + int(
                np.searchsorted(self.columns.offsets[self.start :], before, side="left")
            )
        if horizon is not None:
            after = np.flatnonzero(self.columns.timestamps[self.start : end] > horizon)
            if len(after):
                end = self.start + int(after[0])
        else:
            end = min(end, self.start + limit)
        if end <= self.start:
            return None
        taken = self.columns.slice(self.start, end)
        self.start = end
        return taken


Ends = dict[tuple[str, int], int]
"""(topic, partition) -> an offset: where a step stops reading (see :meth:`Stage.step`)."""


class Processor(Protocol):
    """A stage's logic. ``process`` must be deterministic in its input and prior state."""

    name: str
    inputs: tuple[str, ...]
    aggregate_kind: str
    # A processor that saves its state as checkpoints (``StageResult.checkpoint``) also has a
    # class attribute ``checkpoints = True``, so that a restart rewinds to its last checkpoint.
    # A processor with a class attribute ``columnar = "topic"`` has that input read a column at
    # a time (no Record per record: for GPS pings) and is called as
    # ``process_batch(records, interleaved)`` instead of ``process(records)``; the order is the
    # same as ``process`` would see (partitions merged by time, each kept in offset order).

    def restore(self, store: StateStore, state: StageState) -> None:
        """Rebuild in-memory state from what the store holds (called once, at start)."""

    def process(self, records: Sequence[Record]) -> StageResult:
        """Handle one batch, already in the stage's deterministic order."""


@dataclass(slots=True)
class BatchStats:
    records: int
    outputs: int
    seconds: float
    counts: dict[str, int]
    by_topic: dict[str, int] = field(default_factory=dict)
    """Records the batch took from each input topic."""


CHECKPOINT = "checkpoint"
"""The kv entry where a checkpointing stage's runner keeps the batch and offsets of its last
checkpoint."""


class Stage:
    """Runs one processor against a log and a state store.

    ``partitions`` restricts the stage to some partition numbers of its inputs (scale-out:
    co-partitioned inputs share partition numbers); ``None`` means all of them.

    A processor whose state is large and changes with every batch (the ETA engine) saves it
    only every so many batches, as a *checkpoint* (``StageResult.checkpoint``); every batch
    still commits its offsets and its batch record. On a restart the stage rewinds to the
    checkpoint's offsets and processes the batches after it again. Batches are whole windows
    of the event-time grid, so they come out the same, and so do their outputs: those of
    batches already committed are on the log (a batch's outputs are appended before its
    commit), so they are not appended a second time, and nothing is committed again until the
    stage passes the last committed batch.
    """

    def __init__(
        self,
        log: Log,
        store: StateStore,
        processor: Processor,
        *,
        max_batch: int = 20_000,
        partitions: Sequence[int] | None = None,
    ) -> None:
        self.log = log
        self.store = store
        self.processor = processor
        self.max_batch = max_batch
        self._partitions = None if partitions is None else tuple(partitions)
        self._positions: dict[tuple[str, int], int] = {}
        self._batch = 0
        self._started = False
        self._buffers: dict[tuple[str, int], deque[Record]] = {}
        self._columnar: str | None = getattr(processor, "columnar", None)
        self._column_buffers: dict[tuple[str, int], _ColumnBuffer] = {}
        self._fetched: dict[tuple[str, int], int] = {}
        self._redo: dict[int, tuple[dict[str, tuple[int, int]], bool]] = {}
        """Batches to process again as they were cut before a restart: number -> (input
        ranges, whether to commit it: no for a batch committed after the last checkpoint,
        yes for one whose outputs were appended but which was not committed)."""
        self.totals: dict[str, int] = {}
        self.held: list[tuple[str, list[Fact], StageCommit]] | None = None
        """While a :class:`CommitGroup` holds this stage's commits: the batches processed but
        not committed yet, in order (their outputs are on the log, not synced yet)."""
        self.detached: str | None = None
        """Why this object may not step any more (its processor's state went on in another
        process: see :mod:`streams.follower`), or None."""

    @property
    def name(self) -> str:
        return self.processor.name

    @property
    def _mark(self) -> str:
        """The name this stage's batch marks go under on the log."""
        if self._partitions is None:
            return self.name
        return f"{self.name}@{','.join(map(str, sorted(self._partitions)))}"

    @property
    def positions(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the next offset this stage will read (a copy)."""
        return dict(self._positions)

    async def start(self) -> None:
        """Load the committed state and positions (idempotent)."""
        if self._started:
            return
        state = self.store.load_stage(self.name)
        topics = await self.log.topics()
        for topic in self.processor.inputs:
            count = topics.get(topic)
            if count is None:
                raise KeyError(f"stage {self.name}: input topic {topic} does not exist")
            for p in range(count):
                if self._partitions is None or p in self._partitions:
                    self._positions[(topic, p)] = state.offsets.get((topic, p), 0)
        self._batch = state.batch
        checkpoint = state.kv.get(CHECKPOINT, {"batch": 0, "offsets": []})
        if getattr(self.processor, "checkpoints", False) and checkpoint["batch"] < state.batch:
            # Back to the last checkpoint (the very start if none was taken yet).
            at = {(t, p): o for t, p, o in checkpoint["offsets"]}
            for tp in self._positions:
                self._positions[tp] = at.get(tp, 0)
            self._batch = checkpoint["batch"]
            committed = self.store.batches(self.name, after=self._batch)
            self._redo = {b: (r, False) for b, r in committed}
        # Batches whose outputs are on the log but which were not committed (a crash between
        # the append and the commit, or a group of batches not committed yet).
        for b, ranges in (await self.log.marks(self._mark, after=state.batch)).items():
            self._redo[b] = (ranges, True)
        self.processor.restore(self.store, state)
        self._started = True

    @property
    def redo_pending(self) -> bool:
        """Whether the next batch is one to process again as it was cut before a restart."""
        return self._batch + 1 in self._redo

    def progress(self) -> tuple[dict[tuple[str, int], int], int]:
        """Where the stage stands: the next offset of each input partition, and the number
        of the last batch processed."""
        return dict(self._positions), self._batch

    def take_progress(self, positions: dict[tuple[str, int], int], batch: int) -> None:
        """Stand where :meth:`progress` said another copy of this stage stood (see
        :mod:`streams.follower`)."""
        self._positions = dict(positions)
        self._batch = batch

    async def input_ends(self) -> Ends:
        """The end offsets of the stage's input partitions, now."""
        await self.start()
        ends: Ends = {}
        for topic in self.processor.inputs:
            for p, end in (await self.log.end_offsets(topic)).items():
                if (topic, p) in self._positions:
                    ends[(topic, p)] = end
        return ends

    async def lag(self) -> int:
        """Records on the inputs not yet processed."""
        await self.start()
        behind = 0
        for topic in self.processor.inputs:
            for p, end in (await self.log.end_offsets(topic)).items():
                if (topic, p) in self._positions:
                    behind += max(0, end - self._positions[(topic, p)])
        return behind

    async def _fill(self, horizon: int | None) -> None:
        """Top up the read-ahead buffers: with a horizon, until each partition's buffer reaches
        past it (so a step sees the whole window); without, to ``max_batch`` records."""
        chunk = max(1, self.max_batch // max(1, len(self._positions)))
        for topic in self.processor.inputs:
            ends = await self.log.end_offsets(topic)
            for p, end in ends.items():
                tp = (topic, p)
                if tp not in self._positions:
                    continue
                if topic == self._columnar:
                    await self._fill_columns(tp, end, chunk, horizon)
                    continue
                buffer = self._buffers.setdefault(tp, deque())
                while self._fetched.get(tp, self._positions[tp]) < end and (
                    not buffer
                    or (horizon is not None and buffer[-1].timestamp_ms <= horizon)
                    or (horizon is None and len(buffer) < chunk)
                ):
                    fetched = self._fetched.get(tp, self._positions[tp])
                    records = await self.log.read(topic, p, fetched, chunk)
                    if not records:
                        break
                    buffer.extend(records)
                    self._fetched[tp] = records[-1].offset + 1

    async def _fill_columns(
        self, tp: tuple[str, int], end: int, chunk: int, horizon: int | None
    ) -> None:
        buffer = self._column_buffers.get(tp)
        while self._fetched.get(tp, self._positions[tp]) < end and (
            buffer is None
            or not len(buffer)
            or (horizon is not None and buffer.last_time() <= horizon)
            or (horizon is None and len(buffer) < chunk)
        ):
            fetched = self._fetched.get(tp, self._positions[tp])
            columns = await self.log.read_columns(tp[0], tp[1], fetched, chunk)
            if not len(columns):
                break
            if buffer is None:
                buffer = self._column_buffers[tp] = _ColumnBuffer(columns)
            else:
                buffer.extend(columns)
            self._fetched[tp] = int(columns.offsets[-1]) + 1

    async def next_time(self, ends: Ends | None = None) -> int | None:
        """The smallest timestamp among the next unread record of each input partition (with
        ``ends``, among the records below those offsets only)."""
        await self.start()
        await self._fill(None)
        heads = [
            b[0].timestamp_ms
            for tp, b in self._buffers.items()
            if b and (ends is None or b[0].offset < ends.get(tp, 0))
        ]
        heads += [
            b.head_time()
            for tp, b in self._column_buffers.items()
            if len(b) and (ends is None or b.head_offset() < ends.get(tp, 0))
        ]
        return min(heads) if heads else None

    async def _cut(
        self, horizon: int | None, ends: Ends | None = None
    ) -> tuple[list[list[Record]], list[Columns]]:
        """The next batch, per partition: up to ``horizon`` (whole windows) or ``max_batch``;
        with ``ends``, of the records below those offsets only."""
        await self._fill(horizon)
        per_partition = max(1, self.max_batch // max(1, len(self._positions)))
        columns = [
            taken
            for tp, buffer in self._column_buffers.items()
            if (
                taken := buffer.take(
                    horizon, per_partition, None if ends is None else ends.get(tp, 0)
                )
            )
            is not None
        ]
        chunks: list[list[Record]] = []
        for tp, buffer in self._buffers.items():
            chunk: list[Record] = []
            end = None if ends is None else ends.get(tp, 0)
            while buffer and (horizon is not None or len(chunk) < per_partition):
                if horizon is not None and buffer[0].timestamp_ms > horizon:
                    break
                if end is not None and buffer[0].offset >= end:
                    break
                chunk.append(buffer.popleft())
            if chunk:
                chunks.append(chunk)
        return chunks, columns

    async def _recorded(
        self, ranges: dict[str, tuple[int, int]]
    ) -> tuple[list[list[Record]], list[Columns]]:
        """The records of a batch recorded with ``ranges`` (``topic/partition`` -> [first,
        end)), read afresh: the read-ahead buffers are dropped."""
        self._buffers.clear()
        self._column_buffers.clear()
        self._fetched.clear()
        chunks: list[list[Record]] = []
        columns: list[Columns] = []
        for name, (first, end) in ranges.items():
            topic, _, part = name.rpartition("/")
            if topic == self._columnar:
                got_columns = await self.log.read_columns(topic, int(part), first, end - first)
                if len(got_columns) < end - first:
                    raise RuntimeError(f"stage {self.name}: {name} ends before offset {end}")
                columns.append(got_columns)
                continue
            chunk: list[Record] = []
            while first + len(chunk) < end:
                got = await self.log.read(topic, int(part), first + len(chunk), end - first)
                if not got:
                    raise RuntimeError(f"stage {self.name}: {name} ends before offset {end}")
                chunk.extend(r for r in got if r.offset < end)
            chunks.append(chunk)
        return chunks, columns

    async def step(self, horizon: int | None = None, ends: Ends | None = None) -> BatchStats:
        """Process one batch (possibly empty). Returns what it did (see :meth:`_step`; the
        cyclic garbage collector is paused meanwhile: see
        :func:`streams.collector.collector_paused`)."""
        with collector_paused():
            return await self._step(horizon, ends)

    async def _step(self, horizon: int | None, ends: Ends | None = None) -> BatchStats:
        """Process one batch (possibly empty). Returns what it did.

        With ``horizon``, the batch is every unread record of every input partition up to the
        first one stamped after ``horizon`` (offset order is kept): the whole window, whatever
        was read before, so the batches, and what the processor derives from them, depend only
        on the log and the horizons. Without, up to ``max_batch`` records. With ``ends``
        ((topic, partition) -> offset), only records below those offsets are taken: the log
        as it stood at some earlier moment (see :mod:`streams.follower`).
        """
        if self.detached is not None:
            raise RuntimeError(f"stage {self.name}: {self.detached}")
        await self.start()
        began = time.perf_counter()
        redo = self._redo.pop(self._batch + 1, None)
        if redo is not None:
            # Processing again, after a restart, a batch committed or appended before it: cut
            # it exactly as it was cut then (upstream stages may have appended since).
            chunks, columns = await self._recorded(redo[0])
        else:
            chunks, columns = await self._cut(horizon, ends)
        if not chunks and not columns:
            return BatchStats(0, 0, time.perf_counter() - began, {})
        # Merge partitions by record time, each partition kept in offset order (a late record
        # stays late: it is judged against what its own partition had already delivered).
        order = {t: i for i, t in enumerate(self.processor.inputs)}
        if self._columnar is None:
            records = list(
                heapq.merge(
                    *chunks, key=lambda r: (r.timestamp_ms, order[r.topic], r.partition, r.offset)
                )
            )
            result = self.processor.process(records)
            n_records = len(records)
        else:
            records, interleaved = _merge_columns(chunks, columns, order, self._columnar)
            result = self.processor.process_batch(records, interleaved)  # type: ignore[attr-defined]
            n_records = len(records) + len(interleaved)
        # Each chunk is one partition's records in offset order: its ends give the range.
        ranges: dict[str, tuple[int, int]] = {}
        new_positions = dict(self._positions)
        for chunk in chunks:
            head, last = chunk[0], chunk[-1]
            new_positions[(head.topic, head.partition)] = last.offset + 1
            ranges[f"{head.topic}/{head.partition}"] = (head.offset, last.offset + 1)
        for c in columns:
            first, end = int(c.offsets[0]), int(c.offsets[-1]) + 1
            new_positions[(c.topic, c.partition)] = end
            ranges[f"{c.topic}/{c.partition}"] = (first, end)
        if redo is None:
            # A held batch is marked even without outputs: the batches after it, replayed
            # after a crash, must be cut as they were.
            marked = self.log.keeps_marks and (bool(result.outputs) or self.held is not None)
            if result.outputs or marked:
                await self.log.append(
                    result.outputs,
                    durable=self.held is None,
                    mark=BatchMark(self._mark, self._batch + 1, ranges) if marked else None,
                )
        self._batch += 1
        kv = result.kv
        if result.checkpoint:
            if result.facts:
                raise ValueError(f"stage {self.name}: a checkpointing stage records no facts")
            kv = {
                **kv,
                CHECKPOINT: {
                    "batch": self._batch,
                    "offsets": [[t, p, o] for (t, p), o in sorted(new_positions.items())],
                },
            }
        if redo is None or redo[1]:
            commit = StageCommit(
                stage=self.name,
                offsets={tp: o for tp, o in new_positions.items() if o != self._positions[tp]},
                batch=self._batch,
                batch_inputs=ranges,
                kv=kv,
                parked_add=result.parked_add,
                parked_remove=result.parked_remove,
                positions=result.positions,
            )
            if self.held is None:
                self.store.commit(self.processor.aggregate_kind, result.facts, commit)
            else:
                self.held.append((self.processor.aggregate_kind, result.facts, commit))
        self._positions = new_positions
        for name, n in result.counts.items():
            self.totals[name] = self.totals.get(name, 0) + n
        self.totals["records"] = self.totals.get("records", 0) + n_records
        by_topic: dict[str, int] = {}
        for chunk in chunks:
            by_topic[chunk[0].topic] = by_topic.get(chunk[0].topic, 0) + len(chunk)
        for c in columns:
            by_topic[c.topic] = by_topic.get(c.topic, 0) + len(c)
        return BatchStats(
            n_records,
            len(result.outputs),
            time.perf_counter() - began,
            result.counts,
            by_topic,
        )


def _merge_columns(
    chunks: Sequence[Sequence[Record]],
    columns: Sequence[Columns],
    order: dict[str, int],
    topic: str,
) -> tuple[list[Record], Interleaved]:
    """The merge of :meth:`Stage.step` for a columnar processor, vectorised.

    ``heapq.merge`` of runs by (time, topic, partition, offset) yields the same sequence as a
    sort by (the running maximum of the time within each run, topic, partition, offset): a
    record stamped earlier than one before it in its run is taken right after that one,
    exactly as the merge takes it (the earlier record was the smallest head, so the late one
    is smaller than every other head). That sort is one ``numpy.lexsort``.
    """
    rows = [r for chunk in chunks for r in chunk]
    n_rows = len(rows)
    row_times = np.empty(n_rows, np.int64)
    i = 0
    for chunk in chunks:
        newest = chunk[0].timestamp_ms
        for r in chunk:
            newest = max(newest, r.timestamp_ms)
            row_times[i] = newest
            i += 1
    times = np.concatenate([row_times, *(np.maximum.accumulate(c.timestamps) for c in columns)])
    topics = np.concatenate(
        [
            np.fromiter((order[r.topic] for r in rows), np.int64, n_rows),
            np.full(sum(len(c) for c in columns), order[topic], np.int64),
        ]
    )
    partitions = np.concatenate(
        [
            np.fromiter((r.partition for r in rows), np.int64, n_rows),
            *(np.full(len(c), c.partition, np.int64) for c in columns),
        ]
    )
    offsets = np.concatenate(
        [np.fromiter((r.offset for r in rows), np.int64, n_rows), *(c.offsets for c in columns)]
    )
    merged = np.lexsort((offsets, partitions, topics, times))
    is_row = merged < n_rows
    row_order = merged[is_row]
    col_order = merged[~is_row] - n_rows
    before = np.cumsum(~is_row)[is_row]
    keys = [k for c in columns for k in c.keys]
    values = [v for c in columns for v in c.values]
    stamps = np.concatenate([c.timestamps for c in columns]) if columns else times[:0]
    picked = col_order.tolist()
    return [rows[j] for j in row_order.tolist()], Interleaved(
        topic,
        stamps[col_order],
        partitions[n_rows:][col_order],
        offsets[n_rows:][col_order],
        [keys[j] for j in picked],
        [values[j] for j in picked],
        before.tolist(),
    )


HORIZON_STEP_MS = 300_000
"""The event-time grid that rounds advance on when a backlog is processed: well under the
allowed lateness (so stages that feed each other never fall behind one another by more), and
fixed (windows are whole multiples of it since the epoch), so a run restarted after a crash
cuts exactly the same windows as a run that never stopped."""


def horizon_after(t: int) -> int:
    """The horizon of the round whose window holds time ``t`` (the grid's next point)."""
    return (t // HORIZON_STEP_MS + 1) * HORIZON_STEP_MS


GROUP_ROUNDS = 12
"""Rounds (an hour of event time on the grid) whose batches :func:`run_until_idle` commits
together while it works through a backlog."""

GROUP_RECORDS = 100_000
"""Records after which a group is committed, however few rounds it spans."""


class CommitGroup:
    """Group commit for a backlog: the batches of several rounds, of every :class:`Stage`
    given, committed in one transaction per state store, after one sync of the log.

    While the group is open, each stage appends its outputs without waiting for the disk
    (they are visible at once, so the stages after it read them as before) and keeps its
    commits. :meth:`flush` then syncs the log, so every output appended is durable, and only
    then commits the held batches: the state never records a batch whose outputs a power cut
    could take back. Batches, outputs and state are the same as with a commit per batch; a
    crash before the flush loses only uncommitted batches, which a restart processes again
    (their outputs repeat with the same ids, which consumers ignore: at-least-once outputs,
    exactly-once state, as with one commit per batch). Saves an fsync of the log and a
    transaction of the state per stage and window, which is most of the cost of the
    non-ping events.

    A stage of another kind (the projection stage commits to its own store) is not held;
    :meth:`before` syncs the log ahead of its step, so it never commits a position past a
    record that is not durable.
    """

    def __init__(self, stages: Sequence[Any]) -> None:
        self.stages = [s for s in stages if isinstance(s, Stage)]
        self.logs = list({id(s.log): s.log for s in stages if hasattr(s, "log")}.values())
        self.rounds = 0
        self.records = 0

    def open(self) -> None:
        for stage in self.stages:
            stage.held = []

    async def sync(self) -> None:
        for log in self.logs:
            await log.sync()  # at once when nothing was appended since the last sync

    async def before(self, stage: Any) -> None:
        """Called before each step: a stage that is not held reads synced records only."""
        if not isinstance(stage, Stage):
            await self.sync()

    def full(self) -> bool:
        return self.rounds >= GROUP_ROUNDS or self.records >= GROUP_RECORDS

    async def flush(self) -> None:
        """Sync the log, then commit every held batch (one transaction per store; a stage's
        batches in their order, and stages touch rows of their own)."""
        await self.sync()
        by_store: dict[int, tuple[StateStore, list[tuple[str, list[Fact], StageCommit]]]] = {}
        for stage in self.stages:
            if stage.held:
                by_store.setdefault(id(stage.store), (stage.store, []))[1].extend(stage.held)
                stage.held.clear()
        for store, batches in by_store.values():
            store.commit_many(batches)
        self.rounds = 0
        self.records = 0

    def close(self) -> None:
        for stage in self.stages:
            stage.held = None


async def run_until_idle(
    stages: Sequence[Stage],
    *,
    on_progress: Callable[[int], None] | None = None,
    on_batch: Callable[[Stage, BatchStats], None] | None = None,
    parallel: bool = False,
) -> int:
    """Process everything on the log, stages advancing through event time together.

    Rounds follow a fixed event-time grid (:data:`HORIZON_STEP_MS`): in each, every stage in
    turn processes its whole window up to the round's horizon. A stage sees what the stages
    before it produced in the same round (the work-order snapshots reach the fleet stage at
    once); what a later stage feeds back (geofence arrivals to the work-order stage) is taken
    in the next round, at most two windows behind, well within the allowed lateness. So the
    batches, and every derived event, depend only on what is on the log. Returns the number of
    records processed. ``on_progress`` hears the records of every non-empty batch,
    ``on_batch`` each such batch with its stage (for metrics).

    Batches are committed in groups of up to :data:`GROUP_ROUNDS` rounds (see
    :class:`CommitGroup`); everything is committed before this returns, or raises.

    With ``parallel``, the last stage runs a round behind the others in a process of its own
    where it can (see :mod:`streams.follower`), with the same batches, outputs and state as
    here; its stage object is then detached from its state, so the stages are for one run.
    """
    from streams.follower import MAX_AHEAD, Follower, can_follow

    total = 0
    group = CommitGroup(stages)
    group.open()
    follower = Follower(stages[-1]) if parallel and can_follow(stages) else None
    ours = stages if follower is None else stages[:-1]

    def took(stage: Stage, stats: BatchStats) -> None:
        nonlocal total
        n = stats.records
        group.records += n
        total += n
        if n and on_progress is not None:
            on_progress(n)
        if n and on_batch is not None:
            on_batch(stage, stats)

    def followed(stats: BatchStats) -> None:
        assert follower is not None
        took(follower.stage, stats)

    failed = True
    try:
        if follower is not None:
            await follower.start()
            follower.replay(followed)
        while True:
            heads = [t for t in [await s.next_time() for s in ours] if t is not None]
            if not heads:
                if follower is not None:
                    follower.drain(await follower.stage.input_ends(), followed)
                failed = False
                return total
            horizon = horizon_after(min(heads))
            for stage in ours:
                await group.before(stage)
                took(stage, await stage.step(horizon))
            if follower is not None:
                follower.send_round(horizon, await follower.record_round(horizon))
                follower.poll(followed, until=follower.sent - MAX_AHEAD)
            group.rounds += 1
            if group.full():
                if follower is not None:
                    # Its batches done so far go with the others' (appended before the
                    # log is synced): it is not waited for, and may be some rounds behind
                    # them in the store, as the rounds recorded on the log let it be.
                    follower.poll(followed)
                await group.flush()
    finally:
        # The batches processed so far are whole: commit them, also when a step failed or
        # the run was cancelled (a failed step holds nothing: it neither appended nor kept).
        follower_failed: RuntimeError | None = None
        try:
            if follower is not None and follower.error is None:
                try:
                    follower.sync(followed)
                except RuntimeError as exc:  # it failed meanwhile (raised below)
                    follower_failed = exc
            if follower is not None and follower.error is not None:
                # Without the follower's batches, none is committed (a restart processes the
                # batches again: their outputs are on the log, with their marks).
                for stage in group.stages:
                    if stage.held:
                        stage.held.clear()
            await group.flush()
        finally:
            group.close()
            if follower is not None:
                if failed or follower.error is not None:
                    follower.close()
                else:
                    follower.stop()
        if follower_failed is not None and not failed:
            raise follower_failed
