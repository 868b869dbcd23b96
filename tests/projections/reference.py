"""Every KPI computed independently of projections/, from the raw events on the log (decoded
with events.codec) and the simulator's truth, following docs/kpis.md.

Nothing here imports projections/: visits are rebuilt from the snapshots with plain loops,
distances use a haversine of this module's own, percentiles come from numpy, and each KPI is
a separate small function. ``Reference.metric(name)`` gives ``{(day, dimension, group): value}``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from events import kinds as k
from events.codec import decode
from streams.log import Record

MIN = 60_000.0
HOUR = 3_600_000
LATENESS = 15 * 60_000
Key = tuple[str, str, str]
Groups = list[tuple[str, str]]


def day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine on a sphere of the mean Earth radius."""
    r = 6_371_008.8
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * r * math.asin(math.sqrt(h))


@dataclass
class Visit:
    order: str
    number: int
    technician: str | None = None
    last: k.WorkOrderStateChanged | None = None
    window: tuple[int, int] | None = None
    frozen: bool = False
    paused_ms: int = 0
    pause_started: int | None = None
    part_missing: bool = False

    def __getattr__(self, name: str) -> Any:  # the latest snapshot's visit fields
        last = self.__dict__.get("last")
        if last is None:
            raise AttributeError(name)
        return getattr(last, name)

    @property
    def leg(self) -> tuple[int, int] | None:
        if self.arrived_at is None or self.en_route_at is None:
            return None
        if self.en_route_at > self.arrived_at:
            return None
        return self.en_route_at, self.arrived_at

    def work_ms(self) -> int:
        if self.started_at is None or self.completed_at is None:
            return 0
        return max(0, int(self.completed_at) - int(self.started_at) - self.paused_ms)


@dataclass
class Odometer:
    times: list[int] = field(default_factory=list)
    readings: list[int] = field(default_factory=list)

    def at(self, t: int) -> int:
        best = 0
        for when, reading in zip(self.times, self.readings, strict=True):
            if when <= t:
                best = reading
            else:
                break
        if not self.times:
            return 0
        return best if self.times[0] <= t else self.readings[0]


