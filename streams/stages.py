"""The aggregate stages: work orders (keyed by work order) and the fleet (keyed by technician).

``workorders`` reads the work-order input topics, keeps every WorkOrder aggregate, and writes

* ``WorkOrderStateChanged`` to fs.workorders (the compacted state changelog), and the same
  snapshot, re-keyed by technician, to the internal fs.by-technician topic;
* technicians' own events (registered, shift started/ended) and parts picked, used and missing,
  re-keyed by technician, to fs.by-technician (a missing part tells the ETA engine the visit
  will end early, unfixed);
* rejected input to fs.dlq with the reason.

``fleet`` reads fs.gps and fs.by-technician, which are co-partitioned by technician, keeps
every Technician aggregate and each technician's last in-shift position, and writes

* arrivals and departures detected by geofence (``TechnicianArrived``/``TechnicianDeparted``
  with ``detected_by="geofence"``) to fs.geofence, which the workorders stage reads as one
  more input (a topic of their own, so a replayed day's detections are not queued behind the
  day's taps on fs.status);
* ``AssignmentConflicted`` to fs.alerts when a technician's assignments overlap.

Pings are about 95% of all traffic: they take a fast path (one orjson parse, a few dictionary
operations, no aggregate event) and move a technician's position only while on shift: pings
outside a shift are neither stored nor shown.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from aggregates import technician as tech_agg
from aggregates import workorder as wo_agg
from aggregates.decisions import Accept, Ignore, Park, Reject
from aggregates.facts import fact_of
from aggregates.technician import DEPARTURE_FACTOR, Position, Technician
from aggregates.workorder import WorkOrder
from eta_engine.roads import haversine_m
from events import kinds as k
from events.base import Causation, Event
from events.catalog import ALERTS, BY_TECHNICIAN, GEOFENCE, WORKORDERS
from events.codec import (
    Rejection,
    data_fields,
    decode_trusted,
    encode,
    validate,
    values_encoder,
)
from streams.log import OutRecord, Record
from streams.pipeline import Interleaved, StageResult, interleave
from streams.state_store import ParkedRecord, StageState, StateStore

DEFAULT_LATENESS_MS = 15 * 60_000
"""How late (behind the newest event seen on its partition) an event may arrive and still be
applied by its event time; later ones go to fs.dlq as ``too_late``."""
DEFAULT_GEOFENCE_M = 75.0

TECHNICIAN_KEYED = frozenset({"TechnicianRegistered", "ShiftStarted", "ShiftEnded"})
_INTERNAL = frozenset({"fs.by-technician", "fs.geofence"})


_VECTOR_MIN = 24
"""Fixes of one technician between two records from which the geofence filters them with
arrays (fewer cost less one by one)."""

_BATCH_FENCE = True
"""Whether the fleet stage rules out, once per batch and with arrays, the fixes of watched
technicians that cannot hit a fence (see :meth:`FleetProcessor._fence_prefilter`)."""


_PART_KINDS = (k.PartPicked, k.PartUsed, k.PartMissing)
"""Parts picked, used and missing: re-keyed to their technician as themselves."""


def _position(record: Record, event: Event) -> Causation:
    return Causation(event.id, record.topic, record.partition, record.offset)


@dataclass(slots=True)
class _Parked:
    event: Event
    record: Record
    deadline: int
    rule: str
    message: str

    def stored(self, aggregate_id: str) -> ParkedRecord:
        r = self.record
        return ParkedRecord(
            aggregate_id,
            self.event.id,
            r.topic,
            r.partition,
            r.offset,
            self.event.time,
            self.deadline,
            self.rule,
            self.message,
            r.value,
        )


class _Parking:
    """Events waiting for an earlier one, per aggregate, with expiry by stream time."""

    def __init__(self) -> None:
        self.by_aggregate: dict[str, list[_Parked]] = {}
        self._deadlines: list[tuple[int, str, str]] = []  # (deadline, event id, aggregate)
        self._ids: set[str] = set()

    def add(self, aggregate_id: str, parked: _Parked) -> bool:
        if parked.event.id in self._ids:
            return False
        self._ids.add(parked.event.id)
        self.by_aggregate.setdefault(aggregate_id, []).append(parked)
        heapq.heappush(self._deadlines, (parked.deadline, parked.event.id, aggregate_id))
        return True

    def take(self, aggregate_id: str) -> list[_Parked]:
        """Remove and return an aggregate's parked events, oldest first."""
        items = self.by_aggregate.pop(aggregate_id, None)
        if items is None:
            return []  # the usual case, asked after every change of every aggregate
        for item in items:
            self._ids.discard(item.event.id)
        return sorted(items, key=lambda p: (p.event.time, p.record.offset))

    def expired(self, stream_time: int) -> list[tuple[str, _Parked]]:
        """Remove and return the events whose deadline ``stream_time`` has passed."""
        out = []
        while self._deadlines and self._deadlines[0][0] < stream_time:
            _, event_id, aggregate_id = heapq.heappop(self._deadlines)
            if event_id not in self._ids:
                continue
            items = self.by_aggregate.get(aggregate_id, [])
            for i, item in enumerate(items):
                if item.event.id == event_id:
                    out.append((aggregate_id, items.pop(i)))
                    break
            if not items:
                self.by_aggregate.pop(aggregate_id, None)
            self._ids.discard(event_id)
        return out

    def waiting_for(self, rule: str) -> list[str]:
        return [a for a, items in self.by_aggregate.items() if any(p.rule == rule for p in items)]


