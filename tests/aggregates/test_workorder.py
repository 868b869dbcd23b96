"""The WorkOrder state machine: every illegal transition named by the issue, and the rest."""

from __future__ import annotations

from typing import Any

import pytest

from aggregates.decisions import Accept, Decision, Ignore, Park, Reject
from aggregates.facts import BACKFILLED, fact_of
from aggregates.workorder import Status, WorkOrder, decide, evolve, rebuild
from events import kinds as k
from events.base import Event

T0 = 1_795_400_000_000
MIN = 60_000
SKILLS = {"T-1": ("gas", "hvac"), "T-2": ("gas",), "T-3": ("electrical",)}


def skills_of(technician: str) -> tuple[str, ...] | None:
    return SKILLS.get(technician)


class Day:
    """Builds events for one work order and folds the accepted ones."""

    def __init__(self) -> None:
        self.n = 0
        self.order: WorkOrder | None = None
        self.facts: list[Any] = []

    def event(self, cls: type[Event], minute: float, **data: Any) -> Event:
        self.n += 1
        data.setdefault("work_order_id", "WO-1")
        return cls(
            id=f"e{self.n}", source="test", time=int(T0 + minute * MIN), subject="WO-1", **data
        )

    def feed(self, cls: type[Event], minute: float, **data: Any) -> Decision:
        event = self.event(cls, minute, **data)
        decision = decide(self.order, event, skills_of)
        if isinstance(decision, Accept):
            version = self.order.version + 1 if self.order else 1
            fact = fact_of(event, "WO-1", version, decision.effect)
            self.facts.append(fact)
            self.order = evolve(self.order, fact)
        return decision

    def book(self, **changes: Any) -> None:
        data: dict[str, Any] = dict(
            customer_id="C-1",
            site_lat=42.5,
            site_lon=1.52,
            address="x",
            region="r",
            job_type="boiler",
            required_skills=("gas",),
            parts_kit={},
            window_start=T0 + 60 * MIN,
            window_end=T0 + 180 * MIN,
            priority="normal",
            maintenance="reactive",
            value=100.0,
            first_contact_time=T0 - 1000,
        )
        data.update(changes)
        assert isinstance(self.feed(k.WorkOrderBooked, 0, **data), Accept)

    @property
    def status(self) -> Status:
        assert self.order is not None
        return self.order.status


def visit_to_site(day: Day, tech: str = "T-1") -> None:
    assert isinstance(day.feed(k.TechnicianAssigned, 1, technician_id=tech), Accept)
    assert isinstance(day.feed(k.TechnicianEnRoute, 50, technician_id=tech), Accept)
    assert isinstance(day.feed(k.TechnicianArrived, 70, technician_id=tech), Accept)


def test_the_happy_path_records_every_timestamp() -> None:
    day = Day()
    day.book()
    visit_to_site(day)
    day.feed(k.WorkStarted, 72, technician_id="T-1")
    day.feed(k.WorkPaused, 80, technician_id="T-1", reason="lunch")
    assert day.status is Status.PAUSED
    day.feed(k.WorkResumed, 90, technician_id="T-1")
    day.feed(k.PartUsed, 95, technician_id="T-1", part="valve", quantity=2)
    day.feed(k.WorkCompleted, 100, technician_id="T-1", fixed=True)
    assert day.status is Status.COMPLETED_FIXED
    assert day.order is not None
    visit = day.order.visit
    assert visit is not None
    assert (visit.assigned_at, visit.en_route_at, visit.arrived_at, visit.started_at) == (
        T0 + MIN,
        T0 + 50 * MIN,
        T0 + 70 * MIN,
        T0 + 72 * MIN,
    )
    assert visit.completed_at == T0 + 100 * MIN
    assert visit.paused_ms == 10 * MIN
    assert visit.parts_used == {"valve": 2}
    assert visit.arrived_by == "app"


def test_arrival_before_assignment_is_illegal() -> None:
    day = Day()
    day.book()
    decision = day.feed(k.TechnicianArrived, 5, technician_id="T-1")
    assert isinstance(decision, Park)  # the assignment may still be on its way
    assert decision.rule == "illegal_transition"
    assert "before any assignment" in decision.message


def test_completion_before_start_is_illegal() -> None:
    day = Day()
    day.book()
    visit_to_site(day)
    decision = day.feed(k.WorkCompleted, 80, technician_id="T-1", fixed=True)
    assert isinstance(decision, Park)
    assert decision.rule == "illegal_transition"
    assert "completed before it started" in decision.message


def test_assigning_a_cancelled_order_is_rejected() -> None:
    day = Day()
    day.book()
    day.feed(k.WorkOrderCancelled, 2, cancelled_by="customer", reason="")
    decision = day.feed(k.TechnicianAssigned, 3, technician_id="T-1")
    assert isinstance(decision, Reject)
    assert decision.rule == "illegal_transition" and "cancelled" in decision.message


def test_assigning_a_technician_without_the_skill_is_rejected() -> None:
    day = Day()
    day.book(required_skills=("gas", "hvac"))
    decision = day.feed(k.TechnicianAssigned, 1, technician_id="T-2")
    assert isinstance(decision, Reject)
    assert decision.rule == "missing_skill" and "hvac" in decision.message
    assert isinstance(day.feed(k.TechnicianAssigned, 2, technician_id="T-1"), Accept)


