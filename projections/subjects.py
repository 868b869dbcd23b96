"""The KPI subjects: each visit, work order, accepted input and technician-day, turned into
its :class:`~projections.kpis.Contribution` to the KPI groups (docs/kpis.md, "The KPIs").

Every contribution is a pure function of the projection's state, recomputed whenever
something it reads changed; that is what makes the tables independent of batching.
"""

from __future__ import annotations

from bisect import bisect_left

from projections.etas import EtaPoint, quantiles
from projections.kpis import DAY_MS, Contribution, Part, counters, day_start, group_pairs
from projections.model import Input, Order, Technician, Visit
from projections.state import HOUR_MS, ProjectionState


def _kept_since(tech: Technician, since: int) -> bool:
    """Whether the technician's pruned track still holds every fix from ``since`` on: it was
    cut at or before that time. (Its first fix may well be later, a shift's first ping coming
    after the shift started: the track still covers that shift whole.)"""
    return tech.track_cut is not None and tech.track_cut <= since


def _shift_start(tech: Technician | None, at: int) -> int | None:
    """The start of the technician's shift under way at ``at`` (the latest one started at or
    before it), if any."""
    if tech is None:
        return None
    return tech.shift_started_by(at)


class Subjects(ProjectionState):
    """The contribution of every kind of subject (mixed into the fold)."""

    def _attrs(self, tid: str | None) -> tuple[str | None, str | None]:
        tech = self.techs.get(tid) if tid else None
        return (tech.team, tech.region) if tech is not None else (None, None)

    def _order_groups(self, order: Order, tid: str | None) -> tuple[tuple[str, str], ...]:
        team, _ = self._attrs(tid)
        return group_pairs(tid, team, order.region or None, order.job_type or None)

    def _leg_mm(self, order: Order, v: Visit) -> int:
        """The leg's GPS distance: from the track, or as last computed when the track no
        longer reaches back to the leg (kept in the order's document for that case)."""
        assert v.en_route_at is not None and v.arrived_at is not None
        tid = v.technician
        track = self.tracks.get(tid) if tid else None
        tech = self.techs.get(tid) if tid else None
        if (
            track is not None
            and track.start is not None
            and (tech is None or not tech.track_pruned or _kept_since(tech, v.en_route_at))
        ):
            mm = track.driven_mm(v.en_route_at, v.arrived_at, _shift_start(tech, v.en_route_at))
            if mm != v.leg_mm:
                v.leg_mm = mm
                self._order_docs.add(order.id)
        return v.leg_mm or 0

    def _eta_at(self, wo: str, tid: str | None, since: int | None, at: int) -> EtaPoint | None:
        return self.etas.in_force(wo, tid, since, at)

    def _first_alert(self, wo: str, v: Visit) -> tuple[bool, int | None]:
        """(alerted before arriving, time of the first alert before the window ended) for the
        visit's window (alerts carry the window they judged)."""
        assert v.arrived_at is not None
        alerted = False
        first: int | None = None
        for time, raised, _tid, window_end, _p, _m in self.alerts.get(wo, {}).values():
            if not raised or window_end != v.window_end or time > v.arrived_at:
                continue
            alerted = True
            if time < v.window_end and (first is None or time < first):
                first = time
        return alerted, first

    def _visit_subject(
        self, order: Order, v: Visit
    ) -> tuple[Contribution | None, frozenset[tuple[str, str]]]:
        tid = v.technician
        groups = self._order_groups(order, tid)
        parts: list[Part] = []
        refs: set[tuple[str, str]] = set()
        a = v.arrived_at
        if a is not None:
            ws, we = v.window_start, v.window_end
            c: dict[str, int | bool] = {
                "arr": 1,
                "arr_on_time": a <= we,
                "arr_early": a < ws,
                "arr_late": a > we,
            }
            samples: list[tuple[str, int]] = []
            if v.en_route_at is not None and v.en_route_at <= a:
                c["leg_n"] = 1
                c["leg_ms"] = a - v.en_route_at
                c["leg_mm"] = self._leg_mm(order, v)
            alerted, first = self._first_alert(order.id, v)
            if alerted:
                c["alerted"] = 1
                c["alerted_late"] = a > we
            if a > we and first is not None:
                c["late_alerted"] = 1
                samples.append(("alert_lead_ms", we - first))
            eta = self._eta_at(order.id, tid, v.assigned_at, a - self.settings.eta_horizon_ms)
            if eta is not None:
                p10, p50, p90 = quantiles(eta)
                c["eta_n"] = 1
                c["eta_abs_ms"] = abs(a - p50)
                c["eta_err_ms"] = a - p50
                c["eta_in"] = p10 <= a <= p90
                c["eta_width_ms"] = p90 - p10
                c["eta_le10"] = a <= p10
                c["eta_le50"] = a <= p50
                c["eta_le90"] = a <= p90
            if v.number == 1 and order.booked_at is not None:
                samples.append(("tts_ms", a - order.booked_at))
            parts.append(Part(self.day(a), groups, counters(c), tuple(sorted(samples))))
            if tid:
                refs.add((tid, self.day(a)))
        done = v.completed_at
        if done is not None:
            rated = any(
                self.inputs[i].kind == "CustomerRated"
                and done <= self.inputs[i].time <= done + HOUR_MS
                for i in self.inputs_by_wo.get(order.id, ())
            )
            c = {"done": 1, "done_missing": v.part_missing, "done_rated_1h": rated}
            parts.append(Part(self.day(done), groups, counters(c)))
            if tid:
                refs.add((tid, self.day(done)))
        contribution = Contribution(tuple(parts)) if parts else None
        return contribution, frozenset(refs)

    def _booking(self, order_id: str) -> Input | None:
        for item_id in sorted(self.inputs_by_wo.get(order_id, ())):
            item = self.inputs[item_id]
            if item.kind == "WorkOrderBooked":
                return item
        return None

    def _kit_complete(self, order: Order, v: Visit, booking: Input | None) -> bool | None:
        """Whether the van held the job type's whole kit when the technician arrived: the
        stock at the shift's start less the parts it used before (None: unknown)."""
        if booking is None or booking.data is None or v.arrived_at is None or not v.technician:
            return None
        tech = self.techs.get(v.technician)
        if tech is None:
            return None
        shift = tech.van_stock_at(v.arrived_at)
        if shift is None:
            return None
        start, stock = shift
        left = dict(stock)
        uses = self.part_uses_by_tech.get(v.technician, [])
        for i in range(bisect_left(uses, (start,)), bisect_left(uses, (v.arrived_at,))):
            item = self.inputs[uses[i][1]]
            if item.data is not None:
                part = str(item.data["part"])
                left[part] = left.get(part, 0) - int(item.data["qty"])
        kit: dict[str, int] = booking.data["parts_kit"]
        return all(left.get(part, 0) >= qty for part, qty in kit.items())

    def _order_subject(self, order: Order) -> Contribution | None:
        parts: list[Part] = []
        booking = self._booking(order.id)
        first = order.visits[0] if order.visits else None
        t1 = first.technician if first is not None else None
        if booking is not None and booking.data is not None:
            data = booking.data
            # A repeat customer's: another of the customer's orders was booked before it.
            bookings = self.customers.get(str(data["customer_id"]), [])
            repeat = bool(bookings) and bookings[0] < (booking.time, order.id)
            c = {
                "book": 1,
                "book_resched": order.reschedules > 0,
                "book_cancel": order.cancelled_at is not None,
                "book_repeat": repeat,
                "book_prev": data["maintenance"] == "preventive",
                "book_reac": data["maintenance"] == "reactive",
            }
            samples = (("ttb_ms", booking.time - int(data["first_contact_time"])),)
            parts.append(
                Part(self.day(booking.time), self._order_groups(order, t1), counters(c), samples)
            )
        if first is not None and first.completed_at is not None:
            c = {
                "ftf_n": 1,
                "ftf": bool(first.fixed),
                "rep_n": 1,
                "rep": any(v.arrived_at is not None for v in order.visits[1:]),
            }
            kit = self._kit_complete(order, first, booking)
            if kit is True:
                c["kit_n"] = 1
                c["kit_ftf"] = bool(first.fixed)
            elif kit is False:
                c["nokit_n"] = 1
                c["nokit_ftf"] = bool(first.fixed)
            parts.append(
                Part(self.day(first.completed_at), self._order_groups(order, t1), counters(c))
            )
        for i, v in enumerate(order.visits):
            if v.fixed and v.completed_at is not None:
                work = sum(w.work_ms() for w in order.visits[: i + 1])
                c = {"fixed_n": 1, "fixed_work_ms": work}
                parts.append(
                    Part(
                        self.day(v.completed_at),
                        self._order_groups(order, v.technician),
                        counters(c),
                    )
                )
                break
        return Contribution(tuple(parts)) if parts else None

    def _input_subject(self, item: Input) -> tuple[Contribution | None, frozenset[tuple[str, str]]]:
        if not item.complete or item.data is None:
            return None, frozenset()
        order = self.orders.get(item.work_order_id)
        if order is None:
            return None, frozenset()
        data = item.data
        c: dict[str, int | bool]
        refs: frozenset[tuple[str, str]] = frozenset()
        if item.kind == "CustomerContacted":
            if data["reason"] != "where_are_you":
                return None, frozenset()
            c = {"way": 1}
        elif item.kind == "CustomerRated":
            score = int(data["score"])
            c = {"rt_n": 1, "rt_sum": score, "rt_nps": 1 if score >= 9 else -1 if score <= 6 else 0}
        elif item.kind == "InvoiceIssued":
            disputed = any(
                self.inputs[i].kind == "InvoiceDisputed"
                and (self.inputs[i].data or {}).get("invoice_id") == data["invoice_id"]
                for i in self.inputs_by_wo.get(item.work_order_id, ())
            )
            c = {"inv_n": 1, "inv_cents": round(float(data["amount"]) * 100), "inv_disp": disputed}
            if item.technician:
                refs = frozenset({(item.technician, self.day(item.time))})
        else:
            return None, frozenset()
        part = Part(self.day(item.time), self._order_groups(order, item.technician), counters(c))
        return Contribution((part,)), refs

    def _techday(self, tid: str, day: str, full: bool = True) -> Contribution | None:
        """A technician-day's contribution. ``full=False``: only the GPS distance changed,
        the rest is taken from the last full computation."""
        tech = self.techs.get(tid)
        if tech is None:
            return None
        shifts = self._shifts_on(tech, day)
        if not shifts:
            self._td_base.pop((tid, day), None)
            return None
        c = None if full else self._td_base.get((tid, day))
        if c is None:
            c = self._techday_base(tech, day, shifts)
            self._td_base[(tid, day)] = c
        mm = self._shift_mm(tid, day)
        self._td_mm[(tid, day)] = mm
        part = Part(
            day, group_pairs(tid, tech.team, tech.region, None), counters({**c, "td_mm": mm})
        )
        return Contribution((part,))

    def _shifts_on(self, tech: Technician, day: str) -> list[tuple[int, int | None]]:
        """The technician's shifts started on ``day``."""
        first = day_start(day, self.settings.day_offset_ms)
        return tech.shifts_started(first, first + DAY_MS)

    def _shift_mm(self, tid: str, day: str) -> int:
        """GPS distance of the technician's shifts started on ``day``: from the track, or as
        last computed when the track no longer reaches back to them."""
        tech = self.techs[tid]
        shifts = self._shifts_on(tech, day)
        track = self.tracks.get(tid)
        if (
            shifts
            and track is not None
            and track.start is not None
            and (not tech.track_pruned or _kept_since(tech, shifts[0][0]))
        ):
            return sum(track.shift_mm(s, e) for s, e in shifts)
        return tech.km_cache.get(day, 0)

    def _techday_base(
        self, tech: Technician, day: str, shifts: list[tuple[int, int | None]]
    ) -> dict[str, int | bool]:
        tid = tech.id
        visits = 0
        leg_ms = 0
        work_ms = 0
        revenue = 0
        jobs: set[str] = set()
        for subject in self._td_subjects.get((tid, day), ()):
            if subject[0] == "input":
                item = self.inputs[subject[1]]
                if item.kind == "InvoiceIssued" and item.data is not None:
                    revenue += round(float(item.data["amount"]) * 100)
                continue
            wo = subject[1]
            v = self.orders[wo].visits[int(subject[2]) - 1]
            a = v.arrived_at
            if a is not None and self.day(a) == day:
                visits += 1
                if v.en_route_at is not None and v.en_route_at <= a:
                    leg_ms += a - v.en_route_at
            if v.completed_at is not None and self.day(v.completed_at) == day:
                jobs.add(wo)
                work_ms += v.work_ms()
        c: dict[str, int | bool] = {
            "td_n": 1,
            "td_jobs": len(jobs),
            "td_visits": visits,
            "td_leg_ms": leg_ms,
            "td_rev_cents": revenue,
        }
        if all(e is not None for _, e in shifts):
            shift_ms = sum(e - s for s, e in shifts if e is not None)
            c["td_ended"] = 1
            c["td_shift_ms"] = shift_ms
            c["td_work_ms"] = work_ms
            c["td_idle_ms"] = shift_ms - work_ms - leg_ms
        return c