class _Base:
    """What both aggregate stages share: decoding, lateness, parking, dead letters."""

    name = ""

    def __init__(self, lateness_ms: int) -> None:
        self.lateness_ms = lateness_ms
        self.stream_time = 0
        self.parking = _Parking()
        self._result = StageResult()

    def _decode(self, record: Record) -> Event | None:
        # Topics only the pipeline writes are decoded without per-field checks (they were
        # checked when first accepted); input topics are validated in full.
        decoded = (
            decode_trusted(record.value) if record.topic in _INTERNAL else validate(record.value)
        )
        if isinstance(decoded, Rejection):
            self._result.dead_letter(
                record, decoded.rule, decoded.message, self.name, decoded.field
            )
            return None
        return decoded

    def _too_late(self, record: Record, event: Event) -> bool:
        if event.time < self.stream_time - self.lateness_ms:
            behind = (self.stream_time - event.time) / 60_000
            self._result.dead_letter(
                record,
                "too_late",
                f"{event.type} {event.id} is {behind:.1f} min behind the stream "
                f"(allowed lateness {self.lateness_ms / 60_000:.0f} min)",
                self.name,
                "time",
            )
            return True
        self.stream_time = max(self.stream_time, event.time)
        return False

    def _park(
        self, aggregate_id: str, event: Event, record: Record, rule: str, message: str
    ) -> None:
        parked = _Parked(event, record, event.time + self.lateness_ms, rule, message)
        if self.parking.add(aggregate_id, parked):
            self._result.parked_add.append(parked.stored(aggregate_id))
            self._result.count("parked")

    def _expire(self) -> None:
        if not self.parking.by_aggregate:
            return
        for _, parked in self.parking.expired(self.stream_time):
            self._result.parked_remove.append(parked.event.id)
            self._result.dead_letter(parked.record, parked.rule, parked.message, self.name, "type")

    def _restore_parked(self, state: StageState) -> None:
        for row in state.parked:
            event = validate(row.raw)
            assert not isinstance(event, Rejection)
            record = Record(row.topic, row.partition, row.offset, row.time, None, row.raw)
            self.parking.add(
                row.aggregate_id, _Parked(event, record, row.deadline, row.rule, row.message)
            )
        self.stream_time = int(state.kv.get("stream_time", 0))


# -- work orders -------------------------------------------------------------------------------


