"""One hand-written, valid instance of every event kind (shared by tests)."""

from __future__ import annotations

from events import kinds as k
from events.base import Causation, Event

T0 = 1_795_340_800_000  # 2026-11-22T08:26:40Z
CAUSE = Causation(id="ev-cause", topic="fs.gps", partition=3, offset=1234)


def envelope(n: int, subject: str = "WO-1") -> dict[str, object]:
    return {"id": f"ev-{n}", "source": "test/app", "time": T0 + n * 1000, "subject": subject}


SAMPLES: list[Event] = [
    k.TechnicianRegistered(
        **envelope(1, "T-1"),
        technician_id="T-1",
        name="Núria Vidal",
        skills=("hvac", "gas"),
        team="north",
        region="Canillo",
        home_lat=42.567,
        home_lon=1.598,
    ),
    k.ShiftStarted(
        **envelope(2, "T-1"),
        technician_id="T-1",
        van_stock={"filter": 4, "valve": 0},
        planned_end=T0 + 8 * 3_600_000,
    ),
    k.ShiftEnded(**envelope(3, "T-1"), technician_id="T-1"),
    k.CustomerContacted(
        **envelope(4),
        work_order_id="WO-1",
        customer_id="C-1",
        channel="phone",
        reason="where_are_you",
    ),
    k.WorkOrderBooked(
        **envelope(5),
        work_order_id="WO-1",
        customer_id="C-1",
        site_lat=42.5063,
        site_lon=1.5218,
        address="Plaça del Poble 1, Andorra la Vella",
        region="Andorra la Vella",
        job_type="boiler_repair",
        required_skills=("gas",),
        parts_kit={"valve": 1},
        window_start=T0 + 3_600_000,
        window_end=T0 + 3 * 3_600_000,
        priority="normal",
        maintenance="reactive",
        value=180.5,
        first_contact_time=T0 - 86_400_000,
        asset_id="boiler-77",
    ),
    k.WorkOrderRescheduled(
        **envelope(6),
        work_order_id="WO-1",
        window_start=T0 + 7_200_000,
        window_end=T0 + 14_400_000,
        requested_by="customer",
        reason="not home",
    ),
    k.WorkOrderCancelled(**envelope(7), work_order_id="WO-1", cancelled_by="customer", reason=""),
    k.TechnicianAssigned(**envelope(8), work_order_id="WO-1", technician_id="T-1", position=0),
    k.TechnicianUnassigned(**envelope(9), work_order_id="WO-1", technician_id="T-1", reason="swap"),
    k.GpsPinged(
        **envelope(10, "T-1"),
        technician_id="T-1",
        lat=42.51,
        lon=1.53,
        speed_mps=12.5,
        heading_deg=270.0,
        accuracy_m=6.0,
    ),
    k.TechnicianEnRoute(**envelope(11), work_order_id="WO-1", technician_id="T-1"),
    k.TechnicianArrived(
        **envelope(12), work_order_id="WO-1", technician_id="T-1", detected_by="geofence"
    ),
    k.WorkStarted(**envelope(13), work_order_id="WO-1", technician_id="T-1"),
    k.WorkPaused(**envelope(14), work_order_id="WO-1", technician_id="T-1", reason="lunch"),
    k.WorkResumed(**envelope(15), work_order_id="WO-1", technician_id="T-1"),
    k.WorkCompleted(
        **envelope(16),
        work_order_id="WO-1",
        technician_id="T-1",
        fixed=False,
        reason="part_missing",
        notes="valve on order",
    ),
    k.PartPicked(
        **envelope(17), work_order_id="WO-1", technician_id="T-1", part="valve", quantity=1
    ),
    k.PartUsed(**envelope(18), work_order_id="WO-1", technician_id="T-1", part="valve", quantity=1),
    k.PartMissing(
        **envelope(19), work_order_id="WO-1", technician_id="T-1", part="pump", quantity=2
    ),
    k.CustomerRated(**envelope(20), work_order_id="WO-1", customer_id="C-1", score=9, comment="ok"),
    k.InvoiceIssued(
        **envelope(21),
        work_order_id="WO-1",
        customer_id="C-1",
        invoice_id="INV-1",
        amount=180.5,
        currency="EUR",
    ),
    k.InvoiceDisputed(**envelope(22), work_order_id="WO-1", invoice_id="INV-1", reason="price"),
    k.WorkOrderStateChanged(
        **envelope(23),
        causation=CAUSE,
        work_order_id="WO-1",
        status="en_route",
        previous_status="assigned",
        technician_id="T-1",
        visit=1,
        window_start=T0,
        window_end=T0 + 7_200_000,
        detail="",
    ),
    k.EtaUpdated(
        **envelope(24),
        causation=CAUSE,
        work_order_id="WO-1",
        technician_id="T-1",
        p10=T0 + 600_000,
        p50=T0 + 900_000,
        p90=T0 + 1_500_000,
        window_start=T0,
        window_end=T0 + 7_200_000,
        reason="ping",
        model_version="eta-1",
    ),
    k.LateAlertRaised(
        **envelope(25),
        causation=CAUSE,
        work_order_id="WO-1",
        technician_id="T-1",
        probability_late=0.83,
        p10=T0 + 7_000_000,
        p50=T0 + 7_800_000,
        p90=T0 + 9_000_000,
        window_start=T0,
        window_end=T0 + 7_200_000,
        lead_time_s=3600,
        message="New ETA 14:40-15:10",
        suggested_technician_id="T-2",
        suggested_p50=T0 + 6_000_000,
    ),
    k.LateAlertCleared(
        **envelope(26),
        causation=CAUSE,
        work_order_id="WO-1",
        technician_id="T-1",
        probability_late=0.1,
        p50=T0 + 6_000_000,
        reason="back_in_window",
    ),
    k.KpiSnapshot(
        **envelope(27, "2026-11-25/team/north"),
        causation=CAUSE,
        group_key="2026-11-25/team/north",
        day="2026-11-25",
        dimension="team",
        group="north",
        metrics={"on_time_rate": 0.91, "nps": None},
    ),
]
