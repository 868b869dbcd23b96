"""Every event kind of fieldstream: one frozen dataclass each, named in the past tense.

Input events come from technicians' apps, the dispatch UI, importers and the simulator; derived
events are written by the pipeline's stages. Which topic each kind goes to, and with which key,
is stated once, in :mod:`events.catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from events.base import (
    Count,
    DerivedEvent,
    Event,
    Id,
    Latitude,
    Longitude,
    NonNegative,
    OneOf,
    Parts,
    Range,
    Timestamp,
)

Skills = tuple[str, ...]
Priority = Annotated[str, OneOf(("low", "normal", "high", "urgent"))]
Maintenance = Annotated[str, OneOf(("reactive", "preventive"))]
Channel = Annotated[str, OneOf(("phone", "sms", "chat", "email", "web", "app"))]
ContactReason = Annotated[
    str, OneOf(("booking", "where_are_you", "reschedule", "cancel", "complaint", "other"))
]
Party = Annotated[str, OneOf(("customer", "dispatch", "technician", "system"))]
Score = Annotated[int, Range(0, 10)]
Quantity = Annotated[int, Range(1, None)]
Heading = Annotated[float, Range(0.0, 360.0)]
Probability = Annotated[float, Range(0.0, 1.0)]
Money = Annotated[float, Range(0.0, None)]


# -- technicians and shifts (fs.dispatch, keyed by technician) ---------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TechnicianRegistered(Event):
    """A technician joined the workforce (or changed their profile)."""

    KEY_FIELD: ClassVar[str] = "technician_id"

    technician_id: Id
    name: Id
    skills: Skills
    team: Id
    region: Id
    home_lat: Latitude
    home_lon: Longitude


@dataclass(frozen=True, slots=True, kw_only=True)
class ShiftStarted(Event):
    """A technician started a shift with this stock of parts in the van."""

    KEY_FIELD: ClassVar[str] = "technician_id"

    technician_id: Id
    van_stock: Parts
    planned_end: Timestamp


@dataclass(frozen=True, slots=True, kw_only=True)
class ShiftEnded(Event):
    """A technician ended the shift; from now on their position is private."""

    KEY_FIELD: ClassVar[str] = "technician_id"

    technician_id: Id


# -- bookings (fs.bookings) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerContacted(Event):
    """A customer got in touch about a work order ("where are you?" calls included)."""

    work_order_id: Id
    customer_id: Id
    channel: Channel
    reason: ContactReason


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkOrderBooked(Event):
    """A job was booked with a promised arrival window."""

    work_order_id: Id
    customer_id: Id
    site_lat: Latitude
    site_lon: Longitude
    address: str
    region: Id
    job_type: Id
    required_skills: Skills
    parts_kit: Parts
    window_start: Timestamp
    window_end: Timestamp
    priority: Priority
    maintenance: Maintenance
    value: Money
    first_contact_time: Timestamp
    asset_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkOrderRescheduled(Event):
    """The promised window moved."""

    work_order_id: Id
    window_start: Timestamp
    window_end: Timestamp
    requested_by: Party
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkOrderCancelled(Event):
    """The job will not be done."""

    work_order_id: Id
    cancelled_by: Party
    reason: str


# -- dispatch (fs.dispatch) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TechnicianAssigned(Event):
    """A dispatcher (or the dispatch policy) gave the job to a technician."""

    work_order_id: Id
    technician_id: Id
    position: Count | None = None
    """Where the job sits in the technician's queue for the day (0 = next), if known."""
    planned_start: Timestamp | None = None
    """When the dispatcher plans the work to start on site, if it plans slots."""
    planned_end: Timestamp | None = None
    """When the dispatcher plans the work to end; two slots of one technician must not overlap."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TechnicianUnassigned(Event):
    """The job was taken back from a technician."""

    work_order_id: Id
    technician_id: Id
    reason: str


# -- GPS (fs.gps, keyed by technician) ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GpsPinged(Event):
    """A position fix from a technician's device. ``time`` is when it was measured."""

    KEY_FIELD: ClassVar[str] = "technician_id"

    technician_id: Id
    lat: Latitude
    lon: Longitude
    speed_mps: NonNegative | None = None
    heading_deg: Heading | None = None
    accuracy_m: NonNegative | None = None


# -- status (fs.status) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TechnicianEnRoute(Event):
    """The technician set off towards the job's site."""

    work_order_id: Id
    technician_id: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class TechnicianArrived(Event):
    """The technician reached the site (tapped in the app, or detected from GPS)."""

    work_order_id: Id
    technician_id: Id
    detected_by: Annotated[str, OneOf(("app", "geofence"))] = "app"


@dataclass(frozen=True, slots=True, kw_only=True)
class TechnicianDeparted(Event):
    """The technician left the site after the visit (detected from GPS, or tapped)."""

    work_order_id: Id
    technician_id: Id
    detected_by: Annotated[str, OneOf(("app", "geofence"))] = "app"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkStarted(Event):
    """Work began on site."""

    work_order_id: Id
    technician_id: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkPaused(Event):
    """Work stopped for a while (waiting for the customer, a part, a break)."""

    work_order_id: Id
    technician_id: Id
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkResumed(Event):
    """Paused work went on."""

    work_order_id: Id
    technician_id: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkCompleted(Event):
    """The visit ended, with the job fixed or not (``reason`` says why not)."""

    work_order_id: Id
    technician_id: Id
    fixed: bool
    reason: str | None = None
    notes: str = ""


# -- parts (fs.parts) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PartPicked(Event):
    """A part was taken from the van or the depot for this job."""

    work_order_id: Id
    technician_id: Id
    part: Id
    quantity: Quantity