class Reference:
    def __init__(self, records: dict[str, list[Record]]) -> None:
        ev: dict[str, list[Any]] = {
            t: [decode(r.value) for r in rs] for t, rs in records.items() if t != "fs.dlq"
        }
        self.snapshots: list[k.WorkOrderStateChanged] = ev["fs.workorders"]
        self.accepted: dict[str, k.WorkOrderStateChanged] = {
            s.causation.id: s for s in self.snapshots
        }
        # work orders
        self.region: dict[str, str] = {}
        self.job_type: dict[str, str] = {}
        self.booked_at: dict[str, int] = {}
        self.rescheduled: set[str] = set()
        self.cancelled: set[str] = set()
        self.visits: dict[tuple[str, int], Visit] = {}
        seen: set[str] = set()
        for s in self.snapshots:
            if s.id in seen:
                continue
            seen.add(s.id)
            self.region[s.work_order_id] = s.region
            self.job_type[s.work_order_id] = s.job_type
            if s.trigger == "WorkOrderBooked":
                self.booked_at.setdefault(s.work_order_id, s.time)
            if s.trigger == "WorkOrderRescheduled":
                self.rescheduled.add(s.work_order_id)
            if s.trigger == "WorkOrderCancelled":
                self.cancelled.add(s.work_order_id)
            if s.visit == 0:
                continue
            v = self.visits.setdefault((s.work_order_id, s.visit), Visit(s.work_order_id, s.visit))
            v.last = s
            if s.technician_id is not None:
                v.technician = s.technician_id
            if not v.frozen:
                v.window = (s.window_start, s.window_end)
                v.frozen = s.arrived_at is not None
            if s.trigger == "WorkPaused":
                v.pause_started = s.time
            elif s.trigger in ("WorkResumed", "WorkCompleted") and v.pause_started is not None:
                v.paused_ms += s.time - v.pause_started
                v.pause_started = None
            if s.trigger == "PartMissing":
                v.part_missing = True
        # accepted inputs
        inputs = [e for t in ("fs.bookings", "fs.feedback", "fs.parts") for e in ev[t]]
        unique = {e.id: e for e in inputs if e.id in self.accepted}
        self.bookings = [e for e in unique.values() if isinstance(e, k.WorkOrderBooked)]
        self.contacts = [e for e in unique.values() if isinstance(e, k.CustomerContacted)]
        self.ratings = [e for e in unique.values() if isinstance(e, k.CustomerRated)]
        self.invoices = [e for e in unique.values() if isinstance(e, k.InvoiceIssued)]
        self.disputes = [e for e in unique.values() if isinstance(e, k.InvoiceDisputed)]
        self.parts_used = [e for e in unique.values() if isinstance(e, k.PartUsed)]
        # technicians
        registered: dict[str, k.TechnicianRegistered] = {}
        starts: dict[str, dict[str, k.ShiftStarted]] = defaultdict(dict)
        ends: dict[str, set[int]] = defaultdict(set)
        for e in ev["fs.dispatch"]:
            if isinstance(e, k.TechnicianRegistered):
                old = registered.get(e.technician_id)
                if old is None or (e.time, e.id) > (old.time, old.id):
                    registered[e.technician_id] = e
            elif isinstance(e, k.ShiftStarted):
                starts[e.technician_id][e.id] = e
            elif isinstance(e, k.ShiftEnded):
                ends[e.technician_id].add(e.time)
        self.team = {t: e.team for t, e in registered.items()}
        self.home = {t: e.region for t, e in registered.items()}
        self.shifts: dict[str, list[tuple[int, int | None, dict[str, int]]]] = {}
        for tech, by_id in starts.items():
            ordered = sorted(by_id.values(), key=lambda e: e.time)
            out = []
            for i, start in enumerate(ordered):
                nxt = ordered[i + 1].time if i + 1 < len(ordered) else None
                candidates = [t for t in ends[tech] if t >= start.time and (nxt is None or t < nxt)]
                out.append((start.time, min(candidates) if candidates else None, start.van_stock))
            self.shifts[tech] = out
        # ETAs and alerts
        self.etas = {e.id: e for e in ev["fs.eta"] if isinstance(e, k.EtaUpdated)}
        self.alerts = [e for e in ev["fs.alerts"] if isinstance(e, k.LateAlertRaised)]
        # GPS odometers
        self.odometers = self._odometers(records["fs.gps"])

    # -- building blocks ------------------------------------------------------------------------

    def covered(self, tech: str, t: int) -> bool:
        return any(s <= t and (e is None or t <= e) for s, e, _ in self.shifts.get(tech, []))

    def _odometers(self, pings: list[Record]) -> dict[str, Odometer]:
        by_tech: dict[str, list[Record]] = defaultdict(list)
        for r in pings:  # each partition in offset order
            assert r.key is not None
            by_tech[r.key.decode()].append(r)
        out = {}
        for tech, recs in by_tech.items():
            newest = -(10**18)
            kept: dict[int, tuple[float, float]] = {}
            for r in recs:
                t = r.timestamp_ms
                if t < newest - LATENESS:
                    continue
                newest = max(newest, t)
                e = decode(r.value)
                assert isinstance(e, k.GpsPinged)
                if self.covered(tech, t) and t not in kept:
                    kept[t] = (e.lat, e.lon)
            odo = Odometer()
            total = 0
            previous = None
            for t in sorted(kept):
                if previous is not None:
                    d = distance_m(previous, kept[t])
                    if d >= 25.0:
                        total += round(d * 1000)
                previous = kept[t]
                odo.times.append(t)
                odo.readings.append(total)
            out[tech] = odo
        return out

    def leg_mm(self, v: Visit) -> int:
        """docs/kpis.md: the odometer from ``en_route_at`` to ``arrived_at``, within the
        leg's shift (a reading from an earlier shift is replaced by the shift's first fix)."""
        leg = v.leg
        assert leg is not None and v.technician is not None
        odo = self.odometers.get(v.technician, Odometer())
        starts = [s for s, _, _ in self.shifts.get(v.technician, []) if s <= leg[0]]
        before = [t for t in odo.times if t <= leg[0]]
        start = odo.at(leg[0])
        if starts and before and before[-1] < max(starts):
            firsts = [t for t in odo.times if t >= max(starts)]
            if not firsts or firsts[0] > leg[1]:
                return 0
            start = odo.at(firsts[0])
        return max(0, odo.at(leg[1]) - start)

    def work_groups(self, tech: str | None, order: str) -> Groups:
        groups = [("all", "all")]
        if tech:
            groups.append(("technician", tech))
            if tech in self.team:
                groups.append(("team", self.team[tech]))
        groups += [("region", self.region[order]), ("job_type", self.job_type[order])]
        return groups

    def tech_groups(self, tech: str) -> Groups:
        return [
            ("all", "all"),
            ("technician", tech),
            ("team", self.team[tech]),
            ("region", self.home[tech]),
        ]

    def arrivals(self) -> list[Visit]:
        return [v for v in self.visits.values() if v.arrived_at is not None]

    def completions(self) -> list[Visit]:
        return [v for v in self.visits.values() if v.completed_at is not None]

    def late(self, v: Visit) -> bool:
        assert v.window is not None
        return bool(v.arrived_at > v.window[1])

    def first_alert(self, v: Visit) -> tuple[bool, int | None]:
        assert v.window is not None
        qualifying = [
            a
            for a in self.alerts
            if a.work_order_id == v.order and a.window_end == v.window[1] and a.time <= v.arrived_at
        ]
        before = [a.time for a in qualifying if a.time < v.window[1]]
        return bool(qualifying), (min(before) if before else None)

    def eta_30(self, v: Visit) -> k.EtaUpdated | None:
        cutoff = v.arrived_at - 30 * MIN
        candidates = [
            e
            for e in self.etas.values()
            if e.work_order_id == v.order
            and e.technician_id == v.technician
            and e.time <= cutoff
            and (v.assigned_at is None or e.time >= v.assigned_at)
        ]
        return max(candidates, key=lambda e: (e.time, e.id)) if candidates else None

    def kit_complete(self, v: Visit) -> bool | None:
        booking = next((b for b in self.bookings if b.work_order_id == v.order), None)
        if booking is None or v.technician is None or v.arrived_at is None:
            return None
        shifts = [s for s in self.shifts.get(v.technician, []) if s[0] <= v.arrived_at]
        if not shifts:
            return None
        start, end, stock = max(shifts, key=lambda s: s[0])
        if end is not None and v.arrived_at > end:
            return None
        left = dict(stock)
        for used in self.parts_used:
            if used.technician_id == v.technician and start <= used.time < v.arrived_at:
                left[used.part] = left.get(used.part, 0) - used.quantity
        return all(left.get(p, 0) >= q for p, q in booking.parts_kit.items())

    def snapshot_tech(self, event_id: str) -> str | None:
        return self.accepted[event_id].technician_id

    # -- aggregation helpers ----------------------------------------------------------------------

    @staticmethod
    def ratio(
        items: Iterable[tuple[str, Groups, float, float]], scale: float = 1.0
    ) -> dict[Key, float | None]:
        sums: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for d, groups, num, den in items:
            for dim, grp in groups:
                s = sums[(d, dim, grp)]
                s[0] += num
                s[1] += den
        return {key: (n / dd * scale if dd else None) for key, (n, dd) in sums.items()}

    @staticmethod
    def count(items: Iterable[tuple[str, Groups, float]]) -> dict[Key, float | None]:
        sums: dict[Key, float] = defaultdict(float)
        for d, groups, n in items:
            for dim, grp in groups:
                sums[(d, dim, grp)] += n
        return dict(sums)

    @staticmethod
    def percentile(items: Iterable[tuple[str, Groups, float]], q: float) -> dict[Key, float | None]:
        samples: dict[Key, list[float]] = defaultdict(list)
        for d, groups, x in items:
            for dim, grp in groups:
                samples[(d, dim, grp)].append(x)
        return {key: float(np.percentile(xs, q * 100)) for key, xs in samples.items()}

    # -- the KPIs ---------------------------------------------------------------------------------

    def metric(self, name: str) -> dict[Key, float | None]:
        return METRICS[name](self)


