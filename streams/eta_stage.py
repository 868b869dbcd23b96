"""The ETA stage: the streaming ETA engine over the technician-keyed streams.

It reads fs.gps and fs.by-technician (co-partitioned by technician, so a technician's pings
and the snapshots of every job assigned to them meet in one partition), hands each batch to
:class:`eta_engine.engine.EtaEngine` in the stage's deterministic order (pings as columns,
read from their records only where the engine uses them), and writes

* ``EtaUpdated`` to fs.eta and ``LateAlertRaised``/``LateAlertCleared`` to fs.alerts, keyed
  by work order, each carrying the time and the log position of the input that caused it.

The engine's whole state is saved as a checkpoint every :data:`CHECKPOINT_EVERY` batches (an
hour of event time when a backlog is processed), in the transaction that commits that batch's
offsets; the batches in between commit only their offsets. A restart resumes from the last
checkpoint and processes the batches after it again, appending nothing they had already
appended (see :class:`streams.pipeline.Stage`). The engine closes
its evaluation steps on event time; the stage closes the open step at the end of every batch,
and batches are whole windows of a fixed event-time grid (see streams/pipeline.py), so what
it publishes, and when, depends only on the log: a replay reproduces fs.eta and fs.alerts
byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import orjson

from eta_engine.engine import EtaConfig, EtaEngine, Fix, PingColumns
from eta_engine.roads import RoadGraph
from events.base import Causation, Event
from events.catalog import ALERTS, BY_TECHNICIAN, DLQ, ETA, GPS
from events.codec import Rejection, decode_trusted, encode
from events.kinds import GpsPinged
from streams.log import OutRecord, Record
from streams.pipeline import CHECKPOINT, Interleaved, StageResult, interleave
from streams.state_store import StageState, StateStore

CHECKPOINT_EVERY = 12
"""Batches between two checkpoints of the engine: its state (tens of kilobytes per technician
en route) is too large to write after every batch, and re-processing at most this many
batches after a restart is cheap."""

_TOPIC_OF_OUTPUT = {
    "EtaUpdated": ETA.name,
    "LateAlertRaised": ALERTS.name,
    "LateAlertCleared": ALERTS.name,
}


class _LogPings:
    """The pings of one batch, read from their records only when the engine asks (see
    :class:`eta_engine.engine.PingSource`). A record that cannot be read as a ping goes to
    fs.dlq, once."""

    __slots__ = ("_bad", "_pings", "_read", "_stage")

    def __init__(self, pings: Interleaved, stage: str) -> None:
        self._pings = pings
        self._read: dict[int, Fix | None] = {}
        self._bad: list[tuple[Record, Rejection]] = []
        self._stage = stage

    def ping(self, row: int) -> Fix | None:
        if row in self._read:
            return self._read[row]
        pings = self._pings
        raw = pings.values[row]
        fix: Fix | None = None
        try:
            # Ingest validated the ping in full: read just what the engine uses.
            doc = orjson.loads(raw)
            if doc["type"] == GpsPinged.__name__:
                data = doc["data"]
                position = Causation(
                    doc["id"], pings.topic, int(pings.partitions[row]), int(pings.offsets[row])
                )
                fix = (
                    position,
                    data["lat"],
                    data["lon"],
                    data.get("speed_mps"),
                    data.get("heading_deg"),
                )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
        if fix is None:  # not what ingest writes: the decoder says precisely what is wrong
            event = decode_trusted(raw)
            if isinstance(event, GpsPinged):
                position = Causation(
                    event.id, pings.topic, int(pings.partitions[row]), int(pings.offsets[row])
                )
                fix = (position, event.lat, event.lon, event.speed_mps, event.heading_deg)
            else:
                if not isinstance(event, Rejection):
                    event = Rejection("type", "type", f"expected GpsPinged, got {event.type}")
                self._bad.append((pings.record(row), event))
        self._read[row] = fix
        return fix

    def dead_letters(self, result: StageResult) -> None:
        """Send the records found unreadable so far to fs.dlq (and forget them)."""
        for record, rejection in self._bad:
            result.dead_letter(
                record, rejection.rule, rejection.message, self._stage, rejection.field
            )
        self._bad = []


class EtaProcessor:
    """The ``eta`` stage (see the module docstring)."""

    name = "eta"
    inputs: tuple[str, ...] = (GPS.name, BY_TECHNICIAN.name)
    aggregate_kind = "technician"
    """The stage records no facts; the kind only names where its (empty) fact batches go."""
    checkpoints = True
    """Its state is the engine's, saved every ``checkpoint_every`` batches."""
    columnar = GPS.name
    """Pings are read a column at a time (see :class:`streams.pipeline.Stage`)."""
    outputs: tuple[str, ...] = (ETA.name, ALERTS.name, DLQ.name)
    """Every topic it appends to: no stage before it in a round reads them, so it may run a
    round behind them in a process of its own (see :mod:`streams.follower`)."""

    def __init__(
        self,
        graph: RoadGraph,
        config: EtaConfig | None = None,
        *,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.engine = EtaEngine(graph, config or EtaConfig())
        self.checkpoint_every = checkpoint_every
        self._batches = 0
        self._tids: dict[bytes | None, str] = {}
        """Technician ids by ping key (a key-less ping is looked up too, never found)."""

    def restore(self, store: StateStore, state: StageState) -> None:
        snapshot = state.kv.get("engine")
        if snapshot is not None:
            self.engine.restore(snapshot)
        self._batches = int(state.kv.get(CHECKPOINT, {}).get("batch", 0))

    def process(self, records: Sequence[Record]) -> StageResult:
        """Handle a batch given as records (the runner calls :meth:`process_batch`)."""
        return self.process_batch(*interleave(records, GPS.name))

    def process_batch(self, records: Sequence[Record], pings: Interleaved) -> StageResult:
        """Handle one batch: its fs.by-technician records decoded one by one, its pings (the
        hot path) handed to the engine as columns.

        A ping's key is its technician and its record time its event time (ingest guarantees
        both, having validated the ping in full), so a ping is decoded only if the engine
        reads it (see :meth:`eta_engine.engine.EtaEngine.apply_columns`); one that turns out
        unreadable then goes to fs.dlq, and one without a key is decoded for its technician.
        """
        result = StageResult()
        rows: list[tuple[Event, Causation]] = []
        before: list[int] = []
        ordered = pings.before
        for i, record in enumerate(records):
            # The snapshots are the pipeline's own: they decode on the fast path (a
            # structural surprise is still refused).
            event = decode_trusted(record.value)
            if isinstance(event, Rejection):
                result.dead_letter(record, event.rule, event.message, self.name, event.field)
                continue
            rows.append((event, Causation(event.id, record.topic, record.partition, record.offset)))
            before.append(ordered[i])
        source = _LogPings(pings, self.name)
        known = self._tids
        # Nearly every key is a technician already seen: all looked up at once, the rest
        # (new keys, pings without a key) worked out one by one, in order.
        tids: list[str | None] = list(map(known.get, pings.keys))
        if None in tids:
            for row, key in enumerate(pings.keys):
                if tids[row] is not None:
                    continue
                if key is None:  # not as ingest writes pings: the technician is in the value
                    event = decode_trusted(pings.values[row])
                    if isinstance(event, GpsPinged):
                        tid = event.technician_id
                    else:
                        source.ping(row)  # sends it to fs.dlq
                        tid = ""  # nobody's: not used
                else:
                    cached = known.get(key)
                    if cached is None:
                        tid = key.decode("utf-8", "replace")
                        if len(known) < 100_000:  # a cache: bounded, refilled at will
                            known[key] = tid
                    else:
                        tid = cached
                tids[row] = tid
        columns = PingColumns(cast(list[str], tids), pings.timestamps.tolist(), before, source)
        derived = self.engine.apply_columns(rows, columns)
        derived += self.engine.flush()
        source.dead_letters(result)
        for event in derived:
            topic = _TOPIC_OF_OUTPUT[event.type]
            result.outputs.append(OutRecord(topic, encode(event), event.key.encode(), event.time))
            result.count(event.type)
        result.count("inputs", len(rows) + len(pings))
        self._batches += 1
        if self._batches % self.checkpoint_every == 0:
            result.kv["engine"] = self.engine.snapshot()
            result.checkpoint = True
        return result
