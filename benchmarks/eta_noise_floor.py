"""The noise floor of issue 5's 30-minute ETA target: an oracle that knows the simulator.

Issue 5 asks that, at the 30-minute horizon on ``rush-hour`` and ``incidents``, the engine's
P50 MAE be at most 0.5x the crow-flies baseline's. This script asks whether *any* predictor
that does not know the future random draws can do that on this simulator, by scoring an
**oracle** on exactly the (visit, horizon) pairs ``fieldstream eval-eta`` scores the engine on.

    .venv/bin/python benchmarks/eta_noise_floor.py --scenario rush-hour --seeds 1,2,3 \\
        --technicians 30

Method
------
1. The repo's own evaluation runs unchanged: :func:`gateway.cli.evaluate_day` simulates the
   day, runs the pipeline and the ETA stage and calls :func:`gateway.evaluate.score`; the
   inputs handed to ``score`` (truth, fs.eta, fs.gps, sites, graph) are captured on the way.
2. The same day is simulated again by :class:`Recorder`, a subclass of the simulator's run
   that makes the same draws in the same order (checked: identical truth rows) and records
   the state the log does not carry: every technician's queue after each change (with each
   job's window in force), each visit's leg, set-up, work start, completion and end of
   wrap-up, the parts it needed and lacked, and the drives home.
3. The pairs are those ``score`` counts for the engine (a forecast issued at or before
   ``t = arrival - H`` and after the previous visit of the order, a GPS fix at or before
   ``t``). At each ``t`` the oracle forecasts the arrival by Monte Carlo (``--samples``
   draws) over the simulator's own laws, from the true state at ``t``:

   * *it knows*: where the technician is and what they are doing (driving to a job, in its
     set-up, working since when, wrapping up, waiting, driving home), the queue at ``t`` and
     each job's window, site, type, whether it is a revisit and whether the van lacks a part
     for it; the road graph, the time-of-day congestion profile of every edge, and every
     incident that has *started* by ``t`` (place, factor, end); the simulator's decision
     rules (leave so as to arrive 5 min before the window opens, planned with free-flow x1.15;
     drive the free-flow fastest path through traffic);
   * *it samples* what the simulator draws later: every job's duration (lognormal around its
     type's median, ``overrun_rate`` overruns of x1.3-2), the set-up, arrival tap, pause,
     part-handling steps and wrap-up, with the job on hand conditioned on what has happened
     (still in set-up, or working since its real start and not finished at ``t``, or in
     wrap-up since its real completion);
   * *it does not know*: the realised durations, incidents that start after ``t``, queue
     changes after ``t`` (urgent jobs inserted ahead, cancellations), GPS noise (it needs no
     GPS: it knows the true position).

   Its P50 is the sample median (the point forecast that minimises the expected absolute
   error given that information); P10/P90 give its window's coverage and width.
4. The oracle's forecasts are written as ``EtaUpdated`` events issued exactly at each ``t``
   and scored by the same :func:`gateway.evaluate.score`; the visit counts and the crow-flies
   and free-flow MAEs it returns must equal those of the engine's run (checked), so every
   column of the table is on the same pairs.

Breakdown: ``perfect travel`` also knows the incidents that start after ``t`` (travel time
is then exact for a given departure: congestion is deterministic in the simulator);
``perfect durations`` uses each job's realised set-up, work and wrap-up instead of sampling
them; ``both`` uses both, leaving only queue changes after ``t`` (and a 30 s rounding of
departure times in the travel look-up); it scores near zero, which checks the model of the
simulator's rules.

Caveat on the metric: horizons are measured back from the *actual* arrival, so the pairs are
selected on the outcome; the conditional median is optimal at a fixed clock time, not
necessarily on such a selection. A predictor biased towards short jobs can score a little
better at one horizon (and worse elsewhere); the oracle's figure is the honest floor.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import copy
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from eta_engine.roads import RoadGraph
from events import kinds as k
from events.base import Causation
from events.codec import decode_trusted, encode
from simulator.engine import (
    ARRIVE_EARLY_MS,
    PLAN_TRAVEL_FACTOR,
    SETUP_MS,
    WRAP_UP_MS,
    Simulation,
    _Run,
)
from simulator.scenarios import MINUTE_MS, Scenario, SimParams
from simulator.traffic import Traffic
from simulator.world import JobType, Leg, World

FloatArray = npt.NDArray[np.float64]
HORIZONS = (60, 30, 10)
DEPART_QUANTUM_MS = 30_000
"""Departure times are rounded to this for the travel-time look-up (cached per leg)."""
MODES: dict[str, tuple[bool, bool]] = {
    "oracle": (False, False),
    "perfect_travel": (True, False),
    "perfect_durations": (False, True),
    "both": (True, True),
}
"""Mode -> (knows future incidents, knows realised durations)."""
CAUSE = Causation("oracle", "fs.gps", 0, 0)


# -- recording the simulator's state ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VisitRecord:
    """One visit as the simulator ran it (times in ms since the epoch)."""

    order: int
    work_order_id: str
    visit: int
    tech: int
    en_route: int
    src: int
    site: int
    arrive: int
    start: int
    done: int
    busy: int
    """End of the wrap-up: the technician's next decision."""
    job: JobType
    revisit: bool
    picked: int
    missing: int