def _arr(r: Reference, v: Visit) -> tuple[str, Groups]:
    return day(v.arrived_at), r.work_groups(v.technician, v.order)


def _visits(r: Reference) -> dict[Key, float | None]:
    return r.count((*_arr(r, v), 1) for v in r.arrivals())


def _on_time(r: Reference) -> dict[Key, float | None]:
    return r.ratio((*_arr(r, v), float(not r.late(v)), 1) for v in r.arrivals())


def _early(r: Reference) -> dict[Key, float | None]:
    return r.ratio(
        (*_arr(r, v), float(v.arrived_at < v.window[0]), 1)  # type: ignore[index]
        for v in r.arrivals()
    )


def _late_arrivals(r: Reference) -> dict[Key, float | None]:
    return r.count((*_arr(r, v), float(r.late(v))) for v in r.arrivals())


def _time_to_site(q: float) -> Callable[[Reference], dict[Key, float | None]]:
    def f(r: Reference) -> dict[Key, float | None]:
        return r.percentile(
            (
                (*_arr(r, v), (v.arrived_at - r.booked_at[v.order]) / MIN)
                for v in r.arrivals()
                if v.number == 1
            ),
            q,
        )

    return f


def _travel_min(r: Reference) -> dict[Key, float | None]:
    return r.ratio(
        (*_arr(r, v), (v.arrived_at - v.en_route_at) / MIN, 1) for v in r.arrivals() if v.leg
    )


