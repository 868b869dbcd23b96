"""One simulated day of field service, as the events of :mod:`events.kinds`.

:func:`simulate` runs a discrete-event simulation and returns a :class:`Simulation`: the log's
events with their delivery times, and the ground truth of every visit (which never goes on
the log). It is pure: no I/O, no clock, no global random state. The same
:class:`~simulator.scenarios.SimParams` on the same road graph give the same events, ids and
delivery order, byte for byte.

The day
-------
* An hour before the shift (07:00 local) every technician is registered
  (``TechnicianRegistered``, ``sim/dispatch``). Between 07:05 and 07:40 the morning's bookings
  are confirmed (``WorkOrderBooked``, ``sim/crm``; the customer's first contact was the day
  before or so, ``first_contact_time``). At 07:45 the dispatch plan is published:
  ``TechnicianAssigned`` with each job's ``position`` in the technician's queue.
* The plan: demand is drawn per technician from their trade's job mix (so each skill's demand
  matches its supply), each job at a customer's address (a real graph node). Taken in booking
  order, each job goes to the **nearest technician** with the skills and free capacity:
  nearest to where their planned day so far ends (home at first), by the dispatcher's
  travel-time table, among those whose plan still ends before the shift's end minus the
  urgent share (kept free for the day's urgent work). Jobs are done in the order they were
  given, and every job's promised window (``window_minutes``, on the half-hour grid) is placed
  so the planned arrival falls 15-40 % into it, then floored to the grid. The planner assumes
  free-flow times x1.15 and each job type's mean duration (overruns included, as history
  would show): it does not know today's traffic.
* Shifts start at 08:00 (+0-5 min to log in, ``ShiftStarted`` with the van's stock). A
  technician leaves for the next job so as to arrive about 5 minutes before its window opens
  (or at once if already late), drives the free-flow fastest path through time-of-day
  congestion and incidents (:mod:`simulator.traffic`), taps ``TechnicianArrived`` (or forgets
  to), starts work a few minutes later, picks parts (``PartPicked``), may pause, fits the parts
  (``PartUsed``) and completes. A job takes a lognormal time around its type's median, and
  ``overrun_rate`` of jobs take 1.3-2x longer than that.
* If a needed part is not in the van: ``PartMissing`` after diagnosis, ``WorkCompleted`` with
  ``fixed=False, reason="part_missing"``; the part comes 1-2.5 h later, the window is moved
  (``WorkOrderRescheduled`` by dispatch) and the technician with the skill who can get there
  first makes a second visit, queued by window (``TechnicianAssigned`` ...
  ``WorkCompleted(fixed=True)``), or it moves to tomorrow if the shift cannot fit it.
* Urgent same-day jobs (``urgent_share`` of demand) are booked during the shift (a
  ``CustomerContacted`` "booking" call a few minutes earlier) with a window opening 20-60 min
  later, and go to the technician who can get there first, counting double each minute the
  insertion would push their queued jobs past their windows; they jump to position 0.
* Customers cancel (``WorkOrderCancelled`` + ``TechnicianUnassigned``) or move their window
  (``WorkOrderRescheduled``, then a fresh ``TechnicianAssigned``) before the visit starts;
  they call ("where_are_you") some minutes after their window ends without an arrival; they
  rate the visit (0-10, lower when late or not fixed) within the hour; invoices follow fixed
  visits and some are disputed.
* With an empty queue a technician drives home; an hour before the planned end, or on reaching
  home after it, the shift ends (``ShiftEnded``). A job that cannot be finished within 30 min
  of the planned end is moved to tomorrow by dispatch (``WorkOrderRescheduled`` +
  ``TechnicianUnassigned``). Overruns may still make a shift run late.

Sources: ``sim/app`` (the technician's phone: status, parts, shift, GPS), ``sim/dispatch``
(registrations, assignments, dispatch reschedules), ``sim/crm`` (bookings, contacts,
cancellations, customer reschedules, ratings), ``sim/billing`` (invoices, disputes). Subjects
are the work order id, or the technician id for technician, shift and GPS events.

Delivery
--------
Events from ``sim/app`` reach the server 0.2-2.5 s after their ``time`` and never overtake one
another (a phone queues its uploads); GPS fixes are delivered as :mod:`simulator.gps` says,
some minutes late and out of order. Server-side events are delivered at their ``time``.
:class:`Simulation` orders everything by ``(delivery time, sequence number)``; the sequence
number is the order of generation, also used for event ids (``sim-<seed>-<run tag>-<number>``,
the run tag being :meth:`~simulator.scenarios.SimParams.run_tag`). Every event is delivered at
or after its ``time``, so an ingest that uses the delivery time as its clock never sees an
event from the future.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from events import kinds as k
from events.base import Event
from simulator.gps import PingTable, PingWriter, Sequence
from simulator.scenarios import DAY_MS, HOUR_MS, MINUTE_MS, SimParams
from simulator.traffic import Incident, Traffic
from simulator.world import (
    FIRST_NAMES,
    JOB_TYPE_BY_NAME,
    JOB_TYPES,
    LAST_NAMES,
    PART_NEED_PROBABILITY,
    STREETS,
    TRADES,
    BoolArray,
    FloatArray,
    IntArray,
    JobType,
    Leg,
    Trade,
    World,
)

if TYPE_CHECKING:
    from eta_engine.roads import RoadGraph

APP = "sim/app"
DISPATCH = "sim/dispatch"
CRM = "sim/crm"
BILLING = "sim/billing"

# Random streams: each purpose draws from its own generator, so changing how traffic behaves
# (another scenario) leaves the workforce and the demand of a seed unchanged.
STREAM_WORKFORCE = 1
STREAM_DEMAND = 2
STREAM_TRAFFIC = 3
STREAM_DAY = 4
STREAM_GPS = 5
CUSTOMER_BASE_SEED = 20_261_123
"""Seeds the customer base (who lives where), the same for every run on a graph, so customer
ids recur across simulated days like real repeat customers."""

PLAN_TRAVEL_FACTOR = 1.15
"""The planner's and dispatcher's allowance for traffic on free-flow times."""
SETUP_MS = (60_000, 300_000)
WRAP_UP_MS = (120_000, 360_000)
ARRIVE_EARLY_MS = 5 * MINUTE_MS
OVERTIME_MS = 30 * MINUTE_MS
END_SLACK_MS = HOUR_MS
MAX_QUEUE = 8
PART_LEAD_MIN = (60.0, 150.0)
APP_LATENCY_MS = (200, 2500)
TECHS_PER_TEAM = 8

_DECIDE, _URGENT, _CANCEL, _RESCHEDULE, _REVISIT = range(5)

E = TypeVar("E", bound=Event)


@dataclass(slots=True)
class Technician:
    """A technician's state during the run."""

    index: int
    id: str
    name: str
    trade: Trade
    team: str
    region: str
    home: int
    van: dict[str, int]
    shift_start_ms: int
    node: int
    queue: list[int] = field(default_factory=list)
    busy_until: int = 0
    """When the current activity (a visit, the drive home) ends; the next decision then."""
    parked_since: int = 0
    """Start of the open parked phase at :attr:`node` (its fixes are made on departure)."""
    last_fix_ms: int = 0
    last_app_ms: int = 0
    token: int = 0
    """Bumped to cancel a pending wake-up when the plan changes."""
    at_home: bool = True
    ended: bool = False