@dataclass(frozen=True, slots=True)
class HomeDrive:
    tech: int
    depart: int
    src: int
    home: int
    arrive: int


Queue = tuple[tuple[int, int], ...]
"""(order index, window start) of each queued job, in queue order."""


class Recorder(_Run):
    """The simulator's run, unchanged (same draws, same order), recording its state."""

    def __init__(self, params: SimParams, world: World) -> None:
        super().__init__(params, world)
        self.now = params.log_start_ms
        self.visit_records: list[VisitRecord] = []
        self.home_drives: list[HomeDrive] = []
        self.queue_log: dict[int, list[tuple[int, Queue]]] = defaultdict(list)

    # Every handler: remember the simulated time, for the queue snapshots.
    def _on_decide(self, at: int, i: int, token: int) -> None:
        self.now = at
        super()._on_decide(at, i, token)

    def _on_urgent(self, at: int, j: int, token: int) -> None:
        self.now = at
        super()._on_urgent(at, j, token)

    def _on_cancel(self, at: int, j: int, token: int) -> None:
        self.now = at
        super()._on_cancel(at, j, token)

    def _on_reschedule(self, at: int, j: int, token: int) -> None:
        self.now = at
        super()._on_reschedule(at, j, token)

    def _on_revisit(self, at: int, j: int, token: int) -> None:
        self.now = at
        super()._on_revisit(at, j, token)

    def _plan(self) -> None:
        self.now = self.p.log_start_ms + 45 * MINUTE_MS
        super()._plan()

    def _refresh(self, tech: Any) -> None:
        super()._refresh(tech)
        queue = tuple((j, self.orders[j].window_start) for j in tech.queue)
        self.queue_log[tech.index].append((self.now, queue))

    def _visit(self, tech: Any, order: Any, at: int, leg: Leg) -> None:
        revisit = order.visits > 0
        missing = [] if revisit else [p for p, q in order.parts.items() if tech.van.get(p, 0) < q]
        src = tech.node
        first = len(self.events)
        super()._visit(tech, order, at, leg)
        start = done = None
        for event in self.events[first:]:
            if getattr(event, "work_order_id", None) != order.id:
                continue
            if isinstance(event, k.WorkStarted):
                start = event.time
            elif isinstance(event, k.WorkCompleted):
                done = event.time
        assert start is not None and done is not None
        row = self.truth[-1]
        self.visit_records.append(
            VisitRecord(
                order=order.index,
                work_order_id=order.id,
                visit=order.visits,
                tech=tech.index,
                en_route=at,
                src=src,
                site=order.site,
                arrive=row["arrival_ms"],
                start=start,
                done=done,
                busy=tech.busy_until,
                job=order.job,
                revisit=revisit,
                picked=len(order.parts) - len(missing),
                missing=len(missing),
            )
        )

    def _drive_home(self, tech: Any, at: int) -> None:
        src = tech.node
        super()._drive_home(tech, at)
        self.home_drives.append(HomeDrive(tech.index, at, src, tech.home, tech.busy_until))


@dataclass
class Recording:
    """A recorded day: the simulation, its traffic and the state the oracle may read."""

    sim: Simulation
    world: World
    traffic: Traffic
    scenario: Scenario
    tech_index: dict[str, int]
    order_index: dict[str, int]
    order_sites: list[int]
    order_jobs: list[JobType]
    order_parts: list[int]
    shift_start: list[int]
    homes: list[int]
    by_tech: list[list[VisitRecord]]
    by_order: dict[int, list[VisitRecord]]
    home_drives: list[list[HomeDrive]]
    queues: list[list[tuple[int, Queue]]]

    @property
    def truth(self) -> list[dict[str, Any]]:
        return self.sim.truth


