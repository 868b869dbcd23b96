"""The rows people read: a visit's facts (``kp_visits``) and the live-tracking view
(``kp_live_technicians``, ``kp_live_work_orders``), built from the projection's state."""

from __future__ import annotations

from typing import Any

from projections.etas import quantiles
from projections.model import ON_SITE, PRE_ARRIVAL, AlertPoint, Order, Visit
from projections.subjects import Subjects

VISIT_FACT_COLUMNS = (
    "work_order_id",
    "visit",
    "day",
    "technician_id",
    "team",
    "region",
    "job_type",
    "window_start",
    "window_end",
    "assigned_at",
    "en_route_at",
    "arrived_at",
    "arrived_by",
    "started_at",
    "completed_at",
    "fixed",
    "late",
    "travel_min",
    "travel_km",
    "work_min",
    "part_missing",
    "eta_time",
    "eta_p10",
    "eta_p50",
    "eta_p90",
    "alert_time",
    "alert_lead_min",
)
LIVE_TECHNICIAN_COLUMNS = (
    "technician_id",
    "name",
    "team",
    "region",
    "on_shift",
    "status",
    "current_work_order",
    "next_work_order",
    "queue_length",
    "position_time",
    "lat",
    "lon",
    "speed_mps",
    "heading_deg",
)
LIVE_WORK_ORDER_COLUMNS = (
    "work_order_id",
    "status",
    "technician_id",
    "window_start",
    "window_end",
    "eta_time",
    "eta_p10",
    "eta_p50",
    "eta_p90",
    "alert_active",
    "alert_time",
    "alert_probability",
    "alert_message",
    "updated_at",
)


class Views(Subjects):
    """Row builders (mixed into the fold)."""

    def _visit_fact(self, order: Order, v: Visit) -> tuple[Any, ...]:
        team, _ = self._attrs(v.technician)
        a = v.arrived_at
        eta = None
        lead = None
        alert_time = None
        if a is not None:
            eta = self._eta_at(
                order.id, v.technician, v.assigned_at, a - self.settings.eta_horizon_ms
            )
            _, first = self._first_alert(order.id, v)
            if first is not None:
                alert_time = first
                lead = (v.window_end - first) / 60_000
        anchor = a or v.completed_at or v.assigned_at or order.updated_at
        travel_min = None
        travel_km = None
        if a is not None and v.en_route_at is not None and v.en_route_at <= a:
            travel_min = (a - v.en_route_at) / 60_000
            travel_km = (v.leg_mm or 0) / 1e6
        work = v.work_ms() / 60_000 if v.completed_at is not None else None
        return (
            order.id,
            v.number,
            self.day(anchor),
            v.technician,
            team,
            order.region,
            order.job_type,
            v.window_start,
            v.window_end,
            v.assigned_at,
            v.en_route_at,
            a,
            v.arrived_by,
            v.started_at,
            v.completed_at,
            v.fixed,
            None if a is None else a > v.window_end,
            travel_min,
            travel_km,
            work,
            v.part_missing,
            None if eta is None else eta[0],
            *((None, None, None) if eta is None else quantiles(eta)),
            alert_time,
            lead,
        )

    def live_technician(self, tid: str) -> tuple[Any, ...]:
        """A technician's live row: last in-shift position (only while on shift), status
        (``off_shift``, ``available``, ``en_route``, ``on_site``) and jobs."""
        tech = self._tech(tid)
        shifts = tech.shifts()
        on_shift = bool(shifts) and shifts[-1][1] is None
        track = self.tracks.get(tid)
        fix = track.last if track is not None else None
        if not on_shift or fix is None or fix[0] < shifts[-1][0]:
            fix = None
        current = None
        status = "available" if on_shift else "off_shift"
        queue: list[tuple[int, int, str]] = []
        for wo in sorted(self.orders_by_tech.get(tid, ())):
            order = self.orders[wo]
            if order.status in ON_SITE:
                current, status = wo, "on_site"
            elif order.status == "en_route" and status != "on_site":
                current, status = wo, "en_route"
            elif order.status == "assigned":
                position = order.queue_position if order.queue_position is not None else 1 << 30
                queue.append((position, order.window_start, wo))
        if not on_shift and status in ("available",):
            status = "off_shift"
        queue.sort()
        return (
            tid,
            tech.name or None,
            tech.team,
            tech.region,
            on_shift,
            status,
            current,
            queue[0][2] if queue else None,
            len(queue),
            None if fix is None else fix[0],
            None if fix is None else fix[1],
            None if fix is None else fix[2],
            None if fix is None else fix[3],
            None if fix is None else fix[4],
        )

    def live_work_order(self, wo: str) -> tuple[Any, ...]:
        """A work order's live row: status, technician, promised window, the current ETA
        (before arrival), and the active late alert if any."""
        order = self.orders[wo]
        eta = self.etas.newest(wo) if order.status in PRE_ARRIVAL else None
        alert: AlertPoint | None = None
        latest: tuple[int, str] | None = None
        for alert_id, alert_point in self.alerts.get(wo, {}).items():
            if latest is None or (alert_point[0], alert_id) > latest:
                latest, alert = (alert_point[0], alert_id), alert_point
        active = alert is not None and alert[1] and order.status in PRE_ARRIVAL
        return (
            wo,
            order.status,
            order.technician,
            order.window_start,
            order.window_end,
            None if eta is None else eta[0],
            *((None, None, None) if eta is None else quantiles(eta)),
            active,
            alert[0] if active and alert is not None else None,
            alert[4] if active and alert is not None else None,
            alert[5] if active and alert is not None else None,
            order.updated_at,
        )