class WorkOrderProcessor(_Base):
    """The ``workorders`` stage (see the module docstring)."""

    name = "workorders"
    inputs: tuple[str, ...] = (
        "fs.bookings",
        "fs.dispatch",
        "fs.status",
        "fs.parts",
        "fs.feedback",
        "fs.geofence",
    )
    aggregate_kind = "workorder"

    def __init__(self, lateness_ms: int = DEFAULT_LATENESS_MS) -> None:
        super().__init__(lateness_ms)
        self.orders: dict[str, WorkOrder] = {}
        self._jobs: dict[str, tuple[Any, ...]] = {}
        """Each order's :func:`job_fields` as its last snapshot carried them (so a change
        compares against them without computing them again; filled as orders change)."""
        self.registry: dict[str, tuple[str, ...]] = {}

    def skills_of(self, technician_id: str) -> tuple[str, ...] | None:
        return self.registry.get(technician_id)

    def restore(self, store: StateStore, state: StageState) -> None:
        for fact in store.all_facts(self.aggregate_kind):
            self.orders[fact.originator_id] = wo_agg.evolve(
                self.orders.get(fact.originator_id), fact
            )
        self.registry = {t: tuple(s) for t, s in state.kv.get("registry", {}).items()}
        self._restore_parked(state)

    def process(self, records: Sequence[Record]) -> StageResult:
        self._result = result = StageResult()
        registry_changed = False
        for record in records:
            event = self._decode(record)
            if event is None or self._too_late(record, event):
                self._expire()
                continue
            if event.type in TECHNICIAN_KEYED:
                if isinstance(event, k.TechnicianRegistered):
                    self.registry[event.technician_id] = tuple(event.skills)
                    registry_changed = True
                result.outputs.append(
                    OutRecord(BY_TECHNICIAN.name, record.value, event.key.encode(), event.time)
                )
                if isinstance(event, k.TechnicianRegistered):
                    for order_id in self.parking.waiting_for("unknown_technician"):
                        self._retry(order_id)
            else:
                self._handle(event, record)
            self._expire()
        result.kv["stream_time"] = self.stream_time
        if registry_changed:
            result.kv["registry"] = {t: list(s) for t, s in sorted(self.registry.items())}
        return result

    def _handle(self, event: Event, record: Record) -> bool:
        order_id = getattr(event, "work_order_id", None)
        if not isinstance(order_id, str):
            self._result.dead_letter(
                record, "unsupported", f"{event.type} does not belong on {record.topic}", self.name
            )
            return False
        order = self.orders.get(order_id)
        decision = wo_agg.decide(order, event, self.skills_of)
        if isinstance(decision, Accept):
            self._apply(order, order_id, event, record, decision.effect)
            self._retry(order_id)
            return True
        if isinstance(decision, Park):
            self._park(order_id, event, record, decision.rule, decision.message)
        elif isinstance(decision, Reject):
            self._result.dead_letter(record, decision.rule, decision.message, self.name, "type")
        else:
            assert isinstance(decision, Ignore)
            self._result.count("ignored")
        return False

    def _retry(self, order_id: str) -> None:
        """Give the order's parked events another go, until none applies."""
        progress = True
        while progress and order_id in self.parking.by_aggregate:
            progress = False
            for parked in self.parking.take(order_id):
                decision = wo_agg.decide(self.orders.get(order_id), parked.event, self.skills_of)
                if isinstance(decision, Accept):
                    self._result.parked_remove.append(parked.event.id)
                    self._apply(
                        self.orders.get(order_id),
                        order_id,
                        parked.event,
                        parked.record,
                        decision.effect,
                    )
                    progress = True
                elif isinstance(decision, Park):
                    self.parking.add(order_id, parked)
                else:
                    self._result.parked_remove.append(parked.event.id)
                    if isinstance(decision, Reject):
                        self._result.dead_letter(
                            parked.record, decision.rule, decision.message, self.name, "type"
                        )

    def _apply(
        self, order: WorkOrder | None, order_id: str, event: Event, record: Record, effect: str
    ) -> None:
        result = self._result
        before_status = order.status.value if order is not None else None
        before_tech = order.technician_id if order is not None else None
        before_job = None if order is None else self._jobs.get(order_id) or job_fields(order)
        version = order.version + 1 if order is not None else 1
        fact = fact_of(event, order_id, version, effect)
        order = wo_agg.evolve(order, fact, event)
        self.orders[order_id] = order
        result.facts.append(fact)
        result.count("applied")
        job = self._jobs[order_id] = job_fields(order)
        status, technician, visit, *details = job
        previous_technician = before_tech if before_tech != technician else None
        # The WorkOrderStateChanged, encoded straight from its fields (SNAPSHOT_FIELDS).
        raw = _encode_snapshot(
            f"{event.id}/wo",
            SNAPSHOT_SOURCE,
            event.time,
            order.id,
            _position(record, event),
            order.id,
            status,
            before_status,
            event.type,
            technician,
            previous_technician,
            visit,
            order.customer_id,
            *details,
        )
        result.outputs.append(OutRecord(WORKORDERS.name, raw, order_id.encode(), event.time))
        if job == before_job and previous_technician is None:
            # Nothing a technician's stream carries moved (an invoice, a rating, a contact, a
            # part picked: those that matter to the van reach it as themselves, below).
            result.count("snapshots_not_rekeyed")
        else:
            for holder in {technician, previous_technician} - {None}:
                assert holder is not None
                result.outputs.append(
                    OutRecord(BY_TECHNICIAN.name, raw, holder.encode(), event.time)
                )
        if isinstance(event, _PART_KINDS):
            result.outputs.append(
                OutRecord(
                    BY_TECHNICIAN.name, record.value, event.technician_id.encode(), event.time
                )
            )


def _fences_of(tech: Technician) -> tuple[list[tuple[float, float]], Any]:
    """A technician's fences as they stand: the sites it is on its way to and not yet
    detected at, and the visit it is leaving (None unless completed)."""
    arrivals = [
        (job.site_lat, job.site_lon)
        for job in tech.jobs.values()
        if job.status == "en_route" and not job.arrival_detected
    ]
    left = tech.leaving
    return arrivals, left if left is not None and left.completed_at is not None else None