def _travel_km(r: Reference) -> dict[Key, float | None]:
    return r.ratio((*_arr(r, v), r.leg_mm(v) / 1e6, 1) for v in r.arrivals() if v.leg)


def _proactive(r: Reference) -> dict[Key, float | None]:
    late = [v for v in r.arrivals() if r.late(v)]
    return r.ratio((*_arr(r, v), float(r.first_alert(v)[1] is not None), 1) for v in late)


def _lead(r: Reference) -> dict[Key, float | None]:
    items = []
    for v in r.arrivals():
        first = r.first_alert(v)[1]
        if r.late(v) and first is not None:
            items.append((*_arr(r, v), (v.window[1] - first) / MIN))  # type: ignore[index]
    return r.percentile(items, 0.5)


def _precision(r: Reference) -> dict[Key, float | None]:
    return r.ratio((*_arr(r, v), float(r.late(v)), 1) for v in r.arrivals() if r.first_alert(v)[0])


def _eta(kind: str) -> Callable[[Reference], dict[Key, float | None]]:
    def f(r: Reference) -> dict[Key, float | None]:
        items: list[tuple[str, Groups, float, float]] = []
        for v in r.arrivals():
            e = r.eta_30(v)
            if e is None:
                continue
            a = v.arrived_at
            value = {
                "n": 1.0,
                "mae": abs(a - e.p50) / MIN,
                "bias": (a - e.p50) / MIN,
                "coverage": float(e.p10 <= a <= e.p90),
                "width": (e.p90 - e.p10) / MIN,
                "p10": float(a <= e.p10),
                "p50": float(a <= e.p50),
                "p90": float(a <= e.p90),
            }[kind]
            items.append((*_arr(r, v), value, 1.0))
        if kind == "n":
            return r.count((d, g, n) for d, g, n, _ in items)
        return r.ratio(items)

    return f


def _where_are_you(r: Reference) -> dict[Key, float | None]:
    calls = r.count(
        (day(c.time), r.work_groups(r.snapshot_tech(c.id), c.work_order_id), 1)
        for c in r.contacts
        if c.reason == "where_are_you"
    )
    visits = _visits(r)
    keys = set(calls) | set(visits)
    out: dict[Key, float | None] = {}
    for key in keys:
        arrivals = visits.get(key)
        out[key] = 100 * (calls.get(key) or 0) / arrivals if arrivals else None
    return out


def _done(r: Reference, v: Visit) -> tuple[str, Groups]:
    return day(v.completed_at), r.work_groups(v.technician, v.order)


def _completed(r: Reference) -> dict[Key, float | None]:
    return r.count((*_done(r, v), 1) for v in r.completions())


def _missing(r: Reference) -> dict[Key, float | None]:
    return r.ratio((*_done(r, v), float(v.part_missing), 1) for v in r.completions())


def _feedback(r: Reference) -> dict[Key, float | None]:
    def rated(v: Visit) -> bool:
        return any(
            x.work_order_id == v.order and v.completed_at <= x.time <= v.completed_at + HOUR
            for x in r.ratings
        )

    return r.ratio((*_done(r, v), float(rated(v)), 1) for v in r.completions())


def _firsts(r: Reference) -> list[Visit]:
    return [v for v in r.completions() if v.number == 1]


def _ftf(r: Reference) -> dict[Key, float | None]:
    return r.ratio((*_done(r, v), float(bool(v.fixed)), 1) for v in _firsts(r))


def _ftf_kit(complete: bool) -> Callable[[Reference], dict[Key, float | None]]:
    def f(r: Reference) -> dict[Key, float | None]:
        return r.ratio(
            (*_done(r, v), float(bool(v.fixed)), 1)
            for v in _firsts(r)
            if r.kit_complete(v) is complete
        )

    return f


