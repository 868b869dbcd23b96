"""The Technician aggregate: profile, shifts, van stock, queue of jobs, last position.

It lives on the technician-keyed side of the pipeline, where a technician's pings and every
work order assigned to them meet on one partition. Its facts are the technician's own input
events (registered, shift started/ended, parts picked/used) and the work-order snapshots
(``WorkOrderStateChanged``) re-keyed to it, which keep its queue. GPS pings are *not* facts:
they are the bulk of the traffic, so they update ``position`` directly and the stage persists
the latest position per technician once per batch (see :class:`Position`).

Pure functions: :func:`decide`, :func:`evolve`, and the geofence check :func:`geofence`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aggregates.decisions import ACCEPT, Decision, Ignore, Park
from aggregates.facts import Fact
from events import kinds as k
from events.base import Event

ACTIVE = frozenset({"en_route", "arrived", "in_progress", "paused"})
"""Statuses of a job the technician is working on (at most one at a time)."""
QUEUED = frozenset({"assigned"})
DONE = frozenset({"completed_fixed", "completed_not_fixed", "cancelled", "booked"})
"""A snapshot in one of these takes the job off the technician's queue (``booked`` after an
unassignment)."""


@dataclass(slots=True)
class Job:
    """A work order in a technician's queue, as its latest snapshot describes it."""

    work_order_id: str
    visit: int
    status: str
    site_lat: float
    site_lon: float
    window_start: int
    window_end: int
    job_type: str
    queue_position: int | None
    planned_start: int | None
    planned_end: int | None
    assigned_at: int | None
    completed_at: int | None = None
    arrival_detected: bool = False
    departure_detected: bool = False


@dataclass(slots=True)
class Position:
    """The latest in-shift fix of a technician."""

    time: int
    lat: float
    lon: float
    speed_mps: float | None
    heading_deg: float | None


@dataclass(slots=True)
class Technician:
    id: str
    version: int
    name: str = ""
    skills: tuple[str, ...] = ()
    team: str = ""
    region: str = ""
    home_lat: float = 0.0
    home_lon: float = 0.0
    registered: bool = False
    on_shift: bool = False
    shift_started_at: int | None = None
    shift_planned_end: int | None = None
    shift_ended_at: int | None = None
    shifts: list[tuple[int, int | None]] = field(default_factory=list)
    van_stock: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    """Queued and active jobs, by work order id."""
    finished: list[str] = field(default_factory=list)
    """Work orders this technician completed a visit of, in order."""
    leaving: Job | None = None
    """The visit just completed, until the technician is seen (or taps) leaving the site."""
    position: Position | None = None
    event_ids: set[str] = field(default_factory=set)

    @property
    def queue(self) -> list[Job]:
        """Queued jobs in the order they will be done: position, then promised window."""
        queued = [j for j in self.jobs.values() if j.status in QUEUED]
        return sorted(
            queued,
            key=lambda j: (
                j.queue_position if j.queue_position is not None else 1 << 30,
                j.window_start,
                j.work_order_id,
            ),
        )

    @property
    def current(self) -> Job | None:
        """The job being driven to or worked on, if any."""
        active = [j for j in self.jobs.values() if j.status in ACTIVE]
        return min(active, key=lambda j: j.work_order_id) if active else None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TECHNICIAN_FACTS = frozenset(
    {
        "TechnicianRegistered",
        "ShiftStarted",
        "ShiftEnded",
        "PartPicked",
        "PartUsed",
        "WorkOrderStateChanged",
        "TechnicianArrived",
        "TechnicianDeparted",
    }
)
"""Kinds the technician stage folds into a Technician (the last two: its own geofence
detections, recorded so a detection is emitted once)."""


def decide(tech: Technician | None, event: Event) -> Decision:
    """What to do with a technician-keyed input."""
    kind = event.type
    if kind not in TECHNICIAN_FACTS:
        # On the technician's stream for the ETA engine (a part missing on site), but not
        # part of the Technician's own state.
        return Ignore(f"{kind} does not change a technician")
    if tech is not None and event.id in tech.event_ids:
        return Ignore("repeated event id")
    if kind == "TechnicianRegistered":
        return ACCEPT
    if tech is None or not tech.registered:
        return Park("unknown_technician", f"{kind} for an unregistered technician")
    if kind == "ShiftEnded" and not tech.on_shift:
        return Ignore("not on shift")
    return ACCEPT


def evolve(tech: Technician | None, fact: Fact, event: Event | None = None) -> Technician:
    """Fold one fact into the technician (mutates and returns it). ``event``: the input the
    fact records, when the caller has it (see :func:`aggregates.workorder.evolve`)."""
    if event is None:
        event = fact.event()
    if tech is None:
        tech = Technician(id=fact.originator_id, version=0)
    _APPLIERS[fact.kind](tech, event)
    tech.version = fact.originator_version
    tech.event_ids.add(fact.event_id)
    return tech


def _registered(tech: Technician, event: Event) -> None:
    assert isinstance(event, k.TechnicianRegistered)
    tech.name = event.name
    tech.skills = tuple(event.skills)
    tech.team = event.team
    tech.region = event.region
    tech.home_lat = event.home_lat
    tech.home_lon = event.home_lon
    tech.registered = True