def test_an_unregistered_technician_waits_for_registration() -> None:
    day = Day()
    day.book()
    decision = day.feed(k.TechnicianAssigned, 1, technician_id="T-99")
    assert isinstance(decision, Park) and decision.rule == "unknown_technician"


def test_a_repeated_event_id_is_a_no_op() -> None:
    day = Day()
    day.book()
    event = day.event(k.TechnicianAssigned, 1, technician_id="T-1")
    first = decide(day.order, event, skills_of)
    assert isinstance(first, Accept)
    assert day.order is not None
    day.order = evolve(day.order, fact_of(event, "WO-1", 2))
    again = decide(day.order, event, skills_of)
    assert isinstance(again, Ignore)


def test_a_late_en_route_is_backfilled_without_moving_the_status_back() -> None:
    day = Day()
    day.book()
    day.feed(k.TechnicianAssigned, 1, technician_id="T-1")
    day.feed(k.TechnicianArrived, 70, technician_id="T-1")
    decision = day.feed(k.TechnicianEnRoute, 50, technician_id="T-1")
    assert decision == Accept(BACKFILLED)
    assert day.status is Status.ARRIVED
    assert day.order is not None and day.order.visit is not None
    assert day.order.visit.en_route_at == T0 + 50 * MIN


def test_geofence_and_tap_arrivals_count_once() -> None:
    day = Day()
    day.book()
    day.feed(k.TechnicianAssigned, 1, technician_id="T-1")
    day.feed(k.TechnicianEnRoute, 50, technician_id="T-1")
    day.feed(k.TechnicianArrived, 69, technician_id="T-1", detected_by="geofence")
    assert isinstance(day.feed(k.TechnicianArrived, 70, technician_id="T-1"), Ignore)
    assert day.order is not None and day.order.visit is not None
    assert (day.order.visit.arrived_at, day.order.visit.arrived_by) == (T0 + 69 * MIN, "geofence")


def test_not_fixed_then_revisit_opens_a_second_visit() -> None:
    day = Day()
    day.book()
    visit_to_site(day)
    day.feed(k.WorkStarted, 72, technician_id="T-1")
    day.feed(k.PartMissing, 80, technician_id="T-1", part="pump", quantity=1)
    day.feed(k.WorkCompleted, 85, technician_id="T-1", fixed=False, reason="part_missing")
    assert day.status is Status.COMPLETED_NOT_FIXED
    day.feed(
        k.WorkOrderRescheduled,
        90,
        window_start=T0 + 300 * MIN,
        window_end=T0 + 420 * MIN,
        requested_by="dispatch",
        reason="revisit",
    )
    assert isinstance(day.feed(k.TechnicianAssigned, 91, technician_id="T-2"), Accept)
    assert day.order is not None
    assert [v.number for v in day.order.visits] == [1, 2]
    assert day.order.visits[0].parts_missing == {"pump": 1}
    assert day.order.visits[1].technician_id == "T-2"
    assert day.order.window_start == T0 + 300 * MIN and day.order.reschedules == 1


def test_unassign_and_reassign_keep_one_visit() -> None:
    day = Day()
    day.book()
    day.feed(k.TechnicianAssigned, 1, technician_id="T-1")
    day.feed(k.TechnicianUnassigned, 2, technician_id="T-1", reason="sick")
    assert day.status is Status.BOOKED
    day.feed(k.TechnicianAssigned, 3, technician_id="T-2")
    assert day.order is not None
    assert len(day.order.visits) == 1 and day.order.visits[0].technicians == ["T-1", "T-2"]
    stale = day.feed(k.TechnicianEnRoute, 4, technician_id="T-1")
    assert isinstance(stale, Reject) and stale.rule == "not_assigned"


@pytest.mark.parametrize(
    ("cls", "data", "rule"),
    [
        (k.CustomerRated, {"customer_id": "C-1", "score": 9}, "illegal_transition"),
        (
            k.InvoiceIssued,
            {"customer_id": "C-1", "invoice_id": "I", "amount": 1.0},
            "illegal_transition",
        ),
        (k.InvoiceDisputed, {"invoice_id": "nope", "reason": "x"}, "unknown_invoice"),
    ],
)
def test_feedback_before_a_completed_visit_waits(
    cls: type[Event], data: dict[str, Any], rule: str
) -> None:
    day = Day()
    day.book()
    decision = day.feed(cls, 5, **data)
    assert isinstance(decision, Park) and decision.rule == rule


def test_events_for_an_unbooked_order_wait() -> None:
    day = Day()
    decision = day.feed(k.TechnicianAssigned, 1, technician_id="T-1")
    assert isinstance(decision, Park) and decision.rule == "unknown_work_order"


def test_rebuild_from_facts_equals_the_incremental_state() -> None:
    day = Day()
    day.book()
    visit_to_site(day)
    day.feed(k.WorkStarted, 72, technician_id="T-1")
    day.feed(k.WorkCompleted, 85, technician_id="T-1", fixed=True)
    day.feed(k.CustomerRated, 90, customer_id="C-1", score=10)
    day.feed(k.InvoiceIssued, 91, customer_id="C-1", invoice_id="I-1", amount=120.0)
    day.feed(k.InvoiceDisputed, 92, invoice_id="I-1", reason="price")
    rebuilt = rebuild(day.facts)
    assert rebuilt is not None and day.order is not None
    assert rebuilt.as_dict() == day.order.as_dict()
    assert rebuilt.rating == 10 and rebuilt.disputes[0][1] == "I-1"