def _repeat_visit(r: Reference) -> dict[Key, float | None]:
    def again(v: Visit) -> bool:
        return any(
            w.order == v.order and w.number > 1 and w.arrived_at is not None
            for w in r.visits.values()
        )

    return r.ratio((*_done(r, v), float(again(v)), 1) for v in _firsts(r))


def _fixing(r: Reference) -> list[tuple[Visit, int]]:
    out = []
    for order in {v.order for v in r.visits.values()}:
        visits = sorted((v for v in r.visits.values() if v.order == order), key=lambda v: v.number)
        work = 0
        for v in visits:
            work += v.work_ms()
            if v.fixed and v.completed_at is not None:
                out.append((v, work))
                break
    return out


def _fixed(r: Reference) -> dict[Key, float | None]:
    return r.count((*_done(r, v), 1) for v, _ in _fixing(r))


def _mttr(r: Reference) -> dict[Key, float | None]:
    return r.ratio((*_done(r, v), work / MIN, 1) for v, work in _fixing(r))


def _book(r: Reference, b: k.WorkOrderBooked) -> tuple[str, Groups]:
    first = r.visits.get((b.work_order_id, 1))
    return day(b.time), r.work_groups(first.technician if first else None, b.work_order_id)


def _bookings(r: Reference) -> dict[Key, float | None]:
    return r.count((*_book(r, b), 1) for b in r.bookings)


def _ttb(r: Reference) -> dict[Key, float | None]:
    return r.percentile(
        ((*_book(r, b), (b.time - b.first_contact_time) / MIN) for b in r.bookings), 0.5
    )


def _book_ratio(
    test: Callable[[Reference, k.WorkOrderBooked], bool],
) -> Callable[[Reference], dict[Key, float | None]]:
    def f(r: Reference) -> dict[Key, float | None]:
        return r.ratio((*_book(r, b), float(test(r, b)), 1) for b in r.bookings)

    return f


def _repeat_customer(r: Reference, b: k.WorkOrderBooked) -> bool:
    return any(
        o.customer_id == b.customer_id and (o.time, o.work_order_id) < (b.time, b.work_order_id)
        for o in r.bookings
    )


def _preventive(r: Reference) -> dict[Key, float | None]:
    return r.ratio(
        (*_book(r, b), float(b.maintenance == "preventive"), float(b.maintenance == "reactive"))
        for b in r.bookings
    )


def _rating_items(r: Reference) -> list[tuple[str, Groups, int]]:
    return [
        (day(x.time), r.work_groups(r.snapshot_tech(x.id), x.work_order_id), x.score)
        for x in r.ratings
    ]


def _nps(r: Reference) -> dict[Key, float | None]:
    return r.ratio(
        ((d, g, float(s >= 9) - float(s <= 6), 1) for d, g, s in _rating_items(r)), scale=100.0
    )


def _invoice_items(r: Reference) -> list[tuple[str, Groups, k.InvoiceIssued]]:
    return [
        (day(i.time), r.work_groups(r.snapshot_tech(i.id), i.work_order_id), i) for i in r.invoices
    ]


def _disputed(r: Reference, i: k.InvoiceIssued) -> bool:
    return any(
        d.invoice_id == i.invoice_id and d.work_order_id == i.work_order_id for d in r.disputes
    )


# -- technician-days -------------------------------------------------------------------------


def _tech_days(r: Reference) -> list[dict[str, Any]]:
    out = []
    for tech, shifts in r.shifts.items():
        for d in sorted({day(s) for s, _, _ in shifts}):
            mine = [(s, e) for s, e, _ in shifts if day(s) == d]
            visits = [v for v in r.visits.values() if v.technician == tech]
            arrivals = [v for v in visits if v.arrived_at is not None and day(v.arrived_at) == d]
            done = [v for v in visits if v.completed_at is not None and day(v.completed_at) == d]
            legs = sum(v.arrived_at - v.en_route_at for v in arrivals if v.leg)
            work = sum(v.work_ms() for v in done)
            odo = r.odometers.get(tech, Odometer())
            mm = 0
            for s, e in mine:
                inside = [t for t in odo.times if t >= s and (e is None or t <= e)]
                if inside:
                    mm += odo.at(inside[-1]) - odo.at(inside[0])
            ended = all(e is not None for _, e in mine)
            shift_ms = sum(e - s for s, e in mine if e is not None)
            revenue = sum(
                round(i.amount * 100)
                for i in r.invoices
                if r.snapshot_tech(i.id) == tech and day(i.time) == d
            )
            out.append(
                {
                    "day": d,
                    "groups": r.tech_groups(tech),
                    "jobs": len({v.order for v in done}),
                    "visits": len(arrivals),
                    "leg_ms": legs,
                    "mm": mm,
                    "ended": ended,
                    "shift_ms": shift_ms,
                    "work_ms": work,
                    "revenue": revenue,
                }
            )
    return out


