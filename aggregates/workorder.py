"""The WorkOrder aggregate: an explicit state machine over a work order's visits.

Lifecycle (``TRANSITIONS`` is the table; anything else is a decision, not an exception)::

    booked -> assigned -> en_route -> arrived -> in_progress <-> paused
           -> completed_fixed | completed_not_fixed (-> assigned again: a new visit)
    booked | assigned | en_route | completed_not_fixed -> cancelled

Reschedules move the promised window; unassign/reassign change the visit's technician; parts
picked, used and missing are recorded per visit, as are the timestamps KPIs need (assigned,
en route, arrived and how, started, completed, departed). Invoices, disputes, ratings and
customer contacts are recorded on the order.

Two pure functions make the aggregate: :func:`decide` (state, input event, context) ->
:class:`~aggregates.decisions.Decision`, and :func:`evolve` (state, fact) -> state. The stage
persists accepted facts with the eventsourcing library and rebuilds state by folding them, so
a state rebuilt from scratch equals the incremental one field for field.

Out-of-order input is normal: a step that arrives after a later one (an "en route" tap
delivered after the arrival) is *backfilled*: its time is recorded, the status does not move
back. A step whose predecessor has not been seen yet is *parked* until it arrives or the
allowed lateness runs out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aggregates.decisions import ACCEPT, Accept, Decision, Ignore, Park, Reject
from aggregates.facts import BACKFILLED, Fact
from events import kinds as k
from events.base import Event


class Status(StrEnum):
    BOOKED = "booked"
    ASSIGNED = "assigned"
    EN_ROUTE = "en_route"
    ARRIVED = "arrived"
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    COMPLETED_FIXED = "completed_fixed"
    COMPLETED_NOT_FIXED = "completed_not_fixed"
    CANCELLED = "cancelled"


S = Status
COMPLETED = "completed"  # placeholder target: fixed or not fixed, from the event

TRANSITIONS: dict[str, dict[Status, Status | str]] = {
    "TechnicianAssigned": {
        S.BOOKED: S.ASSIGNED,
        S.ASSIGNED: S.ASSIGNED,
        S.COMPLETED_NOT_FIXED: S.ASSIGNED,
    },
    "TechnicianUnassigned": {S.ASSIGNED: S.BOOKED, S.EN_ROUTE: S.BOOKED},
    "TechnicianEnRoute": {S.ASSIGNED: S.EN_ROUTE},
    "TechnicianArrived": {S.ASSIGNED: S.ARRIVED, S.EN_ROUTE: S.ARRIVED},
    "WorkStarted": {S.ARRIVED: S.IN_PROGRESS},
    "WorkPaused": {S.IN_PROGRESS: S.PAUSED},
    "WorkResumed": {S.PAUSED: S.IN_PROGRESS},
    "WorkCompleted": {S.IN_PROGRESS: COMPLETED, S.PAUSED: COMPLETED},
    "WorkOrderCancelled": {
        S.BOOKED: S.CANCELLED,
        S.ASSIGNED: S.CANCELLED,
        S.EN_ROUTE: S.CANCELLED,
        S.COMPLETED_NOT_FIXED: S.CANCELLED,
    },
    "WorkOrderRescheduled": {
        S.BOOKED: S.BOOKED,
        S.ASSIGNED: S.ASSIGNED,
        S.COMPLETED_NOT_FIXED: S.COMPLETED_NOT_FIXED,
    },
}
"""Input type -> {status it may apply in: status it leads to}."""

RANK = {
    S.BOOKED: 0,
    S.ASSIGNED: 1,
    S.EN_ROUTE: 2,
    S.ARRIVED: 3,
    S.IN_PROGRESS: 4,
    S.PAUSED: 4,
    S.COMPLETED_FIXED: 5,
    S.COMPLETED_NOT_FIXED: 5,
    S.CANCELLED: 9,
}
STEP_RANK = {
    "TechnicianEnRoute": 2,
    "TechnicianArrived": 3,
    "WorkStarted": 4,
    "WorkPaused": 4,
    "WorkResumed": 4,
    "WorkCompleted": 5,
}
"""How far along the visit a step leads (used to tell a late step from a missing one)."""
STEP_FIELD = {
    "TechnicianEnRoute": "en_route_at",
    "TechnicianArrived": "arrived_at",
    "WorkStarted": "started_at",
    "WorkCompleted": "completed_at",
}
"""The visit timestamp each step records (a late step is backfilled into it)."""

VISIT_STEPS = frozenset(STEP_RANK) | {"TechnicianDeparted"}
PART_EVENTS = frozenset({"PartPicked", "PartUsed", "PartMissing"})


@dataclass(slots=True)
class Visit:
    """One trip of one technician to the site (a revisit is a new visit)."""

    number: int
    technician_id: str | None
    queue_position: int | None = None
    planned_start: int | None = None
    planned_end: int | None = None
    assigned_at: int | None = None
    en_route_at: int | None = None
    arrived_at: int | None = None
    arrived_by: str | None = None
    started_at: int | None = None
    completed_at: int | None = None
    departed_at: int | None = None
    paused_ms: int = 0
    paused_since: int | None = None
    fixed: bool | None = None
    reason: str | None = None
    technicians: list[str] = field(default_factory=list)
    """Everyone assigned to this visit, in order (reassignments)."""
    parts_picked: dict[str, int] = field(default_factory=dict)
    parts_used: dict[str, int] = field(default_factory=dict)
    parts_missing: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class WorkOrder:
    """A work order's state. ``version`` counts the facts folded into it."""

    id: str
    version: int
    customer_id: str
    site_lat: float
    site_lon: float
    address: str
    region: str
    job_type: str
    required_skills: tuple[str, ...]
    parts_kit: dict[str, int]
    window_start: int
    window_end: int
    original_window: tuple[int, int]
    priority: str
    maintenance: str
    value: float
    first_contact_time: int
    booked_at: int
    asset_id: str | None
    status: Status = S.BOOKED
    visits: list[Visit] = field(default_factory=list)
    reschedules: int = 0
    cancelled_at: int | None = None
    cancelled_by: str | None = None
    contacts: list[tuple[int, str, str]] = field(default_factory=list)
    rating: int | None = None
    rated_at: int | None = None
    invoices: dict[str, float] = field(default_factory=dict)
    invoiced_at: int | None = None
    disputes: list[tuple[int, str, str]] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)

    @property
    def visit(self) -> Visit | None:
        """The latest visit, if any."""
        return self.visits[-1] if self.visits else None

    @property
    def technician_id(self) -> str | None:
        visit = self.visit
        if visit is None or self.status in (S.CANCELLED,):
            return None
        if visit.completed_at is not None:
            return None
        return visit.technician_id

    def as_dict(self) -> dict[str, Any]:
        """Every field, for comparing states and for ``fieldstream show``."""
        return dataclasses.asdict(self)