def _shift_started(tech: Technician, event: Event) -> None:
    assert isinstance(event, k.ShiftStarted)
    tech.on_shift = True
    tech.shift_started_at = event.time
    tech.shift_planned_end = event.planned_end
    tech.shift_ended_at = None
    tech.van_stock = dict(event.van_stock)
    tech.shifts.append((event.time, None))


def _shift_ended(tech: Technician, event: Event) -> None:
    tech.on_shift = False
    tech.shift_ended_at = event.time
    if tech.shifts:
        tech.shifts[-1] = (tech.shifts[-1][0], event.time)


def _part_picked(tech: Technician, event: Event) -> None:
    """Picking moves a part into the van from the depot: stock grows."""
    assert isinstance(event, k.PartPicked)
    tech.van_stock[event.part] = tech.van_stock.get(event.part, 0) + event.quantity


def _part_used(tech: Technician, event: Event) -> None:
    assert isinstance(event, k.PartUsed)
    tech.van_stock[event.part] = max(0, tech.van_stock.get(event.part, 0) - event.quantity)


def _state_changed(tech: Technician, event: Event) -> None:
    assert isinstance(event, k.WorkOrderStateChanged)
    mine = event.technician_id == tech.id or (
        event.technician_id is None and event.status.startswith("completed")
    )
    if not mine or event.status in DONE:
        job = tech.jobs.pop(event.work_order_id, None)
        if mine and event.status.startswith("completed") and job is not None:
            tech.finished.append(event.work_order_id)
            job.status = event.status
            job.completed_at = event.completed_at
            tech.leaving = job if event.departed_at is None else None
        elif (
            tech.leaving is not None
            and tech.leaving.work_order_id == event.work_order_id
            and event.departed_at is not None
        ):
            tech.leaving = None
        return
    job = tech.jobs.get(event.work_order_id)
    detected = (
        (job.arrival_detected, job.departure_detected)
        if job is not None and job.visit == event.visit
        else (False, False)
    )
    tech.jobs[event.work_order_id] = Job(
        work_order_id=event.work_order_id,
        visit=event.visit,
        status=event.status,
        site_lat=event.site_lat,
        site_lon=event.site_lon,
        window_start=event.window_start,
        window_end=event.window_end,
        job_type=event.job_type,
        queue_position=event.queue_position,
        planned_start=event.planned_start,
        planned_end=event.planned_end,
        assigned_at=event.assigned_at,
        completed_at=event.completed_at,
        arrival_detected=detected[0],
        departure_detected=detected[1],
    )


def _arrival_detected(tech: Technician, event: Event) -> None:
    assert isinstance(event, k.TechnicianArrived)
    job = tech.jobs.get(event.work_order_id)
    if job is not None:
        job.arrival_detected = True


def _departure_detected(tech: Technician, event: Event) -> None:
    assert isinstance(event, k.TechnicianDeparted)
    if tech.leaving is not None and tech.leaving.work_order_id == event.work_order_id:
        tech.leaving = None


_APPLIERS: dict[str, Callable[[Technician, Event], None]] = {
    "TechnicianRegistered": _registered,
    "ShiftStarted": _shift_started,
    "ShiftEnded": _shift_ended,
    "PartPicked": _part_picked,
    "PartUsed": _part_used,
    "WorkOrderStateChanged": _state_changed,
    "TechnicianArrived": _arrival_detected,
    "TechnicianDeparted": _departure_detected,
}


# -- geofence -----------------------------------------------------------------------------

EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


@dataclass(frozen=True, slots=True)
class GeofenceHit:
    """A detection to emit: ``kind`` is ``TechnicianArrived`` or ``TechnicianDeparted``."""

    kind: str
    work_order_id: str
    visit: int


def geofence(
    tech: Technician, at: int, lat: float, lon: float, accuracy_m: float | None, radius_m: float
) -> GeofenceHit | None:
    """Whether an in-shift fix (time ``at``) shows an untapped arrival or departure.

    Arrival: the technician is en route to a job and the fix lies within ``radius_m`` of its
    site. Departure: after a visit completed, the first fix farther than
    ``DEPARTURE_FACTOR * radius_m`` from the site (the margin keeps GPS noise at the kerb from
    flapping in and out). A fix whose own reported accuracy is worse than the radius counts for
    neither. Each is reported once per visit: the caller records the detection as a fact.
    """
    if accuracy_m is not None and accuracy_m > radius_m:
        return None
    for job in tech.jobs.values():
        if (
            job.status == "en_route"
            and not job.arrival_detected
            and distance_m(lat, lon, job.site_lat, job.site_lon) <= radius_m
        ):
            return GeofenceHit("TechnicianArrived", job.work_order_id, job.visit)
    left = tech.leaving
    if (
        left is not None
        and left.completed_at is not None
        and at > left.completed_at
        and distance_m(lat, lon, left.site_lat, left.site_lon) > DEPARTURE_FACTOR * radius_m
    ):
        return GeofenceHit("TechnicianDeparted", left.work_order_id, left.visit)
    return None


DEPARTURE_FACTOR = 2.0
