"""The topic catalog: every topic, its key, partitions, retention, and the events it carries.

This is the one place that maps an event type to its topic. Adapters create topics from it,
ingest routes by it, and ``fieldstream schemas`` documents it for downstream consumers.
"""

from __future__ import annotations

from dataclasses import dataclass

from events import kinds as k
from events.base import Event

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic as users see it. ``retention_ms=None`` keeps records forever."""

    name: str
    key: str
    partitions: int
    events: tuple[type[Event], ...]
    description: str
    compacted: bool = False
    retention_ms: int | None = None
    internal: bool = False


BOOKINGS = Topic(
    "fs.bookings",
    "work_order_id",
    6,
    (k.CustomerContacted, k.WorkOrderBooked, k.WorkOrderRescheduled, k.WorkOrderCancelled),
    "Bookings, reschedules, cancellations and customer contacts.",
)
DISPATCH = Topic(
    "fs.dispatch",
    "work_order_id (technician_id for technician and shift events)",
    6,
    (
        k.TechnicianRegistered,
        k.ShiftStarted,
        k.ShiftEnded,
        k.TechnicianAssigned,
        k.TechnicianUnassigned,
    ),
    "The workforce, shifts, and who is assigned to which work order.",
)
STATUS = Topic(
    "fs.status",
    "work_order_id",
    6,
    (
        k.TechnicianEnRoute,
        k.TechnicianArrived,
        k.TechnicianDeparted,
        k.WorkStarted,
        k.WorkPaused,
        k.WorkResumed,
        k.WorkCompleted,
    ),
    "A visit's progress as the technician reports it.",
)
GPS = Topic(
    "fs.gps",
    "technician_id",
    6,
    (k.GpsPinged,),
    "Position fixes from technicians' devices (about 95% of all traffic).",
    retention_ms=30 * DAY_MS,
)
PARTS = Topic(
    "fs.parts",
    "work_order_id",
    6,
    (k.PartPicked, k.PartUsed, k.PartMissing),
    "Parts picked, used on, and missing for a job.",
)
FEEDBACK = Topic(
    "fs.feedback",
    "work_order_id",
    6,
    (k.CustomerRated, k.InvoiceIssued, k.InvoiceDisputed),
    "Ratings, invoices and disputes.",
)
WORKORDERS = Topic(
    "fs.workorders",
    "work_order_id",
    6,
    (k.WorkOrderStateChanged,),
    "Each work order's state after every change (a compacted changelog).",
    compacted=True,
)
ETA = Topic(
    "fs.eta",
    "work_order_id",
    6,
    (k.EtaUpdated,),
    "Arrival windows (P10/P50/P90) for work orders with a technician on the way or queued.",
)
ALERTS = Topic(
    "fs.alerts",
    "work_order_id",
    6,
    (k.LateAlertRaised, k.LateAlertCleared, k.AssignmentConflicted),
    "Late alerts raised and cleared, with the customer-ready message; assignment conflicts.",
)
GEOFENCE = Topic(
    "fs.geofence",
    "work_order_id",
    6,
    (k.TechnicianArrived, k.TechnicianDeparted),
    "Arrivals and departures detected from GPS (detected_by=geofence) where nobody tapped them.",
)
KPI = Topic(
    "fs.kpi",
    "group_key",
    1,
    (k.KpiSnapshot,),
    "Daily KPI snapshots per group, for downstream analytics (compacted by group_key).",
    compacted=True,
)
DLQ = Topic(
    "fs.dlq",
    "the original record's key",
    1,
    (),
    "Rejected input: the original bytes unchanged, with the reason in the record headers "
    "fs.error.rule, fs.error.field, fs.error.message and fs.error.source.",
)

BY_TECHNICIAN = Topic(
    "fs.by-technician",
    "technician_id",
    GPS.partitions,
    (
        k.TechnicianRegistered,
        k.ShiftStarted,
        k.ShiftEnded,
        k.PartPicked,
        k.PartUsed,
        k.WorkOrderStateChanged,
    ),
    "Internal repartition topic: everything about a technician, keyed by technician, "
    "co-partitioned with fs.gps so a technician's pings and jobs meet on one partition.",
    internal=True,
)

INPUT_TOPICS: tuple[Topic, ...] = (BOOKINGS, DISPATCH, STATUS, GPS, PARTS, FEEDBACK)
DERIVED_TOPICS: tuple[Topic, ...] = (WORKORDERS, GEOFENCE, ETA, ALERTS, KPI)
INTERNAL_TOPICS: tuple[Topic, ...] = (BY_TECHNICIAN,)
TOPICS: tuple[Topic, ...] = (*INPUT_TOPICS, *DERIVED_TOPICS, DLQ, *INTERNAL_TOPICS)
TOPICS_BY_NAME: dict[str, Topic] = {t.name: t for t in TOPICS}
TOPIC_OF: dict[str, Topic] = {}
"""Event type name -> the topic it is written to: the first public topic that lists it, so
arrivals and departures reported by apps go to fs.status (fs.geofence is where the pipeline
writes its own detections, and internal topics are never destinations)."""
for _topic in INPUT_TOPICS + DERIVED_TOPICS:
    for _cls in _topic.events:
        TOPIC_OF.setdefault(_cls.__name__, _topic)

DLQ_RULE = "fs.error.rule"
DLQ_FIELD = "fs.error.field"
DLQ_MESSAGE = "fs.error.message"
DLQ_SOURCE = "fs.error.source"


def topic_for(event: Event) -> Topic:
    """The topic an event belongs on."""
    return TOPIC_OF[event.type]