SkillsOf = Callable[[str], "tuple[str, ...] | None"]
"""The technician registry: a technician's skills, or None if not (yet) registered."""


# -- decide ------------------------------------------------------------------------------


def _technician_of(event: Event) -> str | None:
    value = getattr(event, "technician_id", None)
    return value if isinstance(value, str) else None


def _visit_of(order: WorkOrder, technician: str) -> Visit | None:
    """The latest visit this technician was assigned to."""
    for visit in reversed(order.visits):
        if visit.technician_id == technician or technician in visit.technicians:
            return visit
    return None


def decide(order: WorkOrder | None, event: Event, skills_of: SkillsOf) -> Decision:
    """What to do with ``event`` given the order's current state (``None``: not booked)."""
    kind = event.type
    if order is not None and event.id in order.event_ids:
        return Ignore("repeated event id")
    if kind == "WorkOrderBooked":
        if order is not None:
            return Reject("duplicate_booking", f"{order.id} is already booked")
        assert isinstance(event, k.WorkOrderBooked)
        if event.window_end <= event.window_start:
            return Reject("invalid_window", "field 'data.window_end': must be after window_start")
        return ACCEPT
    if order is None:
        return Park("unknown_work_order", f"{kind} for a work order that was never booked")
    handler = _DECIDERS.get(kind)
    if handler is None:
        return Reject("unsupported", f"{kind} does not apply to a work order")
    return handler(order, event, skills_of)


