"""The projection fold: log records in, KPI rows, visit facts and live-tracking rows out.

:class:`Projection` is pure (no I/O, no clock). Feed it each partition's records in offset
order with :meth:`Projection.apply` (GPS pings may come parsed, a column at a time, with
:meth:`Projection.apply_pings`; partitions and topics may come in any order), then call
:meth:`Projection.flush` once per batch: it returns every row the batch changed, for the store
to write in one transaction with the offsets after the batch.

What is read from where (see docs/kpis.md for each KPI's formula):

* ``fs.workorders``: the lifecycle of every work order and visit, as the work-order stage
  accepted it (status, window, technician, visit timestamps, reschedules, cancellation).
  A work order's snapshots share a partition, so they are folded in the order they were made.
* input topics, for the payloads snapshots do not carry: a booking's value, maintenance kind,
  first contact and parts kit; a contact's reason; a rating's score; an invoice's amount;
  a dispute's invoice; a part used. Such an input counts once its snapshot (the one whose
  ``causationid`` is the input's id) shows it was accepted, whichever of the two is read first.
* ``fs.dispatch``: registrations (team, region) and shifts; ``fs.gps``: the fixes, into each
  technician's :class:`~projections.tracks.Track`; ``fs.eta`` and ``fs.alerts``.

The state is a function of the *set* of records read, not of how they were batched or
interleaved across partitions: events are keyed by id (repeats are no-ops) and every derived
figure is recomputed from the state. The one exception is bounded by the allowed lateness: a
GPS fix waits at most ``lateness_ms`` for a shift that covers it (see projections/tracks.py).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from events import kinds as k
from events.base import Event
from events.codec import Rejection, decode_trusted
from projections.etas import time_ms
from projections.kpis import (
    DAY_MS,
    Contribution,
    GroupKey,
    compute,
    day_start,
)
from projections.model import (
    TERMINAL,
    AlertPoint,
    Input,
    Order,
    Technician,
    Visit,
    input_doc,
    input_from,
    order_doc,
    order_from,
    technician_doc,
    technician_from,
    track_doc,
    track_into,
)
from projections.pings import Pings, event_id
from projections.state import HOUR_MS, Cause, Subject
from projections.tracks import Fix, FixArrays, Track, append_batch, fix_arrays
from projections.views import Views

JOINED = frozenset(
    {
        "WorkOrderBooked",
        "CustomerContacted",
        "CustomerRated",
        "InvoiceIssued",
        "InvoiceDisputed",
        "PartUsed",
    }
)
"""Inputs whose payload a KPI needs; they count once accepted (see the module docstring)."""
INPUT_TOPICS = ("fs.dispatch", "fs.bookings", "fs.feedback", "fs.parts")
TOPICS = (*INPUT_TOPICS, "fs.workorders", "fs.eta", "fs.alerts", "fs.gps")
"""What the projection reads. Technician events come before pings within a batch, so a fix
usually finds its shift already known."""


Settled = tuple[str, Track, list[Fix], list[Fix], int | None, bytes]
"""A technician's settled track: (technician, track, fixes appended, fixes merged, the time
from which fixes were removed or None, the appended or merged fixes packed for the store: empty
when fixes were removed, as the whole track is stored again then)."""


class RecordLike(Protocol):
    """What the fold needs of a log record (``streams.log.Record`` has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...


@dataclass(slots=True)
class Changes:
    """Every row one batch changed (what the store writes with the offsets)."""

    docs: list[tuple[str, str, bytes]] = field(default_factory=list)
    """(kind, id, JSON document) of each entity to upsert."""
    docs_deleted: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[tuple[str, int, int, bytes, bytes]] = field(default_factory=list)
    """(technician, chunk number, newest fix time, packed fixes, track state) to insert."""
    eta_chunks: list[tuple[int, bytes]] = field(default_factory=list)
    """(chunk number, the batch's new ETA points) to insert."""
    eta_reset: bool = False
    """Delete every ETA chunk first (the chunks were compacted into one)."""
    chunk_prunes: list[tuple[str, int]] = field(default_factory=list)
    """(technician, time): delete the chunks whose fixes are all older (a pruned track)."""
    chunk_resets: list[str] = field(default_factory=list)
    """Technicians whose chunks are all deleted first (a purge or prune rewrote the track)."""
    kpi: list[tuple[str, str, str, str, float | None]] = field(default_factory=list)
    kpi_deleted: list[GroupKey] = field(default_factory=list)
    facts: list[tuple[Any, ...]] = field(default_factory=list)
    live_technicians: list[tuple[Any, ...]] = field(default_factory=list)
    live_work_orders: list[tuple[Any, ...]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return (
            len(self.docs)
            + len(self.chunks)
            + len(self.kpi)
            + len(self.facts)
            + len(self.live_technicians)
            + len(self.live_work_orders)
        )


def pack_fixes(points: Sequence[tuple[Any, ...]]) -> bytes:
    """Fixes (time, lat, lon, ...) as bytes for the store (orjson: compact, exact round trip
    of floats)."""
    return orjson.dumps(points)


def unpack_fixes(blob: bytes) -> list[Fix]:
    return [(int(p[0]), float(p[1]), float(p[2]), p[3], p[4]) for p in orjson.loads(blob)]


@dataclass(slots=True)
class Snapshot:
    """The fields of a ``WorkOrderStateChanged`` the fold reads (decoded on a fast path)."""

    id: str
    time: int
    cause: str
    work_order_id: str
    status: str
    trigger: str
    technician_id: str | None
    visit: int
    customer_id: str
    region: str
    job_type: str
    priority: str
    window_start: int
    window_end: int
    queue_position: int | None
    assigned_at: int | None
    en_route_at: int | None
    arrived_at: int | None
    arrived_by: str | None
    started_at: int | None
    completed_at: int | None
    departed_at: int | None
    fixed: bool | None

    @classmethod
    def of(cls, e: k.WorkOrderStateChanged) -> Snapshot:
        return cls(
            e.id, e.time, e.causation.id, e.work_order_id, e.status, e.trigger,
            e.technician_id, e.visit, e.customer_id, e.region, e.job_type, e.priority,
            e.window_start, e.window_end, e.queue_position, e.assigned_at, e.en_route_at,
            e.arrived_at, e.arrived_by, e.started_at, e.completed_at, e.departed_at, e.fixed,
        )  # fmt: skip

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> Snapshot:
        """From the CloudEvents document the work-order stage wrote (KeyError, TypeError or
        ValueError if it is not one)."""
        if doc["type"] != "WorkOrderStateChanged":
            raise ValueError(doc["type"])
        d = doc["data"]

        def at(name: str) -> int | None:
            value = d.get(name)
            return None if value is None else time_ms(value)

        return cls(
            str(doc["id"]), time_ms(doc["time"]), str(doc["causationid"]),
            d["work_order_id"], d["status"], d["trigger"], d["technician_id"], int(d["visit"]),
            d["customer_id"], d["region"], d["job_type"], d["priority"],
            time_ms(d["window_start"]), time_ms(d["window_end"]), d.get("queue_position"),
            at("assigned_at"), at("en_route_at"), at("arrived_at"), d.get("arrived_by"),
            at("started_at"), at("completed_at"), at("departed_at"), d.get("fixed"),
        )  # fmt: skip


class Projection(Views):
    """The fold (see the module docstring)."""

    # -- reading records ------------------------------------------------------------------------

    def apply(self, topic: str, records: Sequence[RecordLike]) -> None:
        """Fold one partition's records (in offset order) of ``topic``."""
        if not records:
            return
        if topic == "fs.gps":
            first = records[0]
            self.apply_pings(
                Pings.parse(
                    topic,
                    first.partition,
                    np.array([r.offset for r in records], dtype=np.int64),
                    np.array([r.timestamp_ms for r in records], dtype=np.int64),
                    [r.key for r in records],
                    [r.value for r in records],
                )
            )
            return
        if topic == "fs.eta":
            self._etas(records)
            return
        if topic == "fs.workorders":
            self._snapshots(records)
            return
        handler = self._HANDLERS.get(topic)
        if handler is None:
            return
        for record in records:
            event = decode_trusted(record.value)
            if isinstance(event, Rejection):
                self._count("unreadable")
                continue
            handler(self, event)
        self._see(records)
        self._count(f"records.{topic}", len(records))

    def _see(self, records: Sequence[RecordLike]) -> None:
        first = records[0]
        self._seen(
            first.topic,
            first.partition,
            [r.timestamp_ms for r in records],
            lambda i: (records[i].offset, event_id(records[i].value)),
        )

    def _seen(
        self,
        topic: str,
        partition: int,
        times: list[int],
        record: Callable[[int], tuple[int, str]],
    ) -> None:
        """Note, from one partition's records (their times, and ``record(i)``: the offset and
        event id of the i-th), the newest event read (the cause of on-demand snapshots) and, per
        day, the last event read before the day's close (the cause of its day-close
        snapshots: the same whatever the batching)."""
        lateness, offset = self.settings.lateness_ms, self.settings.day_offset_ms
        best: dict[int, int] = {}
        newest = max(times)
        bucket = (newest - lateness + offset) // DAY_MS
        if (min(times) - lateness + offset) // DAY_MS == bucket:
            best[bucket] = times.index(newest)  # the usual case: a batch in one day
        else:
            for i, t in enumerate(times):
                bucket = (t - lateness + offset) // DAY_MS
                current = best.get(bucket)
                if current is None or t > times[current]:
                    best[bucket] = i
        for bucket, i in best.items():
            t = times[i]
            at, eid = record(i)
            key = (t, topic, partition, at)
            old = self.close_causes.get(bucket)
            if old is None or key > (old.time, old.topic, old.partition, old.offset):
                self.close_causes[bucket] = Cause(eid, topic, partition, at, t)
            if t > self.watermark:
                self.watermark = t
                self.cause = Cause(eid, topic, partition, at, t)

    def apply_pings(self, pings: Pings) -> None:
        """Fold one partition's GPS pings, parsed (see :class:`~projections.pings.Pings`).
        The hot path (most records are pings). A ping's key is its technician and its record
        time its event time (ingest guarantees both); the fixes are grouped by technician,
        keeping each one's partition order, and offered to its track in one call."""
        if not len(pings):
            return
        by_key: dict[bytes, list[Fix]] = {}
        fixes = pings.fixes()
        readable = pings.readable
        bad = 0
        if readable.all():
            for key, fix in zip(pings.keys, fixes, strict=True):
                group = by_key.get(key)  # type: ignore[arg-type]
                if group is None:
                    by_key[key] = [fix]  # type: ignore[index]
                else:
                    group.append(fix)
        else:
            for key, fix, ok in zip(pings.keys, fixes, readable.tolist(), strict=True):
                if not ok:
                    bad += 1
                    continue
                group = by_key.get(key)  # type: ignore[arg-type]
                if group is None:
                    by_key[key] = [fix]  # type: ignore[index]
                else:
                    group.append(fix)
        lateness = self.settings.lateness_ms
        tracks = self.tracks
        pinged = self._pinged
        late = 0
        for key, group in by_key.items():
            tid = key.decode()
            track = tracks.get(tid)
            if track is None:
                track = tracks[tid] = Track()
            refused = track.offer_all(group, lateness)
            late += refused
            if refused < len(group):
                pinged.add(tid)
        offsets = pings.offsets
        times = pings.timestamps.tolist()
        self._seen(
            pings.topic, pings.partition, times, lambda i: (int(offsets[i]), pings.event_id(i))
        )
        self._count("pings", len(times) - late - bad)
        if late:
            self._count("pings_too_late", late)
        if bad:
            self._count("unreadable", bad)

    # -- technicians ------------------------------------------------------------------------

    def _on_dispatch(self, event: Event) -> None:
        if isinstance(event, k.TechnicianRegistered):
            tech = self._tech(event.technician_id)
            stamp = (event.time, event.id)
            if tech.registered is None or stamp > tech.registered:
                tech.registered = stamp
                if (tech.team, tech.region) != (event.team, event.region):
                    self._registered.add(tech.id)  # their groups change: recompute them all
                tech.name, tech.team, tech.region = event.name, event.team, event.region
                self._tech_docs.add(tech.id)
                self._techs.add(tech.id)
        elif isinstance(event, k.ShiftStarted):
            tech = self._tech(event.technician_id)
            if event.id not in tech.starts:
                tech.starts[event.id] = (event.time, dict(event.van_stock))
                self._shift_changed(tech.id, event.time)
        elif isinstance(event, k.ShiftEnded):
            tech = self._tech(event.technician_id)
            if event.id not in tech.ends:
                tech.ends[event.id] = event.time
                self._shift_changed(tech.id, event.time)

    def _shift_changed(self, tid: str, at: int) -> None:
        self.techs[tid].shifts_changed()
        self._shifts_from[tid] = min(at, self._shifts_from.get(tid, at))
        self._tech_docs.add(tid)
        self._techs.add(tid)

    # -- inputs joined with their acceptance ----------------------------------------------------

    def _input(self, event: Event, work_order_id: str, data: dict[str, Any]) -> None:
        item = self.inputs.get(event.id)
        if item is None:
            item = self.inputs[event.id] = Input(event.id, event.type, work_order_id)
        if item.data is None:
            item.data = data
            item.time = event.time
            self._inputs.add(item.id)

    def _on_booking(self, event: Event) -> None:
        if isinstance(event, k.WorkOrderBooked):
            self._input(
                event,
                event.work_order_id,
                {
                    "customer_id": event.customer_id,
                    "value": event.value,
                    "maintenance": event.maintenance,
                    "first_contact_time": event.first_contact_time,
                    "parts_kit": dict(event.parts_kit),
                },
            )
        elif isinstance(event, k.CustomerContacted):
            self._input(event, event.work_order_id, {"reason": event.reason})

    def _on_feedback(self, event: Event) -> None:
        if isinstance(event, k.CustomerRated):
            self._input(event, event.work_order_id, {"score": event.score})
        elif isinstance(event, k.InvoiceIssued):
            self._input(
                event, event.work_order_id, {"invoice_id": event.invoice_id, "amount": event.amount}
            )
        elif isinstance(event, k.InvoiceDisputed):
            self._input(event, event.work_order_id, {"invoice_id": event.invoice_id})

    def _on_parts(self, event: Event) -> None:
        if isinstance(event, k.PartUsed):
            self._input(
                event,
                event.work_order_id,
                {"technician": event.technician_id, "part": event.part, "qty": event.quantity},
            )

    def _accept(self, s: Snapshot) -> None:
        item = self.inputs.get(s.cause)
        if item is None:
            item = self.inputs[s.cause] = Input(s.cause, s.trigger, s.work_order_id)
        if not item.accepted:
            item.accepted = True
            item.visit = s.visit
            item.technician = s.technician_id
            if item.data is None:
                item.time = s.time
            self._inputs.add(item.id)

    # -- work orders --------------------------------------------------------------------------

    def _snapshots(self, records: Sequence[RecordLike]) -> None:
        """Snapshots are read on a fast path (the pipeline wrote them; anything unexpected
        takes the full decoder)."""
        loads = orjson.loads
        for record in records:
            try:
                snap = Snapshot.parse(loads(record.value))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                event = decode_trusted(record.value)
                if not isinstance(event, k.WorkOrderStateChanged):
                    self._count("unreadable")
                    continue
                snap = Snapshot.of(event)
            self._on_snapshot(snap)
        self._see(records)
        self._count("records.fs.workorders", len(records))

    def _on_snapshot(self, s: Snapshot) -> None:
        order = self.orders.get(s.work_order_id)
        if order is None:
            order = self.orders[s.work_order_id] = Order(s.work_order_id)
        if s.id in order.seen:
            self._count("repeated")
            return
        order.seen.add(s.id)
        order.customer_id = s.customer_id
        order.region = s.region
        order.job_type = s.job_type
        order.priority = s.priority
        order.status = s.status
        order.window_start, order.window_end = s.window_start, s.window_end
        order.queue_position = s.queue_position
        order.updated_at = max(order.updated_at, s.time)
        previous = order.technician
        order.technician = s.technician_id if s.status not in TERMINAL else None
        if s.status in ("completed_not_fixed",):
            order.technician = None
        self._assignment(order.id, previous, order.technician)
        trigger = s.trigger
        if trigger == "WorkOrderBooked" and order.booked_at is None:
            order.booked_at = s.time
        elif trigger == "WorkOrderRescheduled":
            order.reschedules += 1
        elif trigger == "WorkOrderCancelled":
            order.cancelled_at = s.time
        if s.visit >= 1:
            self._fold_visit(order, order.visit(s.visit), s)
            self._visits_touched.add((order.id, s.visit))
        if trigger in JOINED:
            self._accept(s)
        self._orders.add(order.id)

    def _index_arrival(
        self,
        key: tuple[str, int],
        was: tuple[str | None, int | None],
        now: tuple[str | None, int | None],
    ) -> None:
        """Keep :attr:`arrivals_by_tech` as the visits' technicians and arrivals stand: the
        visit ``key`` moves from ``was`` to ``now`` (technician, arrival time)."""
        tid, at = was
        if tid is not None and at is not None:
            entries = self.arrivals_by_tech.get(tid, [])
            i = bisect_left(entries, (at, *key))
            if i < len(entries) and entries[i] == (at, *key):
                del entries[i]
        tid, at = now
        if tid is not None and at is not None:
            insort(self.arrivals_by_tech.setdefault(tid, []), (at, *key))

    def _fold_visit(self, order: Order, v: Visit, s: Snapshot) -> None:
        was = (v.technician, v.arrived_at)
        if s.technician_id is not None and s.technician_id != v.technician:
            key = (order.id, v.number)
            old = self._visit_tech.get(key)
            if old is not None:
                self.visits_by_tech.get(old, set()).discard(key)
            self.visits_by_tech.setdefault(s.technician_id, set()).add(key)
            self._visit_tech[key] = s.technician_id
            v.technician = s.technician_id
        v.assigned_at = s.assigned_at
        v.en_route_at = s.en_route_at
        v.arrived_at = s.arrived_at
        if (v.technician, v.arrived_at) != was:
            self._index_arrival((order.id, v.number), was, (v.technician, v.arrived_at))
        v.arrived_by = s.arrived_by
        v.started_at = s.started_at
        v.completed_at = s.completed_at
        v.departed_at = s.departed_at
        v.fixed = s.fixed
        if not v.window_frozen:
            v.window_start, v.window_end = s.window_start, s.window_end
            if s.arrived_at is not None:
                v.window_frozen = True
        trigger = s.trigger
        if trigger == "WorkPaused":
            v.paused_since = s.time
        elif trigger in ("WorkResumed", "WorkCompleted") and v.paused_since is not None:
            v.paused_ms += max(0, s.time - v.paused_since)
            v.paused_since = None
        elif trigger == "PartMissing":
            v.part_missing = True

    def _assignment(self, order_id: str, before: str | None, after: str | None) -> None:
        if before == after:
            return
        if before is not None:
            self.orders_by_tech.get(before, set()).discard(order_id)
            self._techs.add(before)
        if after is not None:
            self.orders_by_tech.setdefault(after, set()).add(order_id)
            self._techs.add(after)

    # -- ETAs and alerts ------------------------------------------------------------------------

    def _etas(self, records: Sequence[RecordLike]) -> None:
        """ETAs are most of what is not a ping: read on a fast path (the pipeline wrote them;
        anything unexpected takes the full decoder)."""
        loads = orjson.loads
        add = self.etas.add
        new = self._eta_new
        touched = self._eta_wo
        for record in records:
            try:
                doc = loads(record.value)
                data = doc["data"]
                eta_id = doc["id"]
                wo = data["work_order_id"]
                tid = data["technician_id"]
                # the record's timestamp is the event's time (the stage stamps it so)
                point = (record.timestamp_ms, eta_id, data["p10"], data["p50"], data["p90"])
                if doc["type"] != "EtaUpdated":
                    raise ValueError(doc["type"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                if isinstance(decode_trusted(record.value), Rejection):
                    self._count("unreadable")
                continue
            if add(wo, tid, point):
                new.append((wo, tid, point))
                touched.add(wo)
        self._see(records)
        self._count("records.fs.eta", len(records))

    def _on_alert(self, event: Event) -> None:
        point: AlertPoint
        if isinstance(event, k.LateAlertRaised):
            point = (
                event.time,
                True,
                event.technician_id,
                event.window_end,
                event.probability_late,
                event.message,
            )
        elif isinstance(event, k.LateAlertCleared):
            point = (event.time, False, event.technician_id, 0, event.probability_late, "")
        else:
            return
        points = self.alerts.setdefault(event.work_order_id, {})
        if event.id not in points:
            points[event.id] = point
            self._alert_wo.add(event.work_order_id)

    _HANDLERS: dict[str, Any] = {
        "fs.dispatch": _on_dispatch,
        "fs.bookings": _on_booking,
        "fs.feedback": _on_feedback,
        "fs.parts": _on_parts,
        "fs.alerts": _on_alert,
    }

    # -- the end of a batch -------------------------------------------------------------------

    def flush(self) -> Changes:
        """Settle the batch: tracks, subjects, KPI rows, facts, live rows, documents."""
        out = Changes()
        subjects: set[Subject] = set()
        techdays: set[tuple[str, str]] = set()
        km_days: set[tuple[str, str]] = set()
        refresh = self._refresh
        self._refresh = False
        settled = self._settle_tracks(out, subjects, techdays, km_days)
        orders = set(self._orders)
        inputs = set(self._inputs)
        techs = set(self._techs) | self._pinged
        full: set[str] = set()
        if refresh:
            full |= set(self.orders)
            inputs |= set(self.inputs)
            techs |= set(self.techs)
            for tid, tech in self.techs.items():
                for start, _ in tech.shifts():
                    techdays.add((tid, self.day(start)))
        for wo in orders:
            subjects.add(("order", wo))
        for wo, n in self._visits_touched:
            subjects.add(("visit", wo, str(n)))
        self._expand(subjects, techdays, full, inputs)
        orders |= full
        horizon = self.settings.eta_horizon_ms
        for wo, tid, point in self._eta_new:  # a new ETA may change an arrived visit's
            order = self.orders.get(wo)
            for v in order.visits if order is not None else ():
                if (
                    v.arrived_at is not None
                    and v.technician == tid
                    and point[0] <= v.arrived_at - horizon
                ):
                    subjects.add(("visit", wo, str(v.number)))
        for wo in self._alert_wo:
            order = self.orders.get(wo)
            for v in order.visits if order is not None else ():
                if v.arrived_at is not None:
                    subjects.add(("visit", wo, str(v.number)))
        orders |= self._eta_wo | self._alert_wo
        for subject in sorted(subjects):
            self._update_subject(subject, techdays, out)
        for key in sorted(techdays | km_days):
            tid, day = key
            whole = key in techdays
            if not whole and key in self._td_mm and self._td_mm[key] == self._shift_mm(tid, day):
                continue  # the fixes did not move the odometer (a van parked on site)
            self.book.update(("techday", tid, day), self._techday(tid, day, whole))
        self._persist_tracks(out, settled)
        self._prune_etas(orders)
        self._eta_chunk(out)
        self._kpi_rows(out)
        self._live_rows(out, techs, orders)
        self._docs(out)
        out.counts = self._counts
        self._counts = {}
        self._orders, self._techs, self._registered, self._inputs = set(), set(), set(), set()
        self._eta_wo, self._alert_wo, self._pinged = set(), set(), set()
        self._tech_docs, self._eta_new, self._visits_touched = set(), [], set()
        self._order_docs = set()
        self._shifts_from = {}
        return out

    def _prune_etas(self, orders: set[str]) -> None:
        """Once a work order is done, only the ETAs its visits were judged by are kept (no
        other can matter any more: the live view shows ETAs before arrival only)."""
        horizon = self.settings.eta_horizon_ms
        for wo in sorted(orders):
            order = self.orders.get(wo)
            if order is None or order.status not in TERMINAL or wo not in self.etas.by_order:
                continue
            keep: set[tuple[str, str]] = set()
            for v in order.visits:
                if v.arrived_at is not None and v.technician is not None:
                    point = self.etas.in_force(
                        wo, v.technician, v.assigned_at, v.arrived_at - horizon
                    )
                    if point is not None:
                        keep.add((v.technician, point[1]))
            self.etas.prune(wo, keep)

    ETA_CHUNKS_MAX = 64
    ETA_SLACK = 5_000

    def _eta_chunk(self, out: Changes) -> None:
        """The batch's new ETA points, as one chunk. The chunks are compacted into one
        holding just the points kept once there are :data:`ETA_CHUNKS_MAX` of them, or once
        they hold more than twice the points kept plus :data:`ETA_SLACK` (points of done
        work orders are pruned as they finish, so what a restart loads stays in proportion
        to what it keeps, and the compactions' writes to the points added)."""
        if not self._eta_new:
            return
        stored = self.eta_stored + len(self._eta_new)
        kept = self.etas.count
        if self.eta_chunks >= self.ETA_CHUNKS_MAX or stored > 2 * kept + self.ETA_SLACK:
            out.eta_reset = True
            out.eta_chunks.append((0, orjson.dumps(self.etas.rows())))
            self.eta_chunks = 1
            self.eta_stored = kept
            return
        out.eta_chunks.append((self.eta_chunks, orjson.dumps(self._eta_new)))
        self.eta_chunks += 1
        self.eta_stored = stored

    def _settle_tracks(
        self,
        out: Changes,
        subjects: set[Subject],
        techdays: set[tuple[str, str]],
        km_days: set[tuple[str, str]],
    ) -> list[Settled]:
        """Fold the batch's fixes into the tracks and mark what they change: the legs and the
        technician-days whose distance covers the new fixes. Returns what
        :meth:`_persist_tracks` then writes."""
        lateness = self.settings.lateness_ms
        settled: list[Settled] = []
        appends: list[tuple[Track, FixArrays]] = []
        for tid in sorted(self._pinged | set(self._shifts_from)):
            track = self.tracks.get(tid)
            if track is None:
                track = self.tracks[tid] = Track()
            fresh, merged, removed = track.settle(
                self._tech(tid).shifts(), lateness, self._shifts_from.get(tid)
            )
            # converted and packed at once, while the fixes just sorted are in the CPU's
            # caches (see tracks.fix_arrays)
            if fresh:
                appends.append((track, fix_arrays(fresh)))
            packed = pack_fixes(fresh or merged) if removed is None else b""
            settled.append((tid, track, fresh, merged, removed, packed))
        append_batch(appends)
        for tid, _track, fresh, merged, removed, _packed in settled:
            tech = self.techs[tid]
            self._techs.add(tid)
            self._pinged.add(tid)
            lo = hi = None
            if fresh or merged:
                lo, hi = (fresh or merged)[0][0], (fresh or merged)[-1][0]
            if removed is not None:
                lo = removed if lo is None else min(lo, removed)
                hi = 2**62
            shifted = tid in self._shifts_from
            if shifted:
                since = self._shifts_from[tid]
                lo = since if lo is None else min(lo, since)
                hi = 2**62
            if lo is None or hi is None:
                continue
            for start, _end in tech.shifts_reaching(lo, hi):
                (techdays if shifted else km_days).add((tid, self.day(start)))
            arrivals = self.arrivals_by_tech.get(tid, [])
            # the legs that may end after the new fixes: the visits arrived at lo or later
            # (usually none: the slice is empty)
            for _, wo, n in arrivals[bisect_left(arrivals, (lo,)) :]:
                en = self.orders[wo].visits[n - 1].en_route_at
                if en is None or en < hi:
                    subjects.add(("visit", wo, str(n)))
                    if n == 1 and shifted:
                        # the van's stock at the arrival is known from shifts (the shift
                        # starting last before it, unless it ended before it): only arrivals
                        # at or after the earliest changed start or end can see it change
                        subjects.add(("order", wo))
        return settled

    def _persist_tracks(self, out: Changes, settled: Sequence[Settled]) -> None:
        """Prune the tracks that reach back further than they must be kept, and write each
        settled track's chunk. Done after the batch's subjects were computed: they read the
        fixes (legs, shifts' distances) before those are pruned, however many days the
        batch spans, as a smaller batch would have."""
        for tid, track, fresh, merged, removed, packed in settled:
            tech = self.techs[tid]
            cutoff = track.newest - self.settings.retain_track_ms
            pruned = track.start is not None and track.start < cutoff - HOUR_MS
            if pruned:
                days = {self.day(s) for s, _ in tech.shifts() if s < cutoff}
                for day in days:  # final by now: keep what the fixes said
                    if day not in tech.km_cache:
                        tech.km_cache[day] = sum(
                            track.shift_mm(s, e) for s, e in tech.shifts() if self.day(s) == day
                        )
                track.prune_before(cutoff)
                tech.track_pruned = True
                tech.track_cut = cutoff
                out.chunk_prunes.append((tid, cutoff))  # chunks holding only older fixes
            tech.track_newest = track.newest
            tech.track_quarantine = list(track.quarantine)
            if removed is not None:
                out.chunk_resets.append(tid)
                tech.next_chunk = 0
                points = track.points()
                self._chunk(out, tech, points, pack_fixes(points))
            else:  # (never both fresh and merged: a batch's fixes are merged or appended)
                self._chunk(out, tech, fresh or merged, packed)

    def _chunk(self, out: Changes, tech: Technician, fixes: Sequence[Fix], packed: bytes) -> None:
        """A chunk of the technician's fixes (``packed``: :func:`pack_fixes` of them) and,
        with it, the track's state after the batch (a restart reads the state of the last
        chunk)."""
        number = tech.next_chunk
        tech.next_chunk += 1  # before the state is taken: a restart continues after this one
        state = orjson.dumps(track_doc(tech))
        newest = fixes[-1][0] if fixes else tech.track_newest  # (fixes come sorted by time)
        out.chunks.append((tech.id, number, newest, packed, state))

    def _expand(
        self,
        subjects: set[Subject],
        techdays: set[tuple[str, str]],
        full: set[str],
        inputs: set[str],
    ) -> None:
        """From the inputs the batch completed, and the work orders whose every subject must
        be recomputed (``full``), to the subjects whose contribution may change."""
        for tid in self._registered:
            for wo, _ in self.visits_by_tech.get(tid, ()):
                full.add(wo)
            for item_id in self.inputs_by_tech.get(tid, ()):
                subjects.add(("input", item_id))
            for start, _ in self._tech(tid).shifts():
                techdays.add((tid, self.day(start)))
        for item_id in sorted(inputs):
            item = self.inputs[item_id]
            if not item.complete or item.data is None:
                continue
            wo = item.work_order_id
            self.inputs_by_wo.setdefault(wo, set()).add(item_id)
            subjects.add(("input", item_id))
            kind = item.kind
            if kind == "PartUsed":
                tid = str(item.data["technician"])
                self.inputs_by_tech.setdefault(tid, set()).add(item_id)
                uses = self.part_uses_by_tech.setdefault(tid, [])
                use = (item.time, item_id)
                at = bisect_left(uses, use)
                if at == len(uses) or uses[at] != use:
                    uses.insert(at, use)
                arrivals = self.arrivals_by_tech.get(tid, [])
                for _, other, n in arrivals[bisect_left(arrivals, (item.time + 1,)) :]:
                    if n == 1:  # the van's stock at a later first visit's arrival changed
                        subjects.add(("order", other))
                continue
            if item.technician is not None:
                self.inputs_by_tech.setdefault(item.technician, set()).add(item_id)
            if kind == "WorkOrderBooked":
                # Whether an order is a repeat customer's depends on the customer's first
                # booking only: the orders whose answer may change are this one and the
                # customer's first before and after it is filed.
                bookings = self.customers.setdefault(str(item.data["customer_id"]), [])
                subjects.add(("order", wo))
                if bookings:
                    subjects.add(("order", bookings[0][1]))
                entry = (item.time, wo)
                at = bisect_left(bookings, entry)
                if at == len(bookings) or bookings[at] != entry:
                    bookings.insert(at, entry)
                subjects.add(("order", bookings[0][1]))
            elif kind == "InvoiceDisputed":
                for other in self.inputs_by_wo.get(wo, ()):
                    subjects.add(("input", other))
            elif kind == "CustomerRated":
                order = self.orders.get(wo)
                for v in order.visits if order is not None else ():
                    subjects.add(("visit", wo, str(v.number)))
        for wo in full:
            order = self.orders.get(wo)
            if order is None:
                continue
            subjects.add(("order", wo))
            for v in order.visits:
                subjects.add(("visit", wo, str(v.number)))
            for item_id in self.inputs_by_wo.get(wo, ()):
                subjects.add(("input", item_id))

    def _update_subject(
        self, subject: Subject, techdays: set[tuple[str, str]], out: Changes
    ) -> None:
        kind = subject[0]
        contribution: Contribution | None
        refs: frozenset[tuple[str, str]] = frozenset()
        if kind == "visit":
            wo, n = subject[1], int(subject[2])
            order = self.orders.get(wo)
            if order is None or n > len(order.visits):
                contribution = None
            else:
                contribution, refs = self._visit_subject(order, order.visits[n - 1])
                fact = self._visit_fact(order, order.visits[n - 1])
                if self.written_facts.get((wo, n)) != fact:
                    self.written_facts[(wo, n)] = fact
                    out.facts.append(fact)
        elif kind == "order":
            order = self.orders.get(subject[1])
            contribution = None if order is None else self._order_subject(order)
        else:
            contribution, refs = self._input_subject(self.inputs[subject[1]])
        self.book.update(subject, contribution)
        old = self._refs.get(subject, frozenset())
        if old != refs:
            self._refs[subject] = refs
            for ref in old - refs:
                self._td_subjects.get(ref, set()).discard(subject)
            for ref in refs - old:
                self._td_subjects.setdefault(ref, set()).add(subject)
        techdays |= old | refs

    # -- rows -------------------------------------------------------------------------------------

    def _kpi_rows(self, out: Changes) -> None:
        for key, acc, metrics in self.book.take_dirty():
            if acc is None:
                if self.written_kpi.pop(key, None) is not None:
                    out.kpi_deleted.append(key)
                continue
            written = self.written_kpi.setdefault(key, {})
            for metric in metrics:
                value = compute(metric, acc)
                if metric.name not in written or written[metric.name] != value:
                    written[metric.name] = value
                    out.kpi.append((*key, metric.name, value))

    def _live_rows(self, out: Changes, techs: set[str], orders: set[str]) -> None:
        techs = set(techs)
        for wo in orders:
            order = self.orders.get(wo)
            if order is not None and order.technician:
                techs.add(order.technician)
        for tid in sorted(techs):
            row = self.live_technician(tid)
            if self.written_live_tech.get(tid) != row:
                self.written_live_tech[tid] = row
                out.live_technicians.append(row)
        for wo in sorted(orders):
            if wo not in self.orders:
                continue
            row = self.live_work_order(wo)
            if self.written_live_wo.get(wo) != row:
                self.written_live_wo[wo] = row
                out.live_work_orders.append(row)

    def _docs(self, out: Changes) -> None:
        dumps = orjson.dumps
        for wo in sorted(self._orders | self._order_docs):
            out.docs.append(("order", wo, dumps(order_doc(self.orders[wo]))))
        for tid in sorted(self._tech_docs):
            out.docs.append(("technician", tid, dumps(technician_doc(self.techs[tid]))))
        for item_id in sorted(self._inputs):
            out.docs.append(("input", item_id, dumps(input_doc(self.inputs[item_id]))))
        for wo in sorted(self._alert_wo):
            out.docs.append(("alert", wo, dumps(self.alerts[wo])))

    # -- restore ------------------------------------------------------------------------------

    def restore(
        self,
        docs: Iterable[tuple[str, str, bytes]],
        chunks: Iterable[tuple[str, bytes, bytes]],
        eta_chunks: Iterable[bytes],
        meta: dict[str, Any],
    ) -> None:
        """Rebuild the state from what the store holds. The next :meth:`flush` recomputes
        every contribution and writes only the rows that differ from the stored ones (none,
        after a clean stop), so a restart changes nothing by itself."""
        for kind, key, raw in docs:
            doc = orjson.loads(raw)
            if kind == "order":
                self.orders[key] = order_from(key, doc)
            elif kind == "technician":
                self.techs[key] = technician_from(key, doc)
            elif kind == "input":
                self.inputs[key] = input_from(key, doc)
            elif kind == "alert":
                self.alerts[key] = {i: (p[0], p[1], p[2], p[3], p[4], p[5]) for i, p in doc.items()}
        points: dict[str, list[Fix]] = {}
        states: dict[str, bytes] = {}
        for tid, blob, state in chunks:  # each technician's in chunk order
            points.setdefault(tid, []).extend(unpack_fixes(blob))
            states[tid] = state
        for tid, state in states.items():
            track_into(self._tech(tid), orjson.loads(state))
        for tid, tech in self.techs.items():
            if tid not in points and tech.track_newest == -(2**62):
                continue
            cut = tech.track_cut
            self.tracks[tid] = Track.restore(
                [p for p in points.get(tid, []) if cut is None or p[0] >= cut],
                newest=tech.track_newest,
                quarantine=tech.track_quarantine,
            )
        self.eta_stored = 0
        for blob in eta_chunks:
            chunk = orjson.loads(blob)
            self.eta_stored += len(chunk)
            for wo, tid, (time, eta_id, p10, p50, p90) in chunk:
                self.etas.add(wo, tid, (time, eta_id, p10, p50, p90))
        self._prune_etas(set(self.etas.by_order))
        self.eta_chunks = int(meta.get("eta_chunks", 0))
        self.watermark = int(meta.get("watermark", 0))
        cause = meta.get("cause")
        self.cause = None if cause is None else Cause(*cause)
        self.close_causes = {int(b): Cause(*c) for b, c in meta.get("close_causes", [])}
        self.published = set(meta.get("published", []))
        for wo, order in self.orders.items():
            if order.technician:
                self.orders_by_tech.setdefault(order.technician, set()).add(wo)
            for v in order.visits:
                if v.technician:
                    self.visits_by_tech.setdefault(v.technician, set()).add((wo, v.number))
                    self._visit_tech[(wo, v.number)] = v.technician
                    if v.arrived_at is not None:
                        self.arrivals_by_tech.setdefault(v.technician, []).append(
                            (v.arrived_at, wo, v.number)
                        )
        for arrivals in self.arrivals_by_tech.values():
            arrivals.sort()
        self._refresh = True

    def restore_written(
        self,
        kpi: Iterable[tuple[str, str, str, str, float | None]],
        facts: Iterable[tuple[Any, ...]],
        live_technicians: Iterable[tuple[Any, ...]],
        live_work_orders: Iterable[tuple[Any, ...]],
    ) -> None:
        """What the store holds of the output tables (so a batch writes only what differs)."""
        self.written_kpi = {}
        for day, dim, grp, metric, value in kpi:
            self.written_kpi.setdefault((day, dim, grp), {})[metric] = value
        self.written_facts = {(row[0], int(row[1])): tuple(row) for row in facts}
        self.written_live_tech = {row[0]: tuple(row) for row in live_technicians}
        self.written_live_wo = {row[0]: tuple(row) for row in live_work_orders}

    # -- publishing -----------------------------------------------------------------------------

    def closable_days(self, low_watermark: int) -> list[tuple[str, Cause]]:
        """Days not yet published whose end plus the allowed lateness every input partition
        has read past (``low_watermark``), each with the last event read before that close."""
        out = []
        offset = self.settings.day_offset_ms
        for day in sorted(self.book.days() - self.published):
            close = day_start(day, offset) + DAY_MS + self.settings.lateness_ms
            if low_watermark < close:
                continue
            number = (day_start(day, offset) + offset) // DAY_MS
            causes = [c for b, c in self.close_causes.items() if b <= number]
            if causes:
                out.append(
                    (day, max(causes, key=lambda c: (c.time, c.topic, c.partition, c.offset)))
                )
        return out

    def meta(self) -> dict[str, Any]:
        """What the stage stores with each batch besides rows."""
        cause = self.cause
        return {
            "watermark": self.watermark,
            "eta_chunks": self.eta_chunks,
            "cause": None
            if cause is None
            else [cause.id, cause.topic, cause.partition, cause.offset, cause.time],
            "close_causes": [
                [b, [c.id, c.topic, c.partition, c.offset, c.time]]
                for b, c in sorted(self.close_causes.items())
            ],
            "published": sorted(self.published),
        }
