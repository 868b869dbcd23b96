"""The ETA stage: the streaming ETA engine over the technician-keyed streams.

It reads fs.gps and fs.by-technician (co-partitioned by technician, so a technician's pings
and the snapshots of every job assigned to them meet in one partition), hands each batch to
:class:`eta_engine.engine.EtaEngine` in the stage's deterministic order, and writes

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

from eta_engine.engine import EtaConfig, EtaEngine
from eta_engine.roads import RoadGraph
from events.base import Causation, Event
from events.catalog import ALERTS, ETA
from events.codec import Rejection, decode_trusted, encode
from streams.log import OutRecord, Record
from streams.pipeline import CHECKPOINT, StageResult
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


class EtaProcessor:
    """The ``eta`` stage (see the module docstring)."""

    name = "eta"
    inputs: tuple[str, ...] = ("fs.gps", "fs.by-technician")
    aggregate_kind = "technician"
    """The stage records no facts; the kind only names where its (empty) fact batches go."""
    checkpoints = True
    """Its state is the engine's, saved every ``checkpoint_every`` batches."""

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

    def restore(self, store: StateStore, state: StageState) -> None:
        snapshot = state.kv.get("engine")
        if snapshot is not None:
            self.engine.restore(snapshot)
        self._batches = int(state.kv.get(CHECKPOINT, {}).get("batch", 0))

    def process(self, records: Sequence[Record]) -> StageResult:
        result = StageResult()
        batch: list[tuple[Event, Causation]] = []
        for record in records:
            # Pings were validated in full at ingest and the snapshots are the pipeline's
            # own: both decode on the fast path (a structural surprise is still refused).
            event = decode_trusted(record.value)
            if isinstance(event, Rejection):
                result.dead_letter(record, event.rule, event.message, self.name, event.field)
                continue
            batch.append(
                (event, Causation(event.id, record.topic, record.partition, record.offset))
            )
        derived = self.engine.apply(batch)
        derived += self.engine.flush()
        for event in derived:
            topic = _TOPIC_OF_OUTPUT[event.type]
            result.outputs.append(OutRecord(topic, encode(event), event.key.encode(), event.time))
            result.count(event.type)
        result.count("inputs", len(batch))
        self._batches += 1
        if self._batches % self.checkpoint_every == 0:
            result.kv["engine"] = self.engine.snapshot()
            result.checkpoint = True
        return result