def _decide_assigned(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    assert isinstance(event, k.TechnicianAssigned)
    status = order.status
    if status is S.CANCELLED:
        return Reject("illegal_transition", f"cannot assign {order.id}: it is cancelled")
    if status is S.COMPLETED_FIXED:
        return Reject("illegal_transition", f"cannot assign {order.id}: it is already fixed")
    current = order.visit.technician_id if order.visit else None
    if status not in TRANSITIONS["TechnicianAssigned"]:
        if current == event.technician_id:
            return Ignore("already assigned to this technician")
        return Reject(
            "illegal_transition",
            f"cannot assign {order.id} to {event.technician_id}: a visit by {current} is {status}",
        )
    skills = skills_of(event.technician_id)
    if skills is None:
        return Park("unknown_technician", f"technician {event.technician_id} is not registered")
    missing = sorted(set(order.required_skills) - set(skills))
    if missing:
        return Reject(
            "missing_skill",
            f"technician {event.technician_id} lacks {', '.join(missing)} "
            f"required by {order.job_type} on {order.id}",
        )
    return ACCEPT


def _decide_unassigned(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    assert isinstance(event, k.TechnicianUnassigned)
    visit = order.visit
    if visit is None or (
        visit.technician_id != event.technician_id and event.technician_id not in visit.technicians
    ):
        return Park("not_assigned", f"{event.technician_id} is not assigned to {order.id}")
    if visit.technician_id != event.technician_id:
        return Ignore("already reassigned to another technician")
    if order.status in (S.BOOKED, S.CANCELLED):
        return Ignore(f"{order.id} is {order.status}: nothing to unassign")
    if order.status not in TRANSITIONS["TechnicianUnassigned"]:
        return Reject(
            "illegal_transition",
            f"cannot unassign {event.technician_id}: the visit is {order.status}",
        )
    return ACCEPT


def _decide_step(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    """En route, arrived, started, paused, resumed, completed, departed."""
    kind = event.type
    technician = _technician_of(event)
    assert technician is not None
    status = order.status
    if status is S.CANCELLED:
        return Reject("illegal_transition", f"{kind}: {order.id} is cancelled")
    visit = order.visit
    if visit is None or visit.technician_id != technician:
        if visit is not None and technician in visit.technicians:
            return Reject(
                "not_assigned",
                f"{kind}: {technician} no longer holds {order.id} ({visit.technician_id} does)",
            )
        if kind == "TechnicianArrived" and status is S.BOOKED and visit is None:
            return Park("illegal_transition", f"arrival at {order.id} before any assignment")
        return Park("not_assigned", f"{kind}: {technician} is not assigned to {order.id}")
    if kind == "TechnicianDeparted":
        if visit.departed_at is not None:
            return Ignore("departure already recorded")
        if visit.completed_at is None:
            return Park("illegal_transition", f"departure from {order.id} before completion")
        return ACCEPT
    allowed = TRANSITIONS[kind]
    if status in allowed:
        return ACCEPT
    step = STEP_RANK[kind]
    here = RANK[status]
    if step <= here:
        field_name = STEP_FIELD.get(kind)
        if field_name is not None and getattr(visit, field_name) is None:
            return Accept(BACKFILLED)
        return Ignore(f"{kind} already recorded for visit {visit.number}")
    if kind == "WorkCompleted":
        message = f"work on {order.id} completed before it started (status {status})"
    elif kind == "WorkStarted":
        message = f"work on {order.id} started before arrival (status {status})"
    else:
        message = f"{kind} on {order.id} while it is {status}"
    return Park("illegal_transition", message)


def _decide_part(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    technician = _technician_of(event)
    assert technician is not None
    if _visit_of(order, technician) is None:
        return Park("not_assigned", f"{event.type}: {technician} has no visit on {order.id}")
    return ACCEPT


def _decide_rescheduled(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    assert isinstance(event, k.WorkOrderRescheduled)
    if event.window_end <= event.window_start:
        return Reject("invalid_window", "field 'data.window_end': must be after window_start")
    if order.status in TRANSITIONS["WorkOrderRescheduled"]:
        return ACCEPT
    return Reject("illegal_transition", f"cannot reschedule {order.id} while it is {order.status}")


def _decide_cancelled(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    if order.status is S.CANCELLED:
        return Ignore("already cancelled")
    if order.status in TRANSITIONS["WorkOrderCancelled"]:
        return ACCEPT
    return Reject("illegal_transition", f"cannot cancel {order.id} while it is {order.status}")


def _decide_contacted(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    return ACCEPT


def _completed_visit(order: WorkOrder) -> bool:
    return any(v.completed_at is not None for v in order.visits)


def _decide_rated(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    if not _completed_visit(order):
        return Park("illegal_transition", f"rating of {order.id} before any visit was completed")
    return ACCEPT


def _decide_invoiced(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    assert isinstance(event, k.InvoiceIssued)
    if event.invoice_id in order.invoices:
        return Ignore(f"invoice {event.invoice_id} already issued")
    if not _completed_visit(order):
        return Park("illegal_transition", f"invoice for {order.id} before any visit was completed")
    return ACCEPT


def _decide_disputed(order: WorkOrder, event: Event, skills_of: SkillsOf) -> Decision:
    assert isinstance(event, k.InvoiceDisputed)
    if event.invoice_id not in order.invoices:
        return Park("unknown_invoice", f"dispute of invoice {event.invoice_id} never issued")
    return ACCEPT


Decider = Callable[[WorkOrder, Event, SkillsOf], Decision]
_DECIDERS: dict[str, Decider] = {
    "TechnicianAssigned": _decide_assigned,
    "TechnicianUnassigned": _decide_unassigned,
    "WorkOrderRescheduled": _decide_rescheduled,
    "WorkOrderCancelled": _decide_cancelled,
    "CustomerContacted": _decide_contacted,
    "CustomerRated": _decide_rated,
    "InvoiceIssued": _decide_invoiced,
    "InvoiceDisputed": _decide_disputed,
    **{kind: _decide_step for kind in VISIT_STEPS},
    **{kind: _decide_part for kind in PART_EVENTS},
}


# -- evolve ------------------------------------------------------------------------------


def evolve(order: WorkOrder | None, fact: Fact, event: Event | None = None) -> WorkOrder:
    """Fold one fact into the state (mutates and returns it; ``None`` only for a booking).

    ``event`` is the input the fact records, when the caller has it at hand (saves decoding
    it again from the fact); it must be that event.
    """
    if event is None:
        event = fact.event()
    if order is None:
        assert isinstance(event, k.WorkOrderBooked), fact.kind
        order = WorkOrder(
            id=event.work_order_id,
            version=0,
            customer_id=event.customer_id,
            site_lat=event.site_lat,
            site_lon=event.site_lon,
            address=event.address,
            region=event.region,
            job_type=event.job_type,
            required_skills=tuple(event.required_skills),
            parts_kit=dict(event.parts_kit),
            window_start=event.window_start,
            window_end=event.window_end,
            original_window=(event.window_start, event.window_end),
            priority=event.priority,
            maintenance=event.maintenance,
            value=event.value,
            first_contact_time=event.first_contact_time,
            booked_at=event.time,
            asset_id=event.asset_id,
        )
    elif fact.effect == BACKFILLED:
        _backfill(order, event)
    else:
        _APPLIERS[fact.kind](order, event)
    order.version = fact.originator_version
    order.event_ids.add(fact.event_id)
    return order


def _backfill(order: WorkOrder, event: Event) -> None:
    technician = _technician_of(event)
    visit = _visit_of(order, technician) if technician else None
    field_name = STEP_FIELD[event.type]
    if visit is not None and getattr(visit, field_name) is None:
        setattr(visit, field_name, event.time)
        if isinstance(event, k.TechnicianArrived):
            visit.arrived_by = event.detected_by


def _apply_assigned(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.TechnicianAssigned)
    visit = order.visit
    if visit is None or visit.completed_at is not None:
        visit = Visit(number=len(order.visits) + 1, technician_id=None)
        order.visits.append(visit)
    visit.technician_id = event.technician_id
    if event.technician_id not in visit.technicians:
        visit.technicians.append(event.technician_id)
    visit.queue_position = event.position
    visit.planned_start = event.planned_start
    visit.planned_end = event.planned_end
    visit.assigned_at = event.time
    visit.en_route_at = None
    order.status = S.ASSIGNED


def _apply_unassigned(order: WorkOrder, event: Event) -> None:
    visit = order.visit
    assert visit is not None
    visit.technician_id = None
    visit.en_route_at = None
    order.status = S.BOOKED


def _step(target: Status, field_name: str | None) -> Callable[[WorkOrder, Event], None]:
    def apply(order: WorkOrder, event: Event) -> None:
        visit = order.visit
        assert visit is not None
        if field_name is not None:
            setattr(visit, field_name, event.time)
        order.status = target

    return apply


def _apply_arrived(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.TechnicianArrived)
    visit = order.visit
    assert visit is not None
    visit.arrived_at = event.time
    visit.arrived_by = event.detected_by
    order.status = S.ARRIVED


def _apply_paused(order: WorkOrder, event: Event) -> None:
    visit = order.visit
    assert visit is not None
    visit.paused_since = event.time
    order.status = S.PAUSED


def _apply_resumed(order: WorkOrder, event: Event) -> None:
    visit = order.visit
    assert visit is not None
    if visit.paused_since is not None:
        visit.paused_ms += max(0, event.time - visit.paused_since)
    visit.paused_since = None
    order.status = S.IN_PROGRESS


def _apply_completed(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.WorkCompleted)
    visit = order.visit
    assert visit is not None
    if visit.paused_since is not None:
        visit.paused_ms += max(0, event.time - visit.paused_since)
        visit.paused_since = None
    visit.completed_at = event.time
    visit.fixed = event.fixed
    visit.reason = event.reason
    order.status = S.COMPLETED_FIXED if event.fixed else S.COMPLETED_NOT_FIXED


def _apply_departed(order: WorkOrder, event: Event) -> None:
    visit = order.visit
    assert visit is not None
    visit.departed_at = event.time


def _apply_part(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.PartPicked | k.PartUsed | k.PartMissing)
    visit = _visit_of(order, event.technician_id)
    assert visit is not None
    parts = {
        "PartPicked": visit.parts_picked,
        "PartUsed": visit.parts_used,
        "PartMissing": visit.parts_missing,
    }[event.type]
    parts[event.part] = parts.get(event.part, 0) + event.quantity


def _apply_rescheduled(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.WorkOrderRescheduled)
    order.window_start = event.window_start
    order.window_end = event.window_end
    order.reschedules += 1


def _apply_cancelled(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.WorkOrderCancelled)
    order.cancelled_at = event.time
    order.cancelled_by = event.cancelled_by
    order.status = S.CANCELLED


def _apply_contacted(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.CustomerContacted)
    order.contacts.append((event.time, event.channel, event.reason))


def _apply_rated(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.CustomerRated)
    order.rating = event.score
    order.rated_at = event.time


def _apply_invoiced(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.InvoiceIssued)
    order.invoices[event.invoice_id] = event.amount
    order.invoiced_at = event.time


def _apply_disputed(order: WorkOrder, event: Event) -> None:
    assert isinstance(event, k.InvoiceDisputed)
    order.disputes.append((event.time, event.invoice_id, event.reason))


_APPLIERS: dict[str, Callable[[WorkOrder, Event], None]] = {
    "TechnicianAssigned": _apply_assigned,
    "TechnicianUnassigned": _apply_unassigned,
    "TechnicianEnRoute": _step(S.EN_ROUTE, "en_route_at"),
    "TechnicianArrived": _apply_arrived,
    "WorkStarted": _step(S.IN_PROGRESS, "started_at"),
    "WorkPaused": _apply_paused,
    "WorkResumed": _apply_resumed,
    "WorkCompleted": _apply_completed,
    "TechnicianDeparted": _apply_departed,
    "WorkOrderRescheduled": _apply_rescheduled,
    "WorkOrderCancelled": _apply_cancelled,
    "CustomerContacted": _apply_contacted,
    "CustomerRated": _apply_rated,
    "InvoiceIssued": _apply_invoiced,
    "InvoiceDisputed": _apply_disputed,
    **{kind: _apply_part for kind in PART_EVENTS},
}


def rebuild(facts: list[Fact]) -> WorkOrder | None:
    """The state that folding ``facts`` in order gives (``None`` for no facts)."""
    order: WorkOrder | None = None
    for fact in facts:
        order = evolve(order, fact)
    return order