def record_day(params: SimParams, graph: RoadGraph) -> Recording:
    """Simulate ``params`` on ``graph`` as :func:`simulator.simulate` does, recording state."""
    world = World.for_graph(graph)
    run = Recorder(params, world)
    sim = run.run()
    n = len(run.techs)
    by_tech: list[list[VisitRecord]] = [[] for _ in range(n)]
    by_order: dict[int, list[VisitRecord]] = defaultdict(list)
    for v in run.visit_records:
        by_tech[v.tech].append(v)
        by_order[v.order].append(v)
    homes: list[list[HomeDrive]] = [[] for _ in range(n)]
    for h in run.home_drives:
        homes[h.tech].append(h)
    return Recording(
        sim=sim,
        world=world,
        traffic=run.traffic,
        scenario=params.scenario,
        tech_index={t.id: t.index for t in run.techs},
        order_index={o.id: o.index for o in run.orders},
        order_sites=[o.site for o in run.orders],
        order_jobs=[o.job for o in run.orders],
        order_parts=[len(o.parts) for o in run.orders],
        shift_start=[t.shift_start_ms for t in run.techs],
        homes=[t.home for t in run.techs],
        by_tech=by_tech,
        by_order=dict(by_order),
        home_drives=homes,
        queues=[run.queue_log.get(i, []) for i in range(n)],
    )


# -- travel times as the simulator applies them -----------------------------------------------


class Travel:
    """Drive times through the simulator's own :meth:`Traffic.drive`, with a chosen set of
    incidents (those started by a given time, or all of them), cached per leg."""

    def __init__(self, world: World, traffic: Traffic) -> None:
        self.world = world
        self.base = traffic
        self.starts = np.array([i.start_ms for i in traffic.incidents], dtype=np.int64)
        self._legs: dict[tuple[int, int], Leg] = {}
        self._hits: dict[tuple[int, int], list[int]] = {}
        self._traffic: dict[tuple[int, ...], Traffic] = {}
        self._cache: dict[tuple[int, int, tuple[int, ...]], dict[int, float]] = {}

    def leg(self, src: int, dst: int) -> Leg:
        key = (src, dst)
        leg = self._legs.get(key)
        if leg is None:
            leg = self._legs[key] = self.world.fastest_path(src, dst)
            self._hits[key] = [
                i
                for i, incident in enumerate(self.base.incidents)
                if len(leg.edges) and np.isin(leg.edges, incident.edges).any()
            ]
        return leg

    def _with(self, src: int, dst: int, known_at: int | None) -> tuple[Leg, Traffic, Any]:
        leg = self.leg(src, dst)
        subset = tuple(
            i for i in self._hits[(src, dst)] if known_at is None or self.starts[i] <= known_at
        )
        traffic = self._traffic.get(subset)
        if traffic is None:
            traffic = copy.copy(self.base)
            incidents = tuple(self.base.incidents[i] for i in subset)
            traffic.incidents = incidents
            traffic._starts = np.array([i.start_ms for i in incidents], dtype=np.int64)
            traffic._ends = np.array([i.end_ms for i in incidents], dtype=np.int64)
            self._traffic[subset] = traffic
        return leg, traffic, (src, dst, subset)

    @staticmethod
    def _drive(traffic: Traffic, leg: Leg, depart: int) -> float:
        entry, dur = traffic.drive(leg.edges, depart)
        return float(entry[-1] + dur[-1]) if len(dur) else 0.0

    def exact_ms(self, src: int, dst: int, depart: int, known_at: int | None) -> int:
        """Drive time (ms) of the leg leaving at ``depart``, as the simulator rounds it."""
        leg, traffic, _ = self._with(src, dst, known_at)
        return round(self._drive(traffic, leg, depart) * 1000.0)

    def ms(self, src: int, dst: int, departs: FloatArray, known_at: int | None) -> FloatArray:
        """Drive times (ms) for many departures (rounded to :data:`DEPART_QUANTUM_MS`)."""
        leg, traffic, key = self._with(src, dst, known_at)
        cache = self._cache.setdefault(key, {})
        q = np.rint(departs / DEPART_QUANTUM_MS).astype(np.int64)
        uniq, inverse = np.unique(q, return_inverse=True)
        values = np.empty(len(uniq))
        for n, u in enumerate(uniq.tolist()):
            v = cache.get(u)
            if v is None:
                v = cache[u] = self._drive(traffic, leg, u * DEPART_QUANTUM_MS) * 1000.0
            values[n] = v
        out: FloatArray = values[inverse.reshape(-1)]
        return out