JOB_FIELDS = (
    "status",
    "technician_id",
    "visit",
    "site_lat",
    "site_lon",
    "region",
    "job_type",
    "priority",
    "window_start",
    "window_end",
    "queue_position",
    "planned_start",
    "planned_end",
    "assigned_at",
    "en_route_at",
    "arrived_at",
    "arrived_by",
    "started_at",
    "completed_at",
    "departed_at",
    "fixed",
)
"""The fields of :func:`job_fields`, in its order: the order of the snapshot's data fields
(``WorkOrderStateChanged``), which they are passed as."""


def job_fields(order: WorkOrder) -> tuple[Any, ...]:
    """The part of a work order's snapshot that the technician's stream (the fleet and ETA
    stages) uses: who holds it, where, when, and how far the current visit has got. The
    values of :data:`JOB_FIELDS`, in order (a tuple: made, compared with the last and passed
    on for every change of every order)."""
    visit = order.visit
    technician = order.technician_id
    if technician is None and visit is not None and visit.completed_at is not None:
        technician = visit.technician_id  # the technician who just completed the visit
    return (
        order.status.value,
        technician,
        visit.number if visit else 0,
        order.site_lat,
        order.site_lon,
        order.region,
        order.job_type,
        order.priority,
        order.window_start,
        order.window_end,
        visit.queue_position if visit else None,
        visit.planned_start if visit else None,
        visit.planned_end if visit else None,
        visit.assigned_at if visit else None,
        visit.en_route_at if visit else None,
        visit.arrived_at if visit else None,
        visit.arrived_by if visit else None,
        visit.started_at if visit else None,
        visit.completed_at if visit else None,
        visit.departed_at if visit else None,
        visit.fixed if visit else None,
    )


SNAPSHOT_FIELDS = (
    "work_order_id",
    "status",
    "previous_status",
    "trigger",
    "technician_id",
    "previous_technician_id",
    "visit",
    "customer_id",
    *JOB_FIELDS[3:],
)
"""The data fields a snapshot is encoded with, in the order :meth:`WorkOrderProcessor._apply`
passes them (the schema's fields after them take their defaults)."""
if data_fields("WorkOrderStateChanged")[: len(SNAPSHOT_FIELDS)] != SNAPSHOT_FIELDS or JOB_FIELDS[
    :3
] != ("status", "technician_id", "visit"):
    raise ImportError("WorkOrderStateChanged's data fields are not in SNAPSHOT_FIELDS' order")
_encode_snapshot = values_encoder("WorkOrderStateChanged")


SNAPSHOT_SOURCE = "fieldstream/workorders"


# -- the fleet ---------------------------------------------------------------------------------