def _td_ratio(
    num: Callable[[dict[str, Any]], float], scale: float = 1.0
) -> Callable[[Reference], dict[Key, float | None]]:
    def f(r: Reference) -> dict[Key, float | None]:
        return r.ratio(((t["day"], t["groups"], num(t), 1) for t in _tech_days(r)), scale)

    return f


def _utilisation(r: Reference) -> dict[Key, float | None]:
    return r.ratio(
        (t["day"], t["groups"], t["work_ms"], t["shift_ms"]) for t in _tech_days(r) if t["ended"]
    )


def _idle(r: Reference) -> dict[Key, float | None]:
    return r.ratio(
        (t["day"], t["groups"], (t["shift_ms"] - t["work_ms"] - t["leg_ms"]) / MIN, 1)
        for t in _tech_days(r)
        if t["ended"]
    )


METRICS: dict[str, Callable[[Reference], dict[Key, float | None]]] = {
    "visits": _visits,
    "on_time_rate": _on_time,
    "early_arrival_rate": _early,
    "time_to_site_p50_min": _time_to_site(0.5),
    "time_to_site_p90_min": _time_to_site(0.9),
    "travel_min_per_visit": _travel_min,
    "travel_km_per_visit": _travel_km,
    "late_arrivals": _late_arrivals,
    "proactive_notice_rate": _proactive,
    "alert_lead_time_p50_min": _lead,
    "alert_precision": _precision,
    "eta_visits_30": _eta("n"),
    "eta_mae_30_min": _eta("mae"),
    "eta_bias_30_min": _eta("bias"),
    "eta_coverage_30": _eta("coverage"),
    "eta_width_30_min": _eta("width"),
    "eta_below_p10_30": _eta("p10"),
    "eta_below_p50_30": _eta("p50"),
    "eta_below_p90_30": _eta("p90"),
    "where_are_you_per_100_visits": _where_are_you,
    "completed_visits": _completed,
    "missing_part_rate": _missing,
    "feedback_1h_rate": _feedback,
    "first_time_fix_rate": _ftf,
    "ftf_rate_complete_kit": _ftf_kit(True),
    "ftf_rate_incomplete_kit": _ftf_kit(False),
    "repeat_visit_rate": _repeat_visit,
    "work_orders_fixed": _fixed,
    "mttr_min": _mttr,
    "bookings": _bookings,
    "time_to_book_p50_min": _ttb,
    "reschedule_rate": _book_ratio(lambda r, b: b.work_order_id in r.rescheduled),
    "cancellation_rate": _book_ratio(lambda r, b: b.work_order_id in r.cancelled),
    "repeat_customer_rate": _book_ratio(_repeat_customer),
    "preventive_ratio": _preventive,
    "ratings": lambda r: r.count((d, g, 1) for d, g, _ in _rating_items(r)),
    "avg_rating": lambda r: r.ratio((d, g, s, 1) for d, g, s in _rating_items(r)),
    "nps": _nps,
    "invoices": lambda r: r.count((d, g, 1) for d, g, _ in _invoice_items(r)),
    "avg_ticket_value": lambda r: r.ratio((d, g, i.amount, 1) for d, g, i in _invoice_items(r)),
    "dispute_rate": lambda r: r.ratio(
        (d, g, float(_disputed(r, i)), 1) for d, g, i in _invoice_items(r)
    ),
    "technicians": lambda r: r.count((t["day"], t["groups"], 1) for t in _tech_days(r)),
    "jobs_per_technician": _td_ratio(lambda t: t["jobs"]),
    "visits_per_technician": _td_ratio(lambda t: t["visits"]),
    "travel_min_per_technician": _td_ratio(lambda t: t["leg_ms"] / MIN),
    "travel_km_per_technician": _td_ratio(lambda t: t["mm"] / 1e6),
    "utilisation": _utilisation,
    "idle_min_per_technician": _idle,
    "revenue_per_technician": _td_ratio(lambda t: t["revenue"] / 100),
}