@dataclass(slots=True)
class Order:
    """A work order's state during the run (random traits drawn when it is created)."""

    index: int
    id: str
    customer_id: str
    site: int
    address: str
    region: str
    job: JobType
    job_index: int
    priority: str
    value: float
    urgent: bool
    duration_s: float
    overrun: bool
    parts: dict[str, int]
    call_delay_ms: int
    booked_ms: int = 0
    first_contact_ms: int = 0
    window_start: int = 0
    window_end: int = 0
    tech: int | None = None
    status: str = "new"
    """new -> queued -> active -> done | waiting_part | cancelled | deferred."""
    visits: int = 0
    missing: list[str] = field(default_factory=list)
    called_for: int = -1
    """The window end for which the customer already decided whether to call."""
    calls: int = 0


@dataclass(frozen=True, slots=True)
class Technicians:
    """Who took part (for tests and summaries)."""

    ids: tuple[str, ...]
    homes: tuple[int, ...]


class Simulation:
    """The outcome of :func:`simulate`.

    ``truth``: one dict per visit, in en-route order (see :data:`TRUTH_FIELDS`). ``pings``:
    every GPS fix as columns, including the true position (tests use it; it never goes on the
    log). Events are kept compactly; :attr:`events` and :meth:`iter_events` build them in
    delivery order, :func:`simulator.output.records` encodes them fast.
    """

    def __init__(
        self,
        *,
        params: SimParams,
        events: list[Event],
        event_delivery: list[int],
        event_seq: list[int],
        pings: PingTable,
        truth: list[dict[str, Any]],
        technicians: Technicians,
        incidents: tuple[Incident, ...],
        id_prefix: str,
    ) -> None:
        self.params = params
        self.truth = truth
        self.pings = pings
        self.technicians = technicians
        self.incidents = incidents
        self.id_prefix = id_prefix
        self._events = events
        self._event_delivery = np.asarray(event_delivery, dtype=np.int64)
        self._event_seq = np.asarray(event_seq, dtype=np.int64)
        delivery = np.concatenate([self._event_delivery, pings.delivery_ms])
        seq = np.concatenate([self._event_seq, pings.seq])
        self._order: IntArray = np.lexsort((seq, delivery)).astype(np.int64)
        self._delivery: IntArray = delivery
        self._materialised: list[tuple[int, Event]] | None = None

    def __len__(self) -> int:
        return len(self._order)

    @property
    def n_pings(self) -> int:
        return len(self.pings)

    @property
    def event_list(self) -> list[Event]:
        """The non-GPS events in generation order (not delivery order)."""
        return self._events

    def order(self) -> tuple[IntArray, IntArray]:
        """``(index, delivery_ms)`` in delivery order; an index below ``len(event_list)`` is
        that event, otherwise the fix ``index - len(event_list)`` of :attr:`pings`."""
        return self._order, self._delivery[self._order]

    def ping_event(self, row: int) -> k.GpsPinged:
        """Fix ``row`` of :attr:`pings` as an event."""
        p = self.pings
        speed = float(p.speed_mps[row])
        heading = float(p.heading_deg[row])
        tech = self.technicians.ids[int(p.tech[row])]
        return k.GpsPinged(
            id=f"{self.id_prefix}{int(p.seq[row]):09d}",
            source=APP,
            time=int(p.time_ms[row]),
            subject=tech,
            technician_id=tech,
            lat=float(p.lat[row]),
            lon=float(p.lon[row]),
            speed_mps=None if math.isnan(speed) else speed,
            heading_deg=None if math.isnan(heading) else heading,
            accuracy_m=float(p.accuracy_m[row]),
        )

    def iter_events(self) -> Iterator[tuple[int, Event]]:
        """``(delivery_ms, event)`` in delivery order, built lazily (a big day has millions)."""
        n_events = len(self._events)
        for index, delivery in zip(
            self._order.tolist(), self._delivery[self._order].tolist(), strict=True
        ):
            if index < n_events:
                yield delivery, self._events[index]
            else:
                yield delivery, self.ping_event(index - n_events)

    @property
    def events(self) -> list[tuple[int, Event]]:
        """Every event as ``(delivery_ms, event)`` in delivery order.

        Built on first access and kept (a 5,000-technician day is ~3 million objects, over a
        gigabyte: stream big days with :meth:`iter_events` or
        :func:`simulator.output.records` instead)."""
        if self._materialised is None:
            self._materialised = list(self.iter_events())
        return self._materialised

    def summary(self) -> dict[str, Any]:
        """Counts for a human: events by type, visits, late arrivals."""
        counts: dict[str, int] = {}
        for event in self._events:
            counts[event.type] = counts.get(event.type, 0) + 1
        counts["GpsPinged"] = len(self.pings)
        late = sum(1 for row in self.truth if row["late"])
        return {
            "events": len(self),
            "by_type": dict(sorted(counts.items())),
            "visits": len(self.truth),
            "late_arrivals": late,
            "incidents": len(self.incidents),
        }