class FleetProcessor(_Base):
    """The ``fleet`` stage (see the module docstring)."""

    name = "fleet"
    inputs: tuple[str, ...] = ("fs.gps", "fs.by-technician")
    aggregate_kind = "technician"
    columnar = "fs.gps"
    """Pings are read a column at a time (see :class:`streams.pipeline.Stage`)."""

    def __init__(
        self, lateness_ms: int = DEFAULT_LATENESS_MS, geofence_m: float = DEFAULT_GEOFENCE_M
    ) -> None:
        super().__init__(lateness_ms)
        self.geofence_m = geofence_m
        self.technicians: dict[str, Technician] = {}
        self._watched: set[str] = set()
        """Technicians whose pings the geofence must look at: en route, or leaving a site."""
        self._pings = 0
        self._off_shift = 0
        self._latest: dict[str, tuple[int, int]] = {}
        self._newest: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self._fence_versions: dict[str, int] = {}
        self._fence_candidates: set[int] = set()

    def restore(self, store: StateStore, state: StageState) -> None:
        for fact in store.all_facts(self.aggregate_kind):
            tid = fact.originator_id
            self.technicians[tid] = tech_agg.evolve(self.technicians.get(tid), fact)
        for tid, (t, lat, lon, speed, heading) in state.positions.items():
            if tid in self.technicians:
                self.technicians[tid].position = Position(t, lat, lon, speed, heading)
        for tid, tech in self.technicians.items():
            self._watch(tid, tech)
        self._restore_parked(state)

    def _watch(self, tid: str, tech: Technician) -> None:
        if tech.leaving is not None or any(j.status == "en_route" for j in tech.jobs.values()):
            self._watched.add(tid)
        else:
            self._watched.discard(tid)

    def process(self, records: Sequence[Record]) -> StageResult:
        """Handle a batch given as records (the runner calls :meth:`process_batch`)."""
        return self.process_batch(*interleave(records, "fs.gps"))

    def process_batch(self, records: Sequence[Record], pings: Interleaved) -> StageResult:
        """Handle one batch: its fs.by-technician records one by one, in order, and its pings
        (the hot path) mostly a batch at a time.

        A ping's key is its technician and its record time its event time (ingest guarantees
        both, having validated the ping in full), so most pings are never decoded: only each
        technician's newest counted fix of the batch (for the position) and the fixes of
        technicians who may be arriving at or leaving a site (for the geofence). Whether a ping
        is too late and whether it falls in its technician's shift are decided for the whole
        batch at once, against the state as it stands at the ping's place in the batch: a
        shift changes only through the records of this batch, so the pings of the few
        technicians whose shift moves here (and of those the geofence may watch) are looked at
        one by one, in order, between the records. A ping that turns out unreadable when
        decoded goes to fs.dlq.
        """
        self._result = result = StageResult()
        latest: dict[str, tuple[int, int]] = {}
        self._latest = latest
        self._pings = self._off_shift = 0
        n = len(pings)
        special: list[int] = []
        tids: list[str | None] = []
        code = np.zeros(0, np.int64)
        stamps = pings.timestamps
        events = [self._decode(record) for record in records]
        if n:
            special, tids, code = self._classify(records, events, pings)
        position = 0
        done = 0
        codes = code.tolist()
        self._fence_prefilter(special, tids, codes, pings)
        times = stamps.tolist()
        for i, record in enumerate(records):
            upto = pings.before[i]
            if upto > done:
                self.stream_time = max(self.stream_time, int(self._newest[upto - 1]))
                end = bisect_left(special, upto, position)
                if end > position:
                    self._special_run(special[position:end], tids, codes, times, pings)
                position = end
                done = upto
                self._expire()
            event = events[i]
            if event is not None and not self._too_late(record, event):
                self._handle(event, record)
            self._expire()
        if n:
            self.stream_time = max(self.stream_time, int(self._newest[-1]))
            if position < len(special):
                self._special_run(special[position:], tids, codes, times, pings)
            self._expire()
        if self._pings:
            result.count("pings", self._pings)
        if self._off_shift:
            result.count("pings_off_shift", self._off_shift)  # privacy: never stored, never shown
        # Only each technician's newest fix of the batch moves its position: decode just those.
        for tid in sorted(latest):
            at, j = latest[tid]
            tech = self.technicians[tid]
            try:
                data = orjson.loads(pings.values[j])["data"]
                fix = Position(
                    at,
                    float(data["lat"]),
                    float(data["lon"]),
                    data.get("speed_mps"),
                    data.get("heading_deg"),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                result.dead_letter(
                    pings.record(j), "invalid", f"unreadable ping ({exc})", self.name
                )
                continue
            if tech.position is None or fix.time >= tech.position.time:
                tech.position = fix
                result.positions[tid] = (fix.time, fix.lat, fix.lon, fix.speed_mps, fix.heading_deg)
        result.kv["stream_time"] = self.stream_time
        return result

    def _classify(
        self, records: Sequence[Record], events: Sequence[Event | None], pings: Interleaved
    ) -> tuple[list[int], list[str | None], npt.NDArray[np.int64]]:
        """Decide what can be decided for all of a batch's pings at once; return the pings to
        look at one by one (in order), each distinct technician and each ping's index in it."""
        result = self._result
        n = len(pings)
        stamps = pings.timestamps
        self._newest = newest = np.maximum.accumulate(stamps)
        # The stream time just before each ping: the newest ping and record before it.
        seen = np.empty(n, np.int64)
        seen[0] = self.stream_time
        np.maximum(newest[:-1], self.stream_time, out=seen[1:])
        if records:
            record_newest = np.maximum.accumulate(
                np.fromiter((r.timestamp_ms for r in records), np.int64, len(records))
            )
            preceding = np.searchsorted(
                np.asarray(pings.before, np.int64), np.arange(n), side="right"
            )
            np.maximum(
                seen, np.concatenate(([self.stream_time], record_newest))[preceding], out=seen
            )
        fresh = stamps >= seen - self.lateness_ms
        keys = pings.keys
        codes: dict[bytes | None, int] = {}
        code = np.fromiter((codes.setdefault(key, len(codes)) for key in keys), np.int64, n)
        tids = [None if key is None else _KEYS.get(key) or _key_text(key) for key in codes]
        if None in codes:
            fresh &= code != codes[None]
            for j in np.flatnonzero(code == codes[None]).tolist():
                result.dead_letter(
                    pings.record(j), "missing", "a ping must be keyed by its technician", self.name
                )
        if not fresh.all():
            for j in np.flatnonzero(~fresh).tolist():
                if keys[j] is not None:
                    result.dead_letter(
                        pings.record(j),
                        "too_late",
                        "ping older than the allowed lateness",
                        self.name,
                        "time",
                    )
        # Technicians whose shift may change inside the batch (a shift event, or a registration
        # that lets parked ones through), and those the geofence may watch at some point of it
        # (watched now, or touched by one of the batch's records).
        moving = {
            record_key(r)
            for r, event in zip(records, events, strict=True)
            if event is not None and event.type in TECHNICIAN_KEYED
        }
        moving.update(self.parking.by_aggregate)
        touched = {record_key(r) for r in records} | self._watched
        starts = np.full(len(tids), np.iinfo(np.int64).max, np.int64)
        one_by_one = np.zeros(len(tids), bool)
        for c, tid in enumerate(tids):
            if tid is None:
                continue
            if tid in moving or tid in touched:
                one_by_one[c] = True
            if tid in moving:
                continue
            tech = self.technicians.get(tid)
            if tech is not None and tech.on_shift:
                starts[c] = tech.shift_started_at if tech.shift_started_at is not None else 0
        settled = fresh & ~one_by_one[code]
        counted = settled & (stamps >= starts[code])
        n_counted = int(np.count_nonzero(counted))
        self._pings += n_counted
        self._off_shift += int(np.count_nonzero(settled)) - n_counted
        if n_counted:
            # Each technician's newest counted fix (the last of equal times, as in order).
            where = np.flatnonzero(counted)
            by = np.lexsort((where, stamps[where], code[where]))
            sorted_codes = code[where][by]
            last = np.flatnonzero(np.append(sorted_codes[1:] != sorted_codes[:-1], True))
            for j in where[by][last].tolist():
                tid = tids[code[j]]
                assert tid is not None
                self._latest[tid] = (int(stamps[j]), j)
        special = np.flatnonzero(fresh & one_by_one[code]).tolist()
        return special, tids, code

    def _special_run(
        self,
        run: list[int],
        tids: Sequence[str | None],
        codes: Sequence[int],
        times: Sequence[int],
        pings: Interleaved,
    ) -> None:
        """The pings ``run`` (batch indices, in order, with no record of the batch between
        them) of technicians whose shift or geofence state may move in this batch: counted
        if in shift, each technician's newest kept as its position, and looked at by the
        geofence if it watches the technician.

        Between two records only a geofence detection changes a technician, and only that
        technician, so each technician's pings are taken together: the shift decided once,
        the newest found at once, and the geofence shown only the pings that
        :meth:`_geofence_candidates` cannot rule out, in batch order across technicians (the
        order their detections and dead letters are output in), the rest of a technician's
        pings checked again after each detection. The same outcome as each ping in turn.
        """
        groups: dict[int, list[int]] = {}
        for j in run:
            c = codes[j]
            group = groups.get(c)
            if group is None:
                groups[c] = [j]
            else:
                group.append(j)
        queue: list[tuple[int, str, int, list[int], list[int]]] = []
        """(next candidate, technician, its place among the candidates, the technician's
        pings, the candidates): a heap, so candidates are looked at in batch order."""
        for c, group in groups.items():
            tid = tids[c]
            assert tid is not None
            tech = self.technicians.get(tid)
            if tech is None or not tech.on_shift:
                self._off_shift += len(group)
                continue
            start = tech.shift_started_at
            js = group if start is None else [j for j in group if times[j] >= start]
            self._off_shift += len(group) - len(js)
            if not js:
                continue
            self._pings += len(js)
            at, j = max((times[j], j) for j in js)  # the newest, the last of equal times
            previous = self._latest.get(tid)
            if previous is None or at >= previous[0]:
                self._latest[tid] = (at, j)
            if tid in self._watched:
                candidates = self._geofence_candidates(tech, js, times, pings)
                if candidates:
                    queue.append((candidates[0], tid, 0, js, candidates))
        heapq.heapify(queue)
        while queue:
            j, tid, k, js, candidates = heapq.heappop(queue)
            if self._geofence(tid, times[j], pings, j):
                # A detection changed the technician: its later pings are looked at afresh.
                later = [i for i in js if i > j]
                if later and tid in self._watched:
                    candidates = self._geofence_candidates(
                        self.technicians[tid], later, times, pings
                    )
                    if candidates:
                        heapq.heappush(queue, (candidates[0], tid, 0, later, candidates))
            elif k + 1 < len(candidates):
                heapq.heappush(queue, (candidates[k + 1], tid, k + 1, js, candidates))

    def _fence_prefilter(
        self, special: list[int], tids: Sequence[str | None], codes: list[int], pings: Interleaved
    ) -> None:
        """Rule out, for the whole batch at once, the fixes of the technicians the geofence
        watches now that cannot hit a fence as each technician's fences stand now: one pass
        of arrays over all of them, where :meth:`_geofence_candidates` would otherwise look
        at a few fixes at a time (the runs between two of the batch's records are short
        when many technicians share a batch). A technician whose fences change in the batch
        (a record, a detection: its version moves) is looked at afresh from there."""
        self._fence_versions = {}
        self._fence_candidates = set()
        if not _BATCH_FENCE or not special or not self._watched:
            return
        fences: dict[int, tuple[str, int, list[tuple[float, float]], Any]] = {}
        for c, tid in enumerate(tids):
            if tid is None or tid not in self._watched:
                continue
            tech = self.technicians.get(tid)
            if tech is None:
                continue
            fences[c] = (tid, tech.version, *_fences_of(tech))
        if not fences:
            return
        js = [j for j in special if codes[j] in fences]
        if not js:
            return
        per_ping = [fences[codes[j]] for j in js]
        maybe = self._maybe_hits(
            js, [f[2] for f in per_ping], [f[3] for f in per_ping], pings.timestamps[js], pings
        )
        self._fence_versions = {tid: version for tid, version, _, _ in fences.values()}
        self._fence_candidates = {js[i] for i in np.flatnonzero(maybe).tolist()}

    def _maybe_hits(
        self,
        js: list[int],
        arrivals: Sequence[list[tuple[float, float]]],
        leaving: Sequence[Any],
        stamps: npt.NDArray[np.int64],
        pings: Interleaved,
    ) -> npt.NDArray[np.bool_]:
        """For each ping ``js[i]`` (fences ``arrivals[i]`` and ``leaving[i]``, the visit left
        or None, stamped ``stamps[i]``): whether the geofence might detect something at it, or
        cannot read it. Every other one is a fix :func:`aggregates.technician.geofence` answers
        None for. Distances are computed for all at once, with a margin far above the rounding
        of the two haversine computations, so that a ping at the very edge of a fence is shown
        to the exact check rather than ruled out."""
        radius = self.geofence_m
        n = len(js)
        lat = np.empty(n)
        lon = np.empty(n)
        accuracy = np.empty(n)
        unreadable = np.zeros(n, bool)
        values = pings.values
        for i, j in enumerate(js):
            try:
                data = orjson.loads(values[j])["data"]
                lat[i] = float(data["lat"])
                lon[i] = float(data["lon"])
                a = data.get("accuracy_m")
                accuracy[i] = np.nan if a is None else float(a)
            except Exception:  # the exact check says what is wrong (a dead letter)
                unreadable[i] = True
                lat[i] = lon[i] = accuracy[i] = np.nan
        usable = ~(accuracy > radius)  # a fix less accurate than the fence counts for neither
        maybe = np.zeros(n, bool)
        slack = 1e-9 * radius + 1e-6
        pair_ping = [i for i, sites in enumerate(arrivals) for _ in sites]
        if pair_ping:
            at = np.array(pair_ping, np.int64)
            sites = np.array([site for sites in arrivals for site in sites], np.float64)
            near = haversine_m(lat[at], lon[at], sites[:, 0], sites[:, 1]) <= radius + slack
            maybe[at[near]] = True
        left_ping = [i for i, left in enumerate(leaving) if left is not None]
        if left_ping:
            at = np.array(left_ping, np.int64)
            lefts = [leaving[i] for i in left_ping]
            done = np.array([left.completed_at for left in lefts], np.int64)
            site_lat = np.array([left.site_lat for left in lefts], np.float64)
            site_lon = np.array([left.site_lon for left in lefts], np.float64)
            far = haversine_m(lat[at], lon[at], site_lat, site_lon)
            maybe[at] |= (stamps[at] > done) & (far > DEPARTURE_FACTOR * radius - slack)
        maybe &= usable
        maybe |= unreadable
        return maybe

    def _geofence_candidates(
        self, tech: Technician, js: list[int], times: Sequence[int], pings: Interleaved
    ) -> list[int]:
        """The pings among ``js`` (in order) that the geofence might detect something at, or
        cannot read (see :meth:`_maybe_hits`): those the batch's prefilter left, while the
        technician's fences are as they were then; else worked out here, with arrays when
        there are enough of them."""
        if self._fence_versions.get(tech.id) == tech.version:
            candidates = self._fence_candidates
            return [j for j in js if j in candidates]
        if len(js) < _VECTOR_MIN:
            return js  # too few for arrays to pay: each is looked at as it comes
        arrivals, left = _fences_of(tech)
        n = len(js)
        stamps = np.fromiter((times[j] for j in js), np.int64, n)
        maybe = self._maybe_hits(js, [arrivals] * n, [left] * n, stamps, pings)
        return [js[i] for i in np.flatnonzero(maybe).tolist()]

    def _geofence(self, tid: str, at: int, pings: Interleaved, i: int) -> bool:
        """Look at one fix of a watched technician; True when it recorded a detection."""
        result = self._result
        tech = self.technicians[tid]
        try:
            data = orjson.loads(pings.values[i])["data"]
            lat, lon = float(data["lat"]), float(data["lon"])
            accuracy = data.get("accuracy_m")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            result.dead_letter(pings.record(i), "invalid", f"unreadable ping ({exc})", self.name)
            return False
        hit = tech_agg.geofence(tech, at, lat, lon, accuracy, self.geofence_m)
        if hit is None:
            return False
        common: dict[str, Any] = {
            "source": "fieldstream/geofence",
            "time": at,
            "subject": hit.work_order_id,
            "work_order_id": hit.work_order_id,
            "technician_id": tid,
            "detected_by": "geofence",
        }
        detected: Event
        if hit.kind == "TechnicianArrived":
            detected = k.TechnicianArrived(
                id=f"geofence/arrived/{hit.work_order_id}/{hit.visit}", **common
            )
        else:
            detected = k.TechnicianDeparted(
                id=f"geofence/departed/{hit.work_order_id}/{hit.visit}", **common
            )
        result.outputs.append(
            OutRecord(GEOFENCE.name, encode(detected), hit.work_order_id.encode(), at)
        )
        self._record_for(tid, tech, detected)
        result.count(f"geofence.{hit.kind}")
        return True

    def _handle(self, event: Event, record: Record) -> None:
        tid = record_key(record) if record.topic == BY_TECHNICIAN.name else event.key
        tech = self.technicians.get(tid)
        decision = tech_agg.decide(tech, event)
        if isinstance(decision, Accept):
            tech = self._record_for(tid, tech, event)
            if isinstance(event, k.WorkOrderStateChanged):
                self._check_conflicts(tech, event, record)
            for parked in self.parking.take(tid):
                self._result.parked_remove.append(parked.event.id)
                self._handle(parked.event, parked.record)
        elif isinstance(decision, Park):
            self._park(tid, event, record, decision.rule, decision.message)
        elif isinstance(decision, Ignore):
            self._result.count("ignored")

    def _record_for(self, tid: str, tech: Technician | None, event: Event) -> Technician:
        version = tech.version + 1 if tech is not None else 1
        fact = fact_of(event, tid, version)
        tech = tech_agg.evolve(tech, fact, event)
        self.technicians[tid] = tech
        self._watch(tid, tech)
        self._result.facts.append(fact)
        self._result.count("applied")
        return tech

    def _check_conflicts(
        self, tech: Technician, change: k.WorkOrderStateChanged, record: Record
    ) -> None:
        if change.technician_id != tech.id:
            return
        conflicts: list[tuple[str, str, str]] = []
        if change.status == "assigned" and change.planned_start and change.planned_end:
            for other in tech.jobs.values():
                if (
                    other.work_order_id != change.work_order_id
                    and other.planned_start is not None
                    and other.planned_end is not None
                    and other.planned_start < change.planned_end
                    and change.planned_start < other.planned_end
                ):
                    conflicts.append(
                        (
                            other.work_order_id,
                            "planned_overlap",
                            f"slot of {change.work_order_id} overlaps {other.work_order_id}",
                        )
                    )
        if change.status == "en_route" and change.previous_status != "en_route":
            for other in tech.jobs.values():
                if other.work_order_id != change.work_order_id and other.status in (
                    tech_agg.ACTIVE
                ):
                    conflicts.append(
                        (
                            other.work_order_id,
                            "concurrent_visits",
                            f"{tech.id} set off to {change.work_order_id} while "
                            f"{other.work_order_id} is {other.status}",
                        )
                    )
        for other_id, kind, detail in conflicts:
            conflict = k.AssignmentConflicted(
                id=f"{change.id}/conflict/{other_id}",
                source="fieldstream/fleet",
                time=change.time,
                subject=change.work_order_id,
                causation=_position(record, change),
                work_order_id=change.work_order_id,
                technician_id=tech.id,
                conflicting_work_order_id=other_id,
                kind=kind,
                detail=detail,
            )
            self._result.outputs.append(
                OutRecord(ALERTS.name, encode(conflict), change.work_order_id.encode(), change.time)
            )
            self._result.count("conflicts")


def record_key(record: Record) -> str:
    """A record's key as text (the technician for fs.by-technician)."""
    return record.key.decode() if record.key is not None else ""


_KEYS: dict[bytes, str] = {}
"""Keys already decoded: technician ids repeat on every ping."""


def _key_text(key: bytes) -> str:
    text = key.decode()
    if len(_KEYS) < 1 << 16:
        _KEYS[key] = text
    return text


ProcessorFactory = Callable[[], "WorkOrderProcessor | FleetProcessor"]
AGGREGATE_STAGES: tuple[ProcessorFactory, ...] = (WorkOrderProcessor, FleetProcessor)
