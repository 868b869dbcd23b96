"""The projection's state: work orders and their visits, technicians and their shifts, the
input events whose payload the KPIs need, ETAs and alerts.

Every entity turns into a JSON document and back (:func:`to_doc`, :func:`from_doc`): the store
keeps one row per entity and writes the ones a batch changed, in the batch's transaction.
Folding is in :mod:`projections.fold`; this module holds data only.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"completed_fixed", "cancelled"})
ON_SITE = frozenset({"arrived", "in_progress", "paused"})
PRE_ARRIVAL = frozenset({"booked", "assigned", "en_route"})


@dataclass(slots=True)
class Visit:
    """One trip to the site, as the work-order snapshots describe it."""

    number: int
    technician: str | None = None
    assigned_at: int | None = None
    en_route_at: int | None = None
    arrived_at: int | None = None
    arrived_by: str | None = None
    started_at: int | None = None
    completed_at: int | None = None
    departed_at: int | None = None
    fixed: bool | None = None
    window_start: int = 0
    window_end: int = 0
    window_frozen: bool = False
    """Set once the arrival is known: the window in force at arrival is the one judged."""
    paused_ms: int = 0
    paused_since: int | None = None
    part_missing: bool = False
    leg_mm: int | None = None
    """The GPS distance of the leg, as last computed (kept for legs older than the track)."""

    def work_ms(self) -> int:
        """Hands-on time: start of work to completion, less pauses (0 if not both known)."""
        if self.started_at is None or self.completed_at is None:
            return 0
        return max(0, self.completed_at - self.started_at - self.paused_ms)


@dataclass(slots=True)
class Order:
    """A work order, folded from its ``WorkOrderStateChanged`` snapshots in log order."""

    id: str
    customer_id: str = ""
    region: str = ""
    job_type: str = ""
    priority: str = ""
    status: str = "booked"
    window_start: int = 0
    window_end: int = 0
    technician: str | None = None
    queue_position: int | None = None
    booked_at: int | None = None
    reschedules: int = 0
    cancelled_at: int | None = None
    updated_at: int = 0
    visits: list[Visit] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    """Snapshot ids already folded (a repeated batch of outputs after a crash is a no-op)."""

    def visit(self, number: int) -> Visit:
        while len(self.visits) < number:
            self.visits.append(Visit(len(self.visits) + 1))
        return self.visits[number - 1]


@dataclass(slots=True)
class Technician:
    """A technician: the latest registration, every shift start and end, track bookkeeping."""

    id: str
    name: str = ""
    team: str | None = None
    region: str | None = None
    registered: tuple[int, str] | None = None
    """(time, event id) of the registration in force: the latest."""
    starts: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    """ShiftStarted id -> (time, van stock)."""
    ends: dict[str, int] = field(default_factory=dict)
    """ShiftEnded id -> time."""
    km_cache: dict[str, int] = field(default_factory=dict)
    """day -> mm driven on the shifts that started that day, kept when the track is pruned
    past them (their fixes are forgotten then)."""
    next_chunk: int = 0
    track_newest: int = -(2**62)
    track_quarantine: list[tuple[int, float, float, float | None, float | None]] = field(
        default_factory=list
    )
    track_pruned: bool = False
    track_cut: int | None = None
    """Fixes before this time were pruned (persisted chunks may still hold some)."""
    _shifts: list[tuple[int, int | None]] | None = field(default=None, repr=False, compare=False)
    _starts: list[int] = field(default_factory=list, repr=False, compare=False)
    """The starts of :attr:`_shifts` (for bisection), computed with it."""
    _open: list[tuple[int, int | None]] = field(default_factory=list, repr=False, compare=False)
    """The shifts of :attr:`_shifts` without an end, in order, computed with it."""
    _stocks: list[tuple[int, int, dict[str, int]]] = field(
        default_factory=list, repr=False, compare=False
    )
    """(time, order in :attr:`starts`, van stock) of every start, sorted, computed with it."""

    def shifts_changed(self) -> None:
        self._shifts = None

    def shifts(self) -> list[tuple[int, int | None]]:
        """Shifts as (start, end or None), sorted: each start ends at the first end at or
        after it and before the next start."""
        if self._shifts is not None:
            return self._shifts
        starts = sorted({t for t, _ in self.starts.values()})
        ends = sorted(set(self.ends.values()))
        out: list[tuple[int, int | None]] = []
        j = 0
        for i, start in enumerate(starts):
            nxt = starts[i + 1] if i + 1 < len(starts) else None
            while j < len(ends) and ends[j] < start:
                j += 1
            end = ends[j] if j < len(ends) and (nxt is None or ends[j] < nxt) else None
            out.append((start, end))
        self._shifts = out
        self._starts = starts
        self._open = [shift for shift in out if shift[1] is None]
        self._stocks = sorted((t, i, stock) for i, (t, stock) in enumerate(self.starts.values()))
        return out

    def shifts_started(self, first: int, stop: int) -> list[tuple[int, int | None]]:
        """The shifts started in ``[first, stop)``, in order (a slice, however many shifts
        there are)."""
        shifts = self.shifts()
        starts = self._starts
        return shifts[bisect_left(starts, first) : bisect_left(starts, stop)]

    def shifts_reaching(self, lo: int, hi: int) -> list[tuple[int, int | None]]:
        """The shifts that started at or before ``hi`` and had not ended before ``lo`` (or
        have not ended). A shift ends before the next one starts, so those that ended are
        among the last started at or before ``lo`` and the ones after it; those that have not
        ended are few (normally the one under way)."""
        shifts = self.shifts()
        starts = self._starts
        k = max(0, bisect_right(starts, lo) - 1)
        j = bisect_right(starts, hi)
        early = [(s, e) for s, e in self._open if s < starts[k] and s <= hi] if k else []
        return early + [(s, e) for s, e in shifts[k:j] if e is None or e >= lo]

    def shift_started_by(self, at: int) -> int | None:
        """The start of the latest shift started at or before ``at``, if any."""
        self.shifts()
        i = bisect_right(self._starts, at) - 1
        return self._starts[i] if i >= 0 else None

    def van_stock_at(self, at: int) -> tuple[int, dict[str, int]] | None:
        """(shift start, van stock at the shift's start) of the shift covering ``at``: the
        latest start at or before it (of several at that time, the first recorded), unless
        that shift ended before ``at``."""
        shifts = self.shifts()
        stocks = self._stocks
        i = bisect_right(stocks, (at, len(stocks))) - 1
        if i < 0:
            return None
        start = stocks[i][0]
        best = (start, stocks[bisect_left(stocks, (start,))][2])
        end = shifts[bisect_left(self._starts, start)][1]
        if end is not None and at > end:
            return None
        return best


@dataclass(slots=True)
class Input:
    """An input event whose payload a KPI needs, counted once the work-order stage accepted
    it (a snapshot whose ``causationid`` is its id said so)."""

    id: str
    kind: str
    work_order_id: str
    time: int = 0
    data: dict[str, Any] | None = None
    accepted: bool = False
    visit: int = 0
    technician: str | None = None

    @property
    def complete(self) -> bool:
        return self.accepted and self.data is not None


AlertPoint = tuple[int, bool, str, int, float, str]
"""(time, raised, technician, window end, probability late, message) of one alert event."""


# -- documents --------------------------------------------------------------------------------


def order_doc(order: Order) -> dict[str, Any]:
    return {
        "customer_id": order.customer_id,
        "region": order.region,
        "job_type": order.job_type,
        "priority": order.priority,
        "status": order.status,
        "window": [order.window_start, order.window_end],
        "technician": order.technician,
        "queue_position": order.queue_position,
        "booked_at": order.booked_at,
        "reschedules": order.reschedules,
        "cancelled_at": order.cancelled_at,
        "updated_at": order.updated_at,
        "visits": [
            [
                v.technician,
                v.assigned_at,
                v.en_route_at,
                v.arrived_at,
                v.arrived_by,
                v.started_at,
                v.completed_at,
                v.departed_at,
                v.fixed,
                v.window_start,
                v.window_end,
                v.window_frozen,
                v.paused_ms,
                v.paused_since,
                v.part_missing,
                v.leg_mm,
            ]
            for v in order.visits
        ],
        "seen": sorted(order.seen),
    }


def order_from(key: str, doc: dict[str, Any]) -> Order:
    order = Order(
        id=key,
        customer_id=doc["customer_id"],
        region=doc["region"],
        job_type=doc["job_type"],
        priority=doc["priority"],
        status=doc["status"],
        window_start=doc["window"][0],
        window_end=doc["window"][1],
        technician=doc["technician"],
        queue_position=doc["queue_position"],
        booked_at=doc["booked_at"],
        reschedules=doc["reschedules"],
        cancelled_at=doc["cancelled_at"],
        updated_at=doc["updated_at"],
        seen=set(doc["seen"]),
    )
    for n, row in enumerate(doc["visits"], start=1):
        order.visits.append(Visit(n, *row))
    return order


def technician_doc(tech: Technician) -> dict[str, Any]:
    """Registration and shifts (written when they change)."""
    return {
        "name": tech.name,
        "team": tech.team,
        "region": tech.region,
        "registered": tech.registered,
        "starts": tech.starts,
        "ends": tech.ends,
    }


def track_doc(tech: Technician) -> dict[str, Any]:
    """The GPS track's bookkeeping (written whenever fixes came in)."""
    return {
        "km_cache": tech.km_cache,
        "next_chunk": tech.next_chunk,
        "newest": tech.track_newest,
        "quarantine": tech.track_quarantine,
        "pruned": tech.track_pruned,
        "cut": tech.track_cut,
    }


def _fix(row: list[Any] | None) -> tuple[int, float, float, float | None, float | None] | None:
    return None if row is None else (row[0], row[1], row[2], row[3], row[4])


def technician_from(key: str, doc: dict[str, Any]) -> Technician:
    registered = doc["registered"]
    return Technician(
        id=key,
        name=doc["name"],
        team=doc["team"],
        region=doc["region"],
        registered=None if registered is None else (registered[0], registered[1]),
        starts={k: (v[0], dict(v[1])) for k, v in doc["starts"].items()},
        ends=dict(doc["ends"]),
    )


def track_into(tech: Technician, doc: dict[str, Any]) -> None:
    tech.km_cache = dict(doc["km_cache"])
    tech.next_chunk = doc["next_chunk"]
    tech.track_newest = doc["newest"]
    tech.track_quarantine = [f for f in (_fix(r) for r in doc["quarantine"]) if f is not None]
    tech.track_pruned = doc["pruned"]
    tech.track_cut = doc["cut"]


def input_doc(item: Input) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "wo": item.work_order_id,
        "time": item.time,
        "data": item.data,
        "accepted": item.accepted,
        "visit": item.visit,
        "technician": item.technician,
    }


def input_from(key: str, doc: dict[str, Any]) -> Input:
    return Input(
        id=key,
        kind=doc["kind"],
        work_order_id=doc["wo"],
        time=doc["time"],
        data=doc["data"],
        accepted=doc["accepted"],
        visit=doc["visit"],
        technician=doc["technician"],
    )