# -- the oracle -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pair:
    """One scored (visit, horizon): the forecast is made at ``t = arrival - horizon``."""

    row: Mapping[str, Any]
    horizon: int
    t: int


@dataclass(slots=True)
class OracleStats:
    pairs: int = 0
    target_not_queued: int = 0
    conditioning_fallbacks: int = 0


class Oracle:
    """Median arrival by Monte Carlo over the simulator's laws, from the true state at ``t``.

    ``perfect_travel``: also knows incidents that start after ``t``. ``perfect_durations``:
    uses every job's realised set-up, work and wrap-up (a cheat, for the breakdown)."""

    def __init__(
        self,
        recording: Recording,
        *,
        perfect_travel: bool = False,
        perfect_durations: bool = False,
        samples: int = 1000,
        seed: int = 0,
        travel: Travel | None = None,
    ) -> None:
        self.rec = recording
        self.sc = recording.scenario
        self.perfect_travel = perfect_travel
        self.perfect_durations = perfect_durations
        self.n = samples
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.travel = travel or Travel(recording.world, recording.traffic)
        self.stats = OracleStats()
        self._visit_times = [[v.en_route for v in vs] for vs in recording.by_tech]
        self._home_times = [[h.depart for h in hs] for hs in recording.home_drives]
        self._queue_times = [[at for at, _ in qs] for qs in recording.queues]

    # ---------------------------------------------------------------- on-site time samples

    def _u(self, lo: float, hi: float, n: int) -> FloatArray:
        return self.rng.uniform(lo, hi, n)

    def _onsite(
        self,
        arrive: FloatArray,
        job: JobType,
        *,
        revisit: bool,
        picked: int,
        missing: int,
        start: float | None = None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``(work start, completion, end of wrap-up)`` samples, as :meth:`_Run._visit`
        draws them; ``start`` fixes the work start (already observed)."""
        n, sc = len(arrive), self.sc
        if start is None:
            tapped = self.rng.random(n) >= sc.untapped_arrival_rate
            cursor = np.where(tapped, arrive + self._u(5_000, 60_000, n), arrive)
            begin = np.maximum(arrive + self._u(*SETUP_MS, n), cursor + 5_000)
        else:
            begin = np.full(n, float(start))
        cursor = begin.copy()
        base = job.median_min * 60.0 * np.exp(job.spread * self.rng.standard_normal(n))
        overrun = self.rng.random(n) < sc.overrun_rate
        base = np.where(overrun, base * self._u(*sc.overrun_factor, n), base)
        duration = np.maximum(600.0, base) * (0.5 if revisit else 1.0)

        def step(at_least: FloatArray) -> FloatArray:
            return np.maximum(at_least, cursor + self._u(5_000, 30_000, n))

        for _ in range(picked):
            cursor = step(cursor)
        if missing:
            diagnosed = begin + duration * self._u(0.2, 0.4, n) * 1000.0
            for _ in range(missing):
                cursor = step(diagnosed)
            cursor = step(cursor + self._u(5 * MINUTE_MS, 12 * MINUTE_MS, n))
            done = cursor
        else:
            done = begin + duration * 1000.0
            paused = self.rng.random(n) < sc.pause_rate
            at = step(begin + duration * self._u(0.2, 0.7, n) * 1000.0)
            pause = self._u(5 * MINUTE_MS, 25 * MINUTE_MS, n)
            resumed = np.maximum(at + pause, at + self._u(5_000, 30_000, n))
            cursor = np.where(paused, resumed, cursor)
            done = np.where(paused, done + pause, done)
            for _ in range(picked):
                cursor = step(done - self._u(MINUTE_MS, 5 * MINUTE_MS, n))
            done = step(done)
        busy = done + self._u(*WRAP_UP_MS, n)
        return begin, done, busy

    def _onsite_given(self, v: VisitRecord, t: int) -> FloatArray:
        """End of wrap-up samples for the job on hand at ``t`` (arrived, not yet free)."""
        if self.perfect_durations:
            return np.full(self.n, float(v.busy))
        if t >= v.done:  # in wrap-up since the (observed) completion
            lo, hi = max(v.done + WRAP_UP_MS[0], t + 1), v.done + WRAP_UP_MS[1]
            return self._u(lo, max(lo + 1, hi), self.n)
        start = None if t < v.start else v.start
        kept: list[FloatArray] = []
        total = 0
        for _ in range(40):
            begin, done, busy = self._onsite(
                np.full(self.n, float(v.arrive)),
                v.job,
                revisit=v.revisit,
                picked=v.picked,
                missing=v.missing,
                start=start,
            )
            ok = (begin > t) if start is None else (done > t)
            kept.append(busy[ok])
            total += int(ok.sum())
            if total >= self.n:
                break
        pool = np.concatenate(kept)
        if len(pool) == 0:
            self.stats.conditioning_fallbacks += 1
            return np.full(self.n, float(t + WRAP_UP_MS[0]))
        return pool[: self.n] if len(pool) >= self.n else self.rng.choice(pool, self.n)

    def _job_visit(self, order: int, t: int) -> VisitRecord | None:
        """The order's first visit that set off after ``t`` (its traits are known state)."""
        for v in self.rec.by_order.get(order, []):
            if v.en_route > t:
                return v
        return None

    # ------------------------------------------------------------------------- forecast

    def forecast(self, pair: Pair) -> tuple[int, int, int]:
        """``(p10, p50, p90)`` of the arrival of ``pair``'s visit, forecast at ``pair.t``."""
        self.stats.pairs += 1
        rec, row, t = self.rec, pair.row, pair.t
        known = None if self.perfect_travel else t
        ti = rec.tech_index[row["technician_id"]]
        target = rec.order_index[row["work_order_id"]]
        visits = rec.by_tech[ti]
        i = bisect.bisect_right(self._visit_times[ti], t) - 1
        last = visits[i] if i >= 0 else None
        h = bisect.bisect_right(self._home_times[ti], t) - 1
        home = rec.home_drives[ti][h] if h >= 0 else None

        if last is not None and (last.work_order_id, last.visit) == (
            row["work_order_id"],
            row["visit"],
        ):  # en route to this visit: the drive is all that is left
            arrive = last.en_route + self.travel.exact_ms(last.src, last.site, last.en_route, known)
            arrive = max(arrive, t + 1)
            return arrive, arrive, arrive

        free: FloatArray
        if last is not None and (home is None or last.en_route >= home.depart):
            node = last.site
            if t < last.arrive:  # driving to another job first
                arrive = last.en_route + self.travel.exact_ms(
                    last.src, last.site, last.en_route, known
                )
                arrive = max(arrive, t + 1)
                if self.perfect_durations:
                    free = np.full(self.n, float(arrive + last.busy - last.arrive))
                else:
                    _, _, free = self._onsite(
                        np.full(self.n, float(arrive)),
                        last.job,
                        revisit=last.revisit,
                        picked=last.picked,
                        missing=last.missing,
                    )
            elif t < last.busy:
                free = self._onsite_given(last, t)
            else:
                free = np.full(self.n, float(t))
        elif home is not None:
            node = home.home
            if t < home.arrive:
                arrive = home.depart + self.travel.exact_ms(home.src, home.home, home.depart, known)
                free = np.full(self.n, float(max(arrive, t + 1)))
            else:
                free = np.full(self.n, float(t))
        else:  # at home before the first job of the day
            node = rec.homes[ti]
            free = np.full(self.n, float(max(t, rec.shift_start[ti] + 150_000)))

        queue = self._queue_at(ti, target, t)
        for order, window_start in queue:
            site = rec.order_sites[order]
            leg = self.travel.leg(node, site)
            planned = round(leg.free_s * PLAN_TRAVEL_FACTOR * 1000.0)
            depart = float(window_start - planned - ARRIVE_EARLY_MS)
            go = np.where(depart > free + 60_000, depart, free)
            arrive_s = go + self.travel.ms(node, site, go, known)
            if order == target:
                p10, p50, p90 = np.percentile(arrive_s, [10, 50, 90])
                return round(p10), round(p50), round(p90)
            v = self._job_visit(order, t)
            if self.perfect_durations and v is not None:
                free = arrive_s + (v.busy - v.arrive)
            else:
                _, _, free = self._onsite(
                    arrive_s,
                    rec.order_jobs[order],
                    revisit=v.revisit if v is not None else False,
                    picked=v.picked if v is not None else rec.order_parts[order],
                    missing=v.missing if v is not None else 0,
                )
            node = site
        raise AssertionError("unreachable: the target is the queue's last job")

    def _queue_at(self, ti: int, target: int, t: int) -> list[tuple[int, int]]:
        """The jobs up to and including ``target`` in the technician's queue at ``t``.

        If the target is not queued at ``t`` (assigned a moment later: an urgent job, a
        revisit, a customer's reschedule) the first later queue holding it is used."""
        snaps = self.rec.queues[ti]
        j = max(0, bisect.bisect_right(self._queue_times[ti], t) - 1)
        for n, (at, queue) in enumerate(snaps[j:]):
            ids = [o for o, _ in queue]
            if target in ids:
                if n > 0 or at > t:
                    self.stats.target_not_queued += 1
                return list(queue[: ids.index(target) + 1])
        raise AssertionError("a visit's order is always queued before it sets off")


# -- the evaluation's pairs and scoring ---------------------------------------------------------


def engine_pairs(
    *,
    truth: Sequence[Mapping[str, Any]],
    eta_records: Iterable[bytes],
    gps_records: Iterable[bytes],
    sites: Mapping[str, tuple[float, float]],
    horizons_min: Sequence[int] = HORIZONS,
) -> list[Pair]:
    """The (visit, horizon) pairs :func:`gateway.evaluate.score` counts for the engine.

    Its selection rules, with its own :class:`~gateway.evaluate.Track`; the caller checks
    that scoring the oracle on these pairs counts the same visits with the same baselines."""
    from gateway.evaluate import MINUTE_MS as EVAL_MINUTE_MS
    from gateway.evaluate import Track

    issued: dict[str, list[int]] = defaultdict(list)
    for raw in eta_records:
        event = decode_trusted(raw)
        if isinstance(event, k.EtaUpdated):
            issued[event.work_order_id].append(event.time)
    for times in issued.values():
        times.sort()
    track = Track.of(gps_records)
    rows = sorted(truth, key=lambda r: (r["work_order_id"], r["visit"]))
    previous: dict[str, int] = {}
    pairs: list[Pair] = []
    for row in rows:
        wo = row["work_order_id"]
        start = previous.get(wo, 0)
        previous[wo] = row["arrival_ms"]
        times = issued.get(wo, [])
        for h in horizons_min:
            t = row["arrival_ms"] - h * EVAL_MINUTE_MS
            if t < row["en_route_ms"] - 6 * 60 * EVAL_MINUTE_MS:
                continue
            i = bisect.bisect_right(times, t) - 1
            if i < 0 or times[i] < start:
                continue
            if wo not in sites or track.at(row["technician_id"], t) is None:
                continue
            pairs.append(Pair(row, h, t))
    return pairs


def all_pairs(
    truth: Sequence[Mapping[str, Any]], start_ms: int, horizons_min: Sequence[int] = HORIZONS
) -> list[Pair]:
    """Every (visit, horizon) with ``t`` after ``start_ms`` (no engine needed: for tests)."""
    return [
        Pair(row, h, row["arrival_ms"] - h * MINUTE_MS)
        for row in truth
        for h in horizons_min
        if row["arrival_ms"] - h * MINUTE_MS >= start_ms
    ]


def duration_check(oracle: Oracle) -> dict[str, float]:
    """Does the oracle's on-site law match the simulator's draws? For every visit of the day,
    the share of sampled on-site times (arrival to end of wrap-up) below the realised one
    (the PIT: uniform if the law is right) and the P10-P90 coverage (0.8 if right)."""
    pits = []
    for visits in oracle.rec.by_tech:
        for v in visits:
            _, _, busy = oracle._onsite(
                np.full(oracle.n, float(v.arrive)),
                v.job,
                revisit=v.revisit,
                picked=v.picked,
                missing=v.missing,
            )
            pits.append(float(np.mean(busy < v.busy)))
    pit = np.array(pits)
    return {
        "visits": len(pit),
        "coverage": float(np.mean((pit > 0.1) & (pit < 0.9))),
        "mean_pit": float(pit.mean()),
    }


def forecast_records(oracle: Oracle, pairs: Sequence[Pair]) -> list[bytes]:
    """The oracle's forecasts as ``EtaUpdated`` records issued at each pair's ``t``."""
    out = []
    for n, pair in enumerate(pairs):
        p10, p50, p90 = oracle.forecast(pair)
        row = pair.row
        out.append(
            encode(
                k.EtaUpdated(
                    id=f"oracle-{n}",
                    source="oracle",
                    time=pair.t,
                    subject=row["work_order_id"],
                    causation=CAUSE,
                    work_order_id=row["work_order_id"],
                    technician_id=row["technician_id"],
                    p10=p10,
                    p50=p50,
                    p90=p90,
                    window_start=row["window_start_ms"],
                    window_end=row["window_end_ms"],
                    reason="oracle",
                    model_version="oracle",
                )
            )
        )
    return out


def abs_errors_min(oracle: Oracle, pairs: Sequence[Pair]) -> dict[int, list[float]]:
    """Absolute P50 errors (minutes) per horizon, without the evaluation (for tests)."""
    out: dict[int, list[float]] = defaultdict(list)
    for pair in pairs:
        _, p50, _ = oracle.forecast(pair)
        out[pair.horizon].append(abs(p50 - pair.row["arrival_ms"]) / MINUTE_MS)
    return out


@contextmanager
def _capturing_score(captured: dict[str, Any]) -> Any:
    """Let :func:`gateway.cli.evaluate_day` run as is, keeping what it hands to ``score``."""
    from gateway import evaluate

    real = evaluate.score

    def spy(**kwargs: Any) -> dict[str, Any]:
        for key in ("eta_records", "alert_records", "gps_records"):
            kwargs[key] = list(kwargs[key])
        captured.update(kwargs)
        return real(**kwargs)

    evaluate.score = spy
    try:
        yield
    finally:
        evaluate.score = real


def run_day(
    scenario: str, seed: int, technicians: int, hours: float, samples: int, graph: RoadGraph
) -> dict[str, Any]:
    """Engine, baselines and the oracle's modes on one simulated day (see the docstring)."""
    from gateway.cli import _sim_params, build_parser, evaluate_day
    from gateway.evaluate import score

    argv = ["eval-eta", "--scenario", scenario, "--seed", str(seed)]
    argv += ["--technicians", str(technicians), "--hours", str(hours)]
    args = build_parser().parse_args(argv)
    captured: dict[str, Any] = {}
    clock = time.perf_counter()
    with _capturing_score(captured):
        engine = asyncio.run(evaluate_day(args, False))
    eval_s = time.perf_counter() - clock

    recording = record_day(_sim_params(args), graph)
    if recording.truth != captured["truth"]:
        raise RuntimeError("the recorded day differs from the evaluated one")
    horizons = captured["horizons_min"]
    pairs = engine_pairs(
        truth=captured["truth"],
        eta_records=captured["eta_records"],
        gps_records=captured["gps_records"],
        sites=captured["sites"],
        horizons_min=horizons,
    )
    travel = Travel(recording.world, recording.traffic)
    modes: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for mode, (perfect_travel, perfect_durations) in MODES.items():
        oracle = Oracle(
            recording,
            perfect_travel=perfect_travel,
            perfect_durations=perfect_durations,
            samples=samples,
            seed=seed,
            travel=travel,
        )
        result = score(
            truth=captured["truth"],
            eta_records=forecast_records(oracle, pairs),
            alert_records=[],
            gps_records=captured["gps_records"],
            sites=captured["sites"],
            graph=captured["graph"],
            horizons_min=horizons,
        )
        for h in map(str, horizons):
            mine, theirs = result["horizons"][h], engine["horizons"][h]
            same = [mine[key] == theirs[key] for key in ("visits", "crowflies_mae_min")]
            if not all(same):
                raise RuntimeError(f"oracle and engine pairs differ at {h} min: {mine} {theirs}")
        modes[mode] = result
        stats[mode] = {
            "pairs": oracle.stats.pairs,
            "target_not_queued": oracle.stats.target_not_queued,
            "conditioning_fallbacks": oracle.stats.conditioning_fallbacks,
        }
    laws = duration_check(Oracle(recording, samples=samples, seed=seed + 1000, travel=travel))
    return {
        "scenario": scenario,
        "seed": seed,
        "duration_check": laws,
        "technicians": technicians,
        "visits": engine["visits"],
        "eval_s": round(eval_s, 1),
        "oracle_s": round(time.perf_counter() - clock - eval_s, 1),
        "engine": engine,
        "modes": modes,
        "stats": stats,
    }


# -- reporting ----------------------------------------------------------------------------------


def _pooled(days: Sequence[Mapping[str, Any]], get: Any, h: str) -> tuple[int, float | None]:
    """Visit-weighted mean over days of one MAE (``get(day)`` -> the horizon's summary)."""
    n = total = 0.0
    for day in days:
        summary = get(day)[h]
        if summary["visits"] and summary["value"] is not None:
            n += summary["visits"]
            total += summary["visits"] * summary["value"]
    return int(n), (total / n if n else None)


def _column(key: str, mode: str | None = None, state: str | None = None) -> Any:
    def get(day: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        result = day["engine"] if mode is None else day["modes"][mode]
        out = {}
        for h, summary in result["horizons"].items():
            s = summary if state is None else result["by_state"][h][state]
            out[h] = {"visits": s["visits"], "value": s[key]}
        return out

    return get


COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("oracle", "engine_mae_min", "oracle"),
    ("engine", "engine_mae_min", None),
    ("crow", "crowflies_mae_min", None),
    ("free", "freeflow_mae_min", None),
    ("+travel", "engine_mae_min", "perfect_travel"),
    ("+durations", "engine_mae_min", "perfect_durations"),
    ("both", "engine_mae_min", "both"),
)


def _fmt(x: float | None, width: int = 8, digits: int = 2) -> str:
    return f"{'-':>{width}}" if x is None or math.isnan(x) else f"{x:>{width}.{digits}f}"


def table(days: Sequence[Mapping[str, Any]], state: str | None = None) -> list[str]:
    """Lines of the summary table: one block per day, then the pooled days."""
    head = f"{'seed':>6} {'H':>4} {'pairs':>6}" + "".join(f"{c[0]:>11}" for c in COLUMNS)
    head += f"{'orc/crow':>10}{'eng/crow':>10}{'orc cov':>9}{'orc wid':>9}"
    lines = [head]
    groups: list[tuple[str, Sequence[Mapping[str, Any]]]] = [(str(d["seed"]), [d]) for d in days]
    if len(days) > 1:
        groups.append(("all", days))
    for label, group in groups:
        for h in map(str, group[0]["engine"]["horizons"]):
            values = []
            n = 0
            for _, key, mode in COLUMNS:
                n_col, v = _pooled(group, _column(key, mode, state), h)
                n = max(n, n_col)
                values.append(v)
            _, cov = _pooled(group, _column("coverage", "oracle", state), h)
            _, wid = _pooled(group, _column("median_width_min", "oracle", state), h)
            oracle, engine, crow = values[0], values[1], values[2]
            ratio_o = oracle / crow if oracle is not None and crow else None
            ratio_e = engine / crow if engine is not None and crow else None
            line = f"{label:>6} {h:>4} {n:>6}" + "".join(_fmt(v, 11) for v in values)
            line += _fmt(ratio_o, 10) + _fmt(ratio_e, 10) + _fmt(cov, 9) + _fmt(wid, 9)
            lines.append(line)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="rush-hour,incidents", help="comma-separated")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--technicians", type=int, default=30)
    parser.add_argument("--hours", type=float, default=9.0)
    parser.add_argument("--samples", type=int, default=1000, help="Monte Carlo draws per pair")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this file")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    scenarios = [s for s in args.scenario.split(",") if s]
    graph = RoadGraph.default()
    everything: list[dict[str, Any]] = []
    for scenario in scenarios:
        days = []
        for seed in seeds:
            day = run_day(scenario, seed, args.technicians, args.hours, args.samples, graph)
            days.append(day)
            print(
                f"  {scenario} seed {seed}: {day['visits']} visits, eval {day['eval_s']} s, "
                f"oracle {day['oracle_s']} s, oracle stats {day['stats']['oracle']}",
                file=sys.stderr,
            )
        everything += days
        title = (
            f"P50 MAE (min) on eval-eta's pairs: {scenario}, {args.technicians} technicians, "
            f"seeds {args.seeds}; target at H=30: engine <= 0.5 x crow"
        )
        print(f"\n{title}")
        print("\n".join(table(days)))
        n = sum(d["duration_check"]["visits"] for d in days)
        cov = sum(d["duration_check"]["coverage"] * d["duration_check"]["visits"] for d in days)
        pit = sum(d["duration_check"]["mean_pit"] * d["duration_check"]["visits"] for d in days)
        print(
            f"  check of the oracle's on-site law on all {n} visits: P10-P90 covers "
            f"{cov / n:.3f} of realised on-site times (0.8 if right), mean PIT {pit / n:.3f}"
            " (0.5 if right)"
        )
        for state in ("not_departed", "en_route"):
            print(f"\n  ... only pairs where the technician is {state.replace('_', ' ')} at t")
            print("\n".join("  " + line for line in table(days, state)))
    print(
        "\ncolumns: oracle = true state + known incidents, sampled durations; engine, crow, free"
        " = eval-eta's;\n+travel = oracle that also knows future incidents; +durations = oracle"
        " with realised job times;\nboth = both (checks the oracle's model of the simulator);"
        " orc cov / orc wid = oracle P10-P90 coverage, median width"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(everything, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