TRUTH_FIELDS = (
    "work_order_id",
    "visit",
    "technician_id",
    "job_type",
    "urgent",
    "window_start_ms",
    "window_end_ms",
    "en_route_ms",
    "arrival_ms",
    "travel_s",
    "free_flow_s",
    "congestion_factor",
    "distance_m",
    "late",
    "minutes_late",
    "arrival_tapped",
)
"""Keys of a truth row. ``arrival_ms`` is when the van reached the site (not the tap);
``congestion_factor`` = ``travel_s / free_flow_s`` (1 for a zero-length leg); ``late`` means
the arrival came after ``window_end_ms`` (the window in force when the visit began)."""


def _floor_to(ms: int, step: int, origin: int) -> int:
    return origin + (ms - origin) // step * step


def _ceil_to(ms: int, step: int, origin: int) -> int:
    return origin - (origin - ms) // step * step


class _Run:
    """The mutable state of one run; :func:`simulate` is its only user."""

    def __init__(self, params: SimParams, world: World) -> None:
        self.p = params
        self.sc = params.scenario
        self.world = world
        seed = params.seed

        def stream(n: int, seed: int = seed) -> np.random.Generator:
            return np.random.Generator(np.random.PCG64([seed, n]))

        workforce_seed = seed if params.workforce_seed is None else params.workforce_seed
        self.rng_workforce = stream(STREAM_WORKFORCE, workforce_seed)
        self.rng_demand = stream(STREAM_DEMAND)
        self.rng = stream(STREAM_DAY)
        self.prefix = f"sim-{seed}-{params.run_tag()}-"
        self.sequence = Sequence()
        self.events: list[Event] = []
        self.delivery: list[int] = []
        self.seqs: list[int] = []
        self.truth: list[dict[str, Any]] = []
        self.heap: list[tuple[int, int, int, int, int]] = []
        self._heap_seq = 0
        self.paths: dict[tuple[int, int], Leg] = {}
        self.techs: list[Technician] = []
        self.orders: list[Order] = []
        self.day = params.start_date.strftime("%Y%m%d")
        self.planned_end = params.shift_end_ms
        self.invoices = 0
        span = (params.log_start_ms, params.shift_end_ms + HOUR_MS)
        self.traffic = Traffic(world, self.sc, params.midnight_ms, span, stream(STREAM_TRAFFIC))
        self.gps = PingWriter(world, self.sc, stream(STREAM_GPS), self.sequence)
        # What dispatch expects a job to take: the mean of its duration model, overruns
        # included (the planner's "prediction from history"), not the median.
        overrun = self.sc.overrun_rate * (sum(self.sc.overrun_factor) / 2.0 - 1.0)
        self.expected_s = [
            j.median_min * 60.0 * math.exp(j.spread**2 / 2.0) * (1.0 + overrun) for j in JOB_TYPES
        ]
        self.handlers: dict[int, Callable[[int, int, int], None]] = {
            _DECIDE: self._on_decide,
            _URGENT: self._on_urgent,
            _CANCEL: self._on_cancel,
            _RESCHEDULE: self._on_reschedule,
            _REVISIT: self._on_revisit,
        }
        # Customer base: customer k lives at a fixed address node whatever the seed.
        base = np.random.Generator(np.random.PCG64(CUSTOMER_BASE_SEED))
        self.customer_sites: IntArray = base.permutation(world.address_nodes)
        self.n_customers = max(2000, 30 * params.technicians)

    # ------------------------------------------------------------------------- emitting

    def emit(
        self,
        cls: type[E],
        time: int,
        source: str,
        subject: str,
        delivery: int | None = None,
        **data: Any,
    ) -> E:
        """Create an event with the next id; ``delivery`` defaults to ``time`` (server side)."""
        seq = self.sequence.take()
        event = cls(id=f"{self.prefix}{seq:09d}", source=source, time=time, subject=subject, **data)
        self.events.append(event)
        self.delivery.append(time if delivery is None else delivery)
        self.seqs.append(seq)
        return event

    def app(self, tech: Technician, cls: type[E], time: int, subject: str, **data: Any) -> E:
        """An event from the technician's phone: small latency, never overtaking the last."""
        delivery = max(time + int(self.rng.integers(*APP_LATENCY_MS)), tech.last_app_ms + 1)
        tech.last_app_ms = delivery
        return self.emit(cls, time, APP, subject, delivery, **data)

    def schedule(self, at: int, kind: int, arg: int, token: int = 0) -> None:
        self._heap_seq += 1
        heapq.heappush(self.heap, (at, self._heap_seq, kind, arg, token))

    def wake(self, tech: Technician, at: int) -> None:
        """(Re)schedule the technician's next decision, cancelling any pending one."""
        tech.token += 1
        self.schedule(at, _DECIDE, tech.index, tech.token)

    def path(self, src: int, dst: int) -> Leg:
        leg = self.paths.pop((src, dst), None)
        return leg if leg is not None else self.world.fastest_path(src, dst)

    # ------------------------------------------------------------------------- the run

    def run(self, progress: Callable[[float], None] | None = None) -> Simulation:
        self._workforce()
        self._plan()
        self._urgent_demand()
        first, span = self.p.log_start_ms, self.planned_end + OVERTIME_MS - self.p.log_start_ms
        steps = 0
        while self.heap:
            at, _, kind, arg, token = heapq.heappop(self.heap)
            self.handlers[kind](at, arg, token)
            steps += 1
            if progress is not None and steps % 2048 == 0:
                progress(min(1.0, (at - first) / span))
        if progress is not None:
            progress(1.0)
        return Simulation(
            params=self.p,
            events=self.events,
            event_delivery=self.delivery,
            event_seq=self.seqs,
            pings=self.gps.table(),
            truth=self.truth,
            technicians=Technicians(
                tuple(t.id for t in self.techs), tuple(t.home for t in self.techs)
            ),
            incidents=self.traffic.incidents,
            id_prefix=self.prefix,
        )

    def _workforce(self) -> None:
        """Technicians: trade, home base (a real node), van stock; registered at log start."""
        rng = self.rng_workforce
        n = self.p.technicians
        shares = np.array([t.share for t in TRADES])
        trades = rng.choice(len(TRADES), size=n, p=shares / shares.sum())
        homes = rng.choice(self.world.address_nodes, size=n)
        per_trade: dict[str, int] = {}
        width = max(4, len(str(n)))
        for i in range(n):
            trade = TRADES[int(trades[i])]
            rank = per_trade.get(trade.name, 0)
            per_trade[trade.name] = rank + 1
            name = f"{FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))]} " + str(
                LAST_NAMES[int(rng.integers(len(LAST_NAMES)))]
            )
            kit: dict[str, int] = {}
            for job_name, _weight in trade.job_mix:
                for part, qty in JOB_TYPE_BY_NAME[job_name].parts_kit:
                    kit[part] = max(kit.get(part, 0), qty)
            van = {}
            for part in sorted(kit):
                stock = kit[part] * int(rng.integers(3, 8))
                if rng.random() >= self.sc.missing_part_rate:
                    van[part] = stock
            home = int(homes[i])
            start = self.p.shift_start_ms + int(rng.integers(0, 5 * MINUTE_MS))
            tech = Technician(
                index=i,
                id=f"T-{i + 1:0{width}d}",
                name=name,
                trade=trade,
                team=f"{trade.name}-{rank // TECHS_PER_TEAM + 1:02d}",
                region=self.world.parish_of(home),
                home=home,
                van=van,
                shift_start_ms=start,
                node=home,
                busy_until=start,
                parked_since=start,
                last_fix_ms=start,
            )
            self.techs.append(tech)
            self.emit(
                k.TechnicianRegistered,
                self.p.log_start_ms,
                DISPATCH,
                tech.id,
                technician_id=tech.id,
                name=tech.name,
                skills=trade.skills,
                team=tech.team,
                region=tech.region,
                home_lat=float(self.world.lat[home]),
                home_lon=float(self.world.lon[home]),
            )
        self.skill_ok: BoolArray = np.array(
            [[set(j.skills) <= set(t.trade.skills) for j in JOB_TYPES] for t in self.techs],
            dtype=bool,
        ).reshape(n, len(JOB_TYPES))
        self.free_at: IntArray = np.array([t.busy_until for t in self.techs], dtype=np.int64)
        self.free_node: IntArray = np.array([t.home for t in self.techs], dtype=np.int64)
        self.est_end: FloatArray = self.free_at.astype(np.float64)
        self.queue_len: IntArray = np.zeros(n, dtype=np.int64)
        self.slack: FloatArray = np.full(n, np.inf)
        self.ended: BoolArray = np.zeros(n, dtype=bool)

    def _new_order(self, job: JobType, urgent: bool) -> Order:
        """A work order with all its random traits drawn now, from the demand stream."""
        rng = self.rng_demand
        index = len(self.orders)
        customer = int(rng.integers(self.n_customers))
        site = int(self.customer_sites[customer % len(self.customer_sites)])
        street = STREETS[customer % len(STREETS)]
        address = (
            f"{street} {1 + (customer * 7) % 120}, {self.world.postcode_of(site)} "
            f"{self.world.parish_of(site)}"
        )
        duration = job.median_min * 60.0 * math.exp(job.spread * rng.standard_normal())
        overrun = bool(rng.random() < self.sc.overrun_rate)
        if overrun:
            duration *= float(rng.uniform(*self.sc.overrun_factor))
        parts = {part: qty for part, qty in job.parts_kit if rng.random() < PART_NEED_PROBABILITY}
        if urgent:
            priority = "urgent"
        elif job.maintenance == "preventive":
            priority = "low" if rng.random() < 0.4 else "normal"
        else:
            priority = "high" if rng.random() < 0.25 else "normal"
        delay = rng.uniform(*self.sc.call_delay_min)
        order = Order(
            index=index,
            id=f"WO-{self.day}-{index + 1:06d}",
            customer_id=f"C-{customer + 1:06d}",
            site=site,
            address=address,
            region=self.world.parish_of(site),
            job=job,
            job_index=JOB_TYPES.index(job),
            priority=priority,
            value=round(job.value_eur * math.exp(0.25 * rng.standard_normal()), 2),
            urgent=urgent,
            duration_s=max(600.0, duration),
            overrun=overrun,
            parts=parts,
            call_delay_ms=round(delay * MINUTE_MS),
        )
        self.orders.append(order)
        return order

    def _draw_job(self, trade: Trade, reactive_only: bool) -> JobType:
        mix = [
            (JOB_TYPE_BY_NAME[name], w)
            for name, w in trade.job_mix
            if not reactive_only or JOB_TYPE_BY_NAME[name].maintenance == "reactive"
        ]
        weights = np.array([w for _, w in mix], dtype=np.float64)
        return mix[int(self.rng_demand.choice(len(mix), p=weights / weights.sum()))][0]

    def _plan(self) -> None:
        """The morning plan: pre-booked jobs, nearest-technician dispatch, chained windows."""
        p, sc, rng, world = self.p, self.sc, self.rng_demand, self.world
        scale = p.hours / 9.0
        mean_booked = sc.jobs_per_technician * scale * (1.0 - sc.urgent_share)
        jobs: list[Order] = []
        for tech in self.techs:
            for _ in range(int(rng.poisson(mean_booked))):
                jobs.append(self._new_order(self._draw_job(tech.trade, False), urgent=False))
        # Greedy dispatch in booking order: each job goes to the technician with the skills
        # whose planned chain ends nearest to it and who can still fit it, keeping the urgent
        # share of the shift free for the day's urgent work.
        end_node = np.array([t.home for t in self.techs], dtype=np.int64)
        end_ms = np.full(len(self.techs), float(p.shift_start_ms + 7 * MINUTE_MS))
        limit = self.planned_end - sc.urgent_share * p.hours * HOUR_MS
        chains: list[list[Order]] = [[] for _ in self.techs]
        for j in rng.permutation(len(jobs)):
            order = jobs[int(j)]
            est = world.estimate_from(end_node, order.site) * PLAN_TRAVEL_FACTOR * 1000.0
            finish = end_ms + est + (self.expected_s[order.job_index] + 480.0) * 1000.0
            cand = self.skill_ok[:, order.job_index] & (finish <= limit)
            if not cand.any():
                continue
            best = int(np.argmin(np.where(cand, est, np.inf)))
            end_ms[best] = finish[best]
            end_node[best] = order.site
            chains[best].append(order)

        window = sc.window_minutes * MINUTE_MS
        plan_ms = p.log_start_ms + 45 * MINUTE_MS
        booked: list[Order] = []
        for tech, chain in zip(self.techs, chains, strict=True):
            node, t = tech.home, p.shift_start_ms + 7 * MINUTE_MS
            for nxt in chain:
                leg = world.fastest_path(node, nxt.site)
                arrive = t + round(leg.free_s * PLAN_TRAVEL_FACTOR * 1000.0)
                done = arrive + round((self.expected_s[nxt.job_index] + 480.0) * 1000.0)
                if done > self.planned_end:
                    continue
                self.paths[(node, nxt.site)] = leg
                start = _floor_to(
                    arrive - round(rng.uniform(0.15, 0.4) * window), 30 * MINUTE_MS, p.midnight_ms
                )
                nxt.window_start = max(start, p.shift_start_ms)
                nxt.window_end = nxt.window_start + window
                nxt.booked_ms = p.log_start_ms + int(rng.integers(5 * MINUTE_MS, 40 * MINUTE_MS))
                nxt.first_contact_ms = nxt.booked_ms - max(
                    10 * MINUTE_MS, round(18 * HOUR_MS * math.exp(0.8 * rng.standard_normal()))
                )
                nxt.tech = tech.index
                nxt.status = "queued"
                tech.queue.append(nxt.index)
                booked.append(nxt)
                node, t = nxt.site, done

        for order in sorted(booked, key=lambda o: (o.booked_ms, o.index)):
            self._emit_booked(order)
        for tech in self.techs:
            for position, j in enumerate(tech.queue):
                order = self.orders[j]
                self.emit(
                    k.TechnicianAssigned,
                    plan_ms,
                    DISPATCH,
                    order.id,
                    work_order_id=order.id,
                    technician_id=tech.id,
                    position=position,
                )
            self._refresh(tech)
        for order in booked:
            # Not before the plan is out, so an unassignment never precedes its assignment.
            self._customer_changes(
                order, max(order.booked_ms + 10 * MINUTE_MS, plan_ms + 5 * MINUTE_MS)
            )
        for tech in self.techs:
            self.app(
                tech,
                k.ShiftStarted,
                tech.shift_start_ms,
                tech.id,
                technician_id=tech.id,
                van_stock=dict(tech.van),
                planned_end=self.planned_end,
            )
            self.wake(tech, tech.shift_start_ms + int(self.rng.integers(60_000, 240_000)))

    def _customer_changes(self, order: Order, earliest: int) -> None:
        """Maybe schedule a cancellation or a reschedule before the window opens."""
        rng = self.rng_demand
        r = rng.random()
        latest = order.window_start - 20 * MINUTE_MS
        at = int(rng.integers(earliest, max(earliest + 1, latest)))  # drawn always: keeps
        if latest <= earliest:  # the demand stream aligned whatever the windows
            return
        if r < self.sc.cancel_rate:
            self.schedule(at, _CANCEL, order.index)
        elif r < self.sc.cancel_rate + self.sc.reschedule_rate:
            self.schedule(at, _RESCHEDULE, order.index)

    def _emit_booked(self, order: Order) -> None:
        self.emit(
            k.WorkOrderBooked,
            order.booked_ms,
            CRM,
            order.id,
            work_order_id=order.id,
            customer_id=order.customer_id,
            site_lat=float(self.world.lat[order.site]),
            site_lon=float(self.world.lon[order.site]),
            address=order.address,
            region=order.region,
            job_type=order.job.name,
            required_skills=order.job.skills,
            parts_kit=dict(order.job.parts_kit),
            window_start=order.window_start,
            window_end=order.window_end,
            priority=order.priority,
            maintenance=order.job.maintenance,
            value=order.value,
            first_contact_time=order.first_contact_ms,
        )

    def _urgent_demand(self) -> None:
        """Same-day urgent jobs, booked during the shift."""
        p, sc, rng = self.p, self.sc, self.rng_demand
        mean = p.technicians * sc.jobs_per_technician * (p.hours / 9.0) * sc.urgent_share
        first = p.shift_start_ms + 15 * MINUTE_MS
        last = max(first + MINUTE_MS, self.planned_end - 150 * MINUTE_MS)
        for _ in range(int(rng.poisson(mean))):
            trade = self.techs[int(rng.integers(len(self.techs)))].trade
            order = self._new_order(self._draw_job(trade, True), urgent=True)
            order.booked_ms = int(rng.integers(first, last))
            order.first_contact_ms = order.booked_ms - int(
                rng.integers(2 * MINUTE_MS, 15 * MINUTE_MS)
            )
            start = order.booked_ms + int(rng.integers(20 * MINUTE_MS, 60 * MINUTE_MS))
            order.window_start = _ceil_to(start, 15 * MINUTE_MS, p.midnight_ms)
            order.window_end = order.window_start + sc.window_minutes * MINUTE_MS
            self.schedule(order.booked_ms, _URGENT, order.index)

    # -------------------------------------------------------------------------- dispatch

    def _refresh(self, tech: Technician) -> None:
        """Update the dispatcher's view of one technician (free time, place, queue end)."""
        i = tech.index
        t = float(tech.busy_until)
        node = tech.node
        slack = math.inf
        for j in tech.queue:
            order = self.orders[j]
            t += self.world.estimate_s(node, order.site) * PLAN_TRAVEL_FACTOR * 1000.0
            slack = min(slack, order.window_end - t)
            t = max(t, float(order.window_start))
            t += (self.expected_s[order.job_index] + 480.0) * 1000.0
            node = order.site
        self.slack[i] = slack
        self.free_at[i] = tech.busy_until
        self.free_node[i] = tech.node
        self.est_end[i] = t
        self.queue_len[i] = len(tech.queue)
        self.ended[i] = tech.ended

    def _choose(self, order: Order, at: int, *, first: bool = False) -> Technician | None:
        """The technician with the skills and the time who can reach the site first.

        ``first``: the job goes to the front of the queue, delaying the rest by about two
        legs and the job; each minute that pushes a queued job past its window counts
        double against the technician (the least painful choice, not just the nearest).
        """
        travel = self.world.estimate_from(self.free_node, order.site) * PLAN_TRAVEL_FACTOR * 1000.0
        job = (self.expected_s[order.job_index] + 480.0) * 1000.0
        cand = (
            self.skill_ok[:, order.job_index]
            & ~self.ended
            & (self.queue_len < MAX_QUEUE)
            & (self.planned_end - at >= END_SLACK_MS)
            & (self.est_end + travel + job <= self.planned_end)
        )
        if not cand.any():
            return None
        score = np.maximum(self.free_at, at) + travel
        if first:
            score = score + 2.0 * np.maximum(0.0, 2.0 * travel + job - self.slack)
        return self.techs[int(np.argmin(np.where(cand, score, np.inf)))]

    def _assign(self, tech: Technician, order: Order, at: int, position: int) -> None:
        tech.queue.insert(position, order.index)
        order.tech = tech.index
        order.status = "queued"
        self.emit(
            k.TechnicianAssigned,
            at,
            DISPATCH,
            order.id,
            work_order_id=order.id,
            technician_id=tech.id,
            position=position,
        )
        self._refresh(tech)
        if tech.busy_until <= at:
            self.wake(tech, at + 30_000)

    def _unassign(self, order: Order, at: int, reason: str) -> None:
        if order.tech is None:
            return
        tech = self.techs[order.tech]
        if order.index in tech.queue:
            tech.queue.remove(order.index)
        self.emit(
            k.TechnicianUnassigned,
            at,
            DISPATCH,
            order.id,
            work_order_id=order.id,
            technician_id=tech.id,
            reason=reason,
        )
        order.tech = None
        self._refresh(tech)
        if tech.busy_until <= at and not tech.ended:
            self.wake(tech, at + 30_000)

    def _to_tomorrow(self, order: Order, at: int, party: str, reason: str) -> None:
        """Move the window to the same time tomorrow (the day after is not simulated)."""
        order.window_start += DAY_MS
        order.window_end += DAY_MS
        order.status = "deferred"
        self.emit(
            k.WorkOrderRescheduled,
            at,
            CRM if party == "customer" else DISPATCH,
            order.id,
            work_order_id=order.id,
            window_start=order.window_start,
            window_end=order.window_end,
            requested_by=party,
            reason=reason,
        )

    def _where_are_you(self, order: Order, arrival: int) -> None:
        """The customer calls if the window ended some minutes ago with nobody there."""
        call = order.window_end + order.call_delay_ms
        if order.called_for == order.window_end or arrival <= call or call < order.booked_ms:
            return
        order.called_for = order.window_end
        if self.rng.random() >= self.sc.where_are_you_rate:
            return
        channel = "phone" if self.rng.random() < 0.8 else "chat"
        for at in (call, call + int(self.rng.integers(35 * MINUTE_MS, 50 * MINUTE_MS))):
            if at >= arrival:
                break
            order.calls += 1
            self.emit(
                k.CustomerContacted,
                at,
                CRM,
                order.id,
                work_order_id=order.id,
                customer_id=order.customer_id,
                channel=channel,
                reason="where_are_you",
            )
            if self.rng.random() < 0.5:
                break

    # -------------------------------------------------------------------------- handlers

    def _on_urgent(self, at: int, j: int, _token: int) -> None:
        order = self.orders[j]
        channel = ("phone", "web", "app")[int(self.rng.choice(3, p=[0.6, 0.25, 0.15]))]
        self.emit(
            k.CustomerContacted,
            order.first_contact_ms,
            CRM,
            order.id,
            work_order_id=order.id,
            customer_id=order.customer_id,
            channel=channel,
            reason="booking",
        )
        assign_at = at + int(self.rng.integers(60_000, 240_000))
        tech = self._choose(order, assign_at, first=True)
        if tech is None:
            # Nobody can take it today: it is booked for tomorrow, same time.
            order.window_start += DAY_MS
            order.window_end += DAY_MS
            order.status = "deferred"
        self._emit_booked(order)
        if tech is not None:
            self._assign(tech, order, assign_at, 0)

    def _contact(self, order: Order, at: int, reason: str) -> None:
        """The customer gets in touch about ``order`` (by phone, SMS or the web)."""
        self.emit(
            k.CustomerContacted,
            at,
            CRM,
            order.id,
            work_order_id=order.id,
            customer_id=order.customer_id,
            channel=("phone", "sms", "web")[int(self.rng.integers(3))],
            reason=reason,
        )

    def _on_cancel(self, at: int, j: int, _token: int) -> None:
        order = self.orders[j]
        if order.status != "queued":
            return
        self._contact(order, at, "cancel")
        reasons = ("no longer needed", "fixed it myself", "found another provider", "not at home")
        self.emit(
            k.WorkOrderCancelled,
            at + 30_000,
            CRM,
            order.id,
            work_order_id=order.id,
            cancelled_by="customer",
            reason=reasons[int(self.rng.integers(len(reasons)))],
        )
        order.status = "cancelled"
        self._unassign(order, at + 60_000, "cancelled by customer")

    def _on_reschedule(self, at: int, j: int, _token: int) -> None:
        order = self.orders[j]
        if order.status != "queued":
            return
        self._contact(order, at, "reschedule")
        window = order.window_end - order.window_start
        start = _ceil_to(
            max(order.window_start + 2 * HOUR_MS, at + 90 * MINUTE_MS),
            30 * MINUTE_MS,
            self.p.midnight_ms,
        )
        self._unassign(order, at + 60_000, "rescheduled by customer")
        tech = None
        if start + window <= self.planned_end:
            order.window_start, order.window_end = start, start + window
            tech = self._choose(order, at + 90_000)
        if tech is None:
            self._to_tomorrow(order, at + 30_000, "customer", "customer not available today")
            return
        self.emit(
            k.WorkOrderRescheduled,
            at + 30_000,
            CRM,
            order.id,
            work_order_id=order.id,
            window_start=order.window_start,
            window_end=order.window_end,
            requested_by="customer",
            reason="customer not available at the booked time",
        )
        starts = [self.orders[q].window_start for q in tech.queue]
        self._assign(tech, order, at + 90_000, bisect.bisect_right(starts, order.window_start))

    def _on_revisit(self, at: int, j: int, _token: int) -> None:
        order = self.orders[j]
        if order.status != "waiting_part":
            return
        tech = self._choose(order, at)
        if tech is None:
            self._to_tomorrow(order, at, "dispatch", "no technician free for the revisit today")
            return
        starts = [self.orders[q].window_start for q in tech.queue]
        self._assign(tech, order, at, bisect.bisect_right(starts, order.window_start))

    def _on_decide(self, at: int, i: int, token: int) -> None:
        tech = self.techs[i]
        if tech.ended or token != tech.token:
            return
        if not tech.queue:
            if not tech.at_home:
                self._drive_home(tech, at)
            elif at >= self.planned_end - END_SLACK_MS:
                self._end_shift(tech, at)
            else:
                self.wake(tech, self.planned_end - END_SLACK_MS)
            return
        order = self.orders[tech.queue[0]]
        leg = self.path(tech.node, order.site)
        travel_ms = round(leg.free_s * PLAN_TRAVEL_FACTOR * 1000.0)
        work_ms = round(self.expected_s[order.job_index] * 1000.0)
        if at + travel_ms + work_ms > self.planned_end + OVERTIME_MS:
            self.paths[(tech.node, order.site)] = leg
            for n, q in enumerate(list(tech.queue)):
                deferred = self.orders[q]
                self._where_are_you(deferred, at + n * 1000)
                self._to_tomorrow(
                    deferred, at + n * 1000, "dispatch", "technician out of shift time"
                )
                self._unassign(deferred, at + n * 1000 + 500, "rescheduled to tomorrow")
            self.wake(tech, at + 60_000)
            return
        depart = order.window_start - travel_ms - ARRIVE_EARLY_MS
        if depart > at + 60_000:
            self.paths[(tech.node, order.site)] = leg
            self.wake(tech, depart)
            return
        self._visit(tech, order, at, leg)

    # ----------------------------------------------------------------------------- moving

    def _close_parked(self, tech: Technician, until: int) -> None:
        tech.last_fix_ms = self.gps.parked(
            tech.index, tech.node, tech.last_fix_ms, tech.parked_since, until
        )

    def _drive(self, tech: Technician, leg: Leg, depart: int) -> tuple[int, float]:
        """Drive a leg from ``depart`` (fixes included): ``(arrival ms, seconds driven)``."""
        self._close_parked(tech, depart)
        entry, dur = self.traffic.drive(leg.edges, depart)
        seconds = float(entry[-1] + dur[-1]) if len(dur) else 0.0
        tech.last_fix_ms = self.gps.driving(
            tech.index,
            nodes=leg.nodes,
            edges=leg.edges,
            depart_ms=depart,
            entry_s=entry,
            dur_s=dur,
            last_ms=tech.last_fix_ms,
        )
        arrive = depart + round(seconds * 1000.0)
        tech.node = int(leg.nodes[-1])
        tech.parked_since = arrive
        return arrive, seconds

    def _drive_home(self, tech: Technician, at: int) -> None:
        arrive, _ = self._drive(tech, self.path(tech.node, tech.home), at)
        tech.at_home = True
        tech.busy_until = arrive
        if arrive >= self.planned_end - END_SLACK_MS:
            self._end_shift(tech, arrive)
        else:
            self.wake(tech, arrive)
        self._refresh(tech)

    def _end_shift(self, tech: Technician, at: int) -> None:
        self._close_parked(tech, at)
        tech.parked_since = at
        tech.ended = True
        tech.token += 1
        self.app(tech, k.ShiftEnded, at, tech.id, technician_id=tech.id)
        self._refresh(tech)

    def _visit(self, tech: Technician, order: Order, at: int, leg: Leg) -> None:
        """One visit, from setting off to the end of the wrap-up, decided all at once."""
        rng = self.rng
        tech.queue.pop(0)
        order.status = "active"
        order.visits += 1
        ids = {"work_order_id": order.id, "technician_id": tech.id}
        self.app(tech, k.TechnicianEnRoute, at, order.id, **ids)
        arrive, seconds = self._drive(tech, leg, at)
        tech.at_home = False
        late = arrive > order.window_end
        tapped = bool(rng.random() >= self.sc.untapped_arrival_rate)
        self.truth.append(
            {
                "work_order_id": order.id,
                "visit": order.visits,
                "technician_id": tech.id,
                "job_type": order.job.name,
                "urgent": order.urgent,
                "window_start_ms": order.window_start,
                "window_end_ms": order.window_end,
                "en_route_ms": at,
                "arrival_ms": arrive,
                "travel_s": round(seconds, 3),
                "free_flow_s": round(leg.free_s, 3),
                "congestion_factor": round(seconds / leg.free_s, 4) if leg.free_s > 0 else 1.0,
                "distance_m": round(leg.length_m, 1),
                "late": late,
                "minutes_late": round(max(0, arrive - order.window_end) / MINUTE_MS, 2),
                "arrival_tapped": tapped,
            }
        )
        self._where_are_you(order, arrive)

        cursor = arrive
        if tapped:
            cursor = arrive + int(rng.integers(5_000, 60_000))
            self.app(tech, k.TechnicianArrived, cursor, order.id, **ids)
        start = max(arrive + int(rng.integers(*SETUP_MS)), cursor + 5_000)
        self.app(tech, k.WorkStarted, start, order.id, **ids)
        cursor = start

        def step(at_least: int) -> int:
            nonlocal cursor
            cursor = max(at_least, cursor + int(rng.integers(5_000, 30_000)))
            return cursor

        revisit = order.visits > 1
        if revisit:
            # The missing parts came by courier; the rest is taken from the van if there.
            missing: list[str] = []
            duration = order.duration_s * 0.5
        else:
            missing = [p for p, q in order.parts.items() if tech.van.get(p, 0) < q]
            duration = order.duration_s
        for part, qty in order.parts.items():
            if part not in missing:
                self.app(tech, k.PartPicked, step(cursor), order.id, part=part, quantity=qty, **ids)
        fixed = True
        reason: str | None = None
        notes = ""
        if missing:
            diagnosed = start + round(duration * rng.uniform(0.2, 0.4) * 1000.0)
            for part in missing:
                qty = order.parts[part]
                self.app(
                    tech, k.PartMissing, step(diagnosed), order.id, part=part, quantity=qty, **ids
                )
            done = step(cursor + int(rng.integers(5 * MINUTE_MS, 12 * MINUTE_MS)))
            fixed, reason, notes = False, "part_missing", "ordered " + ", ".join(missing)
            order.missing = missing
        else:
            done = start + round(duration * 1000.0)
            if rng.random() < self.sc.pause_rate:
                paused = step(start + round(duration * rng.uniform(0.2, 0.7) * 1000.0))
                pause_ms = int(rng.integers(5 * MINUTE_MS, 25 * MINUTE_MS))
                why = ("waiting_for_customer", "waiting_for_access", "break", "collecting_tools")
                self.app(
                    tech,
                    k.WorkPaused,
                    paused,
                    order.id,
                    reason=why[int(rng.integers(len(why)))],
                    **ids,
                )
                self.app(tech, k.WorkResumed, step(paused + pause_ms), order.id, **ids)
                done += pause_ms
            for part, qty in order.parts.items():
                used = step(done - int(rng.integers(MINUTE_MS, 5 * MINUTE_MS)))
                self.app(tech, k.PartUsed, used, order.id, part=part, quantity=qty, **ids)
                tech.van[part] = max(0, tech.van.get(part, 0) - qty)
            if not revisit and rng.random() < self.sc.follow_up_rate:
                fixed, reason = False, "needs_follow_up"
                notes = "needs a second visit with a specialist"
            done = step(done)
        self.app(
            tech, k.WorkCompleted, done, order.id, fixed=fixed, reason=reason, notes=notes, **ids
        )
        tech.busy_until = done + int(rng.integers(*WRAP_UP_MS))
        if rng.random() >= self.sc.untapped_departure_rate:
            self.app(tech, k.TechnicianDeparted, tech.busy_until, order.id, **ids)
        self.wake(tech, tech.busy_until)
        self._refresh(tech)

        if fixed:
            order.status = "done"
            self._bill_and_rate(order, done, arrive, fixed=True)
        elif reason == "part_missing":
            self._plan_revisit(order, done)
        else:
            order.status = "deferred"
            self._to_tomorrow(order, done + 10 * MINUTE_MS, "dispatch", "follow-up visit needed")
            self._bill_and_rate(order, done, arrive, fixed=False)

    def _plan_revisit(self, order: Order, done: int) -> None:
        """The missing part is ordered; a second visit today if the shift can fit it."""
        at = done + int(self.rng.integers(3 * MINUTE_MS, 10 * MINUTE_MS))
        ready = done + round(self.rng.uniform(*PART_LEAD_MIN) * MINUTE_MS)
        window = order.window_end - order.window_start
        start = _ceil_to(ready, 30 * MINUTE_MS, self.p.midnight_ms)
        order.tech = None
        if start + window // 2 > self.planned_end:
            self._to_tomorrow(order, at, "dispatch", "revisit: part ordered")
            return
        order.window_start, order.window_end = start, start + window
        order.status = "waiting_part"
        self.emit(
            k.WorkOrderRescheduled,
            at,
            DISPATCH,
            order.id,
            work_order_id=order.id,
            window_start=order.window_start,
            window_end=order.window_end,
            requested_by="dispatch",
            reason="revisit: part ordered",
        )
        self.schedule(max(ready, at + MINUTE_MS), _REVISIT, order.index)

    def _bill_and_rate(self, order: Order, done: int, arrival: int, *, fixed: bool) -> None:
        """Invoice (fixed work only), the customer's rating, and maybe a dispute."""
        rng = self.rng
        late_min = max(0.0, (arrival - order.window_end) / MINUTE_MS)
        score_raw = (
            9.2
            - min(4.8, 0.08 * late_min)
            - (2.5 if not fixed else 0.0)
            - (1.2 if order.visits > 1 else 0.0)
            - (1.0 if order.calls else 0.0)
            + 1.3 * rng.standard_normal()
        )
        score = int(min(10, max(0, round(score_raw))))
        rated = rng.random() < self.sc.rating_response_rate
        if rated:
            comments = {
                0: ("Never again.", "Came very late and did not fix it.", ""),
                1: ("Took too long.", "Nobody told me they were late.", ""),
                2: ("Fine.", "", ""),
                3: ("Great, on time and quick.", "Very professional.", ""),
            }
            band = 0 if score <= 3 else 1 if score <= 6 else 2 if score <= 8 else 3
            self.emit(
                k.CustomerRated,
                done + round(25 * MINUTE_MS * math.exp(0.6 * rng.standard_normal())),
                CRM,
                order.id,
                work_order_id=order.id,
                customer_id=order.customer_id,
                score=score,
                comment=comments[band][int(rng.integers(3))],
            )
        if not fixed:
            return
        self.invoices += 1
        invoice_id = f"INV-{self.day}-{self.invoices:06d}"
        issued = done + int(rng.integers(2 * MINUTE_MS, 30 * MINUTE_MS))
        self.emit(
            k.InvoiceIssued,
            issued,
            BILLING,
            order.id,
            work_order_id=order.id,
            customer_id=order.customer_id,
            invoice_id=invoice_id,
            amount=round(order.value * rng.uniform(0.9, 1.25), 2),
        )
        risk = self.sc.dispute_rate * (4.0 if rated and score <= 6 else 1.0)
        risk *= 2.0 if order.overrun else 1.0
        if rng.random() < min(1.0, risk):
            reasons = (
                "amount higher than quoted",
                "charged for travel time",
                "technician arrived late",
                "work took longer than it should",
            )
            self.emit(
                k.InvoiceDisputed,
                issued + int(rng.integers(30 * MINUTE_MS, 240 * MINUTE_MS)),
                BILLING,
                order.id,
                work_order_id=order.id,
                invoice_id=invoice_id,
                reason=reasons[int(rng.integers(len(reasons)))],
            )


def simulate(
    params: SimParams, graph: RoadGraph, progress: Callable[[float], None] | None = None
) -> Simulation:
    """Simulate one day on ``graph``. Deterministic: same params and graph, same output.

    ``progress``, if given, is called now and then with the share of the simulated day done
    (0..1, non-decreasing, 1.0 last), e.g. to drive a progress bar; it cannot change the run.

    Cost is dominated by one bounded Dijkstra per driving leg and by the GPS fixes; a
    5,000-technician day (~3 million events) takes about 25 s, plus about 7 s to encode,
    on this project's 2-core machine (benchmarks/bench_simulator.py).
    """
    return _Run(params, World.for_graph(graph)).run(progress)