@dataclass(frozen=True, slots=True, kw_only=True)
class PartUsed(Event):
    """A part was fitted on this job (it leaves the van's stock)."""

    work_order_id: Id
    technician_id: Id
    part: Id
    quantity: Quantity


@dataclass(frozen=True, slots=True, kw_only=True)
class PartMissing(Event):
    """A part the job needed was not available on site."""

    work_order_id: Id
    technician_id: Id
    part: Id
    quantity: Quantity


# -- feedback and billing (fs.feedback) -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerRated(Event):
    """The customer answered "how likely are you to recommend us?" (0-10)."""

    work_order_id: Id
    customer_id: Id
    score: Score
    comment: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceIssued(Event):
    """The customer was invoiced for the work order."""

    work_order_id: Id
    customer_id: Id
    invoice_id: Id
    amount: Money
    currency: Annotated[str, OneOf(("EUR", "USD", "GBP", "CHF"))] = "EUR"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceDisputed(Event):
    """The customer disputed an invoice."""

    work_order_id: Id
    invoice_id: Id
    reason: str


# -- derived ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkOrderStateChanged(DerivedEvent):
    """A work order's whole state after an input event changed it.

    fs.workorders is compacted by work order, so the latest of these is the order's current
    state; it carries everything a consumer needs without reading the inputs (the site, the
    window, the current visit's timestamps). ``trigger`` is the type of the input event.
    """

    work_order_id: Id
    status: Annotated[
        str,
        OneOf(
            (
                "booked",
                "assigned",
                "en_route",
                "arrived",
                "in_progress",
                "paused",
                "completed_fixed",
                "completed_not_fixed",
                "cancelled",
            )
        ),
    ]
    previous_status: str | None
    trigger: Id
    technician_id: str | None
    previous_technician_id: str | None
    """Set when the change took the order away from a technician (unassign, reassign)."""
    visit: Count
    """The current visit's number (1 = first; 0 before any assignment)."""
    customer_id: Id
    site_lat: Latitude
    site_lon: Longitude
    region: Id
    job_type: Id
    priority: Priority
    window_start: Timestamp
    window_end: Timestamp
    queue_position: Count | None = None
    planned_start: Timestamp | None = None
    planned_end: Timestamp | None = None
    assigned_at: Timestamp | None = None
    en_route_at: Timestamp | None = None
    arrived_at: Timestamp | None = None
    arrived_by: str | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    departed_at: Timestamp | None = None
    fixed: bool | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignmentConflicted(DerivedEvent):
    """A technician holds two assignments that cannot both be kept (flagged, not refused).

    ``kind``: ``planned_overlap`` (the dispatcher's planned slots intersect) or
    ``concurrent_visits`` (the technician set off to one job while another was still open).
    """

    work_order_id: Id
    technician_id: Id
    conflicting_work_order_id: Id
    kind: Annotated[str, OneOf(("planned_overlap", "concurrent_visits"))]
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EtaUpdated(DerivedEvent):
    """A new arrival window for a work order, as quantiles of the arrival time."""

    work_order_id: Id
    technician_id: Id
    p10: Timestamp
    p50: Timestamp
    p90: Timestamp
    window_start: Timestamp
    window_end: Timestamp
    reason: Id
    model_version: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class LateAlertRaised(DerivedEvent):
    """The arrival is now likely to miss the promised window; tell the customer."""

    work_order_id: Id
    technician_id: Id
    probability_late: Probability
    p10: Timestamp
    p50: Timestamp
    p90: Timestamp
    window_start: Timestamp
    window_end: Timestamp
    lead_time_s: int
    """How long before the promised window ends this alert was raised."""
    message: str
    suggested_technician_id: str | None = None
    suggested_p50: Timestamp | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LateAlertCleared(DerivedEvent):
    """A raised alert no longer holds (the arrival is back inside the window, or it happened)."""

    work_order_id: Id
    technician_id: Id
    probability_late: Probability
    p50: Timestamp
    reason: Id


@dataclass(frozen=True, slots=True, kw_only=True)
class KpiSnapshot(DerivedEvent):
    """The KPI values of one group (a team, a region, ...) for one day, for analytics."""

    KEY_FIELD: ClassVar[str] = "group_key"

    group_key: Id
    """``day/dimension/group``, the record key: a later snapshot of the same key supersedes."""
    day: Id
    dimension: Annotated[str, OneOf(("all", "technician", "team", "region", "job_type"))]
    group: Id
    metrics: dict[str, float | None]


INPUT_EVENTS: tuple[type[Event], ...] = (
    TechnicianRegistered,
    ShiftStarted,
    ShiftEnded,
    CustomerContacted,
    WorkOrderBooked,
    WorkOrderRescheduled,
    WorkOrderCancelled,
    TechnicianAssigned,
    TechnicianUnassigned,
    GpsPinged,
    TechnicianEnRoute,
    TechnicianArrived,
    TechnicianDeparted,
    WorkStarted,
    WorkPaused,
    WorkResumed,
    WorkCompleted,
    PartPicked,
    PartUsed,
    PartMissing,
    CustomerRated,
    InvoiceIssued,
    InvoiceDisputed,
)
DERIVED_EVENTS: tuple[type[Event], ...] = (
    WorkOrderStateChanged,
    AssignmentConflicted,
    EtaUpdated,
    LateAlertRaised,
    LateAlertCleared,
    KpiSnapshot,
)
ALL_EVENTS: tuple[type[Event], ...] = INPUT_EVENTS + DERIVED_EVENTS
EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in ALL_EVENTS}
