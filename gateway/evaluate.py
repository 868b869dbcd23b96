"""Scoring the ETA engine against ground truth, with two baselines in the same run.

``fieldstream eval-eta`` simulates a day into a fresh temporary store, runs the pipeline and
the ETA stage over it exactly as live, then reads back fs.eta, fs.alerts and fs.gps and scores
them against the simulator's truth file (which never touches the pipeline).

For each visit and each horizon H (minutes before the actual arrival), the engine's forecast is
the latest ``EtaUpdated`` for that work order published at or before ``arrival - H`` (and after
the previous visit's arrival). The baselines forecast at the same moment from the
technician's last fix at or before it:

* **crow-flies**: straight-line distance at a constant speed fitted on the same day (total
  straight-line distance over total driving time of every visit);
* **free-flow**: shortest-path time on the road graph at free-flow speeds, no live learning.

Both are *travel-only* forecasts, as the issue defines them (what a map, or a routing engine
without traffic, would say): ``now + drive from where the van is``. They know nothing of the
technician's queue or of the job still under way, so while the technician is still on a
previous job (most visits 30 or 60 minutes before their arrival) they forecast the arrival too
early by the rest of that job. The engine chains the queue and has to forecast how long that
job will go on, which nothing on the log reveals beyond its type and the time already spent:
that error dominates its MAE at 30 and 60 minutes. ``by_state`` therefore splits every horizon
by what the technician was doing at the forecast moment: ``en_route`` to this visit, or
``not_departed`` (on a previous job, or waiting to leave).

Reported per horizon: MAE of P50 (minutes) for the engine and both baselines, the coverage of
the P10-P90 window and its median width. For late alerts: recall (late visits alerted before
their promised window ended), precision (alerted visits that were really late), the median
lead time (window end minus first alert), and the share of alerts that flapped (raised,
cleared and raised again within 10 minutes). An alert concerns the visit of its work order
that followed it (the first arrival after it, and after the arrival before); an alert
followed by no arrival that day (the visit moved to another day, cancelled) counts as an
alerted visit that was not late.

Note on the horizons: they are measured back from the *actual* arrival, so each one looks at
the forecasts made when the arrival was in fact that near. For a technician on a job, that
selects the moments shortly before the job happened to end: an honest forecast of the rest of
the job (the median given the time spent) is then too late on average, and one biased towards
short jobs scores better there while being worse over the whole day. Read the MAE at a fixed
horizon with that in mind.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregates.technician import distance_m
from eta_engine.roads import RoadGraph
from events import kinds as k
from events.codec import decode_trusted

MINUTE_MS = 60_000
FLAP_WINDOW_MS = 10 * MINUTE_MS
EN_ROUTE = "en_route"
NOT_DEPARTED = "not_departed"
STATES = (EN_ROUTE, NOT_DEPARTED)


@dataclass(frozen=True, slots=True)
class Forecast:
    issued: int
    p10: int
    p50: int
    p90: int


@dataclass(slots=True)
class HorizonScore:
    n: int = 0
    engine_abs_min: list[float] = field(default_factory=list)
    crowflies_abs_min: list[float] = field(default_factory=list)
    freeflow_abs_min: list[float] = field(default_factory=list)
    covered: int = 0
    widths_min: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int | None]:
        def mean(values: list[float]) -> float | None:
            return round(statistics.fmean(values), 3) if values else None

        return {
            "visits": self.n,
            "engine_mae_min": mean(self.engine_abs_min),
            "crowflies_mae_min": mean(self.crowflies_abs_min),
            "freeflow_mae_min": mean(self.freeflow_abs_min),
            "coverage": round(self.covered / self.n, 4) if self.n else None,
            "median_width_min": (
                round(statistics.median(self.widths_min), 2) if self.widths_min else None
            ),
        }


class Track:
    """Each technician's fixes in time order, for "where was the van at time t"."""

    def __init__(self) -> None:
        self._times: dict[str, list[int]] = defaultdict(list)
        self._points: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def add(self, technician: str, at: int, lat: float, lon: float) -> None:
        self._times[technician].append(at)
        self._points[technician].append((lat, lon))

    def finish(self) -> None:
        for tid, times in self._times.items():
            order = sorted(range(len(times)), key=times.__getitem__)
            self._times[tid] = [times[i] for i in order]
            self._points[tid] = [self._points[tid][i] for i in order]

    def at(self, technician: str, t: int) -> tuple[float, float] | None:
        times = self._times.get(technician)
        if not times:
            return None
        i = bisect.bisect_right(times, t) - 1
        return self._points[technician][i] if i >= 0 else None

    @classmethod
    def of(cls, gps_records: Iterable[bytes]) -> Track:
        """The track of every GpsPinged among ``gps_records`` (encoded events)."""
        track = cls()
        for raw in gps_records:
            ping = decode_trusted(raw)
            if isinstance(ping, k.GpsPinged):
                track.add(ping.technician_id, ping.time, ping.lat, ping.lon)
        track.finish()
        return track


def score(
    *,
    truth: Sequence[Mapping[str, Any]],
    eta_records: Iterable[bytes],
    alert_records: Iterable[bytes],
    gps_records: Iterable[bytes] | Track,
    sites: Mapping[str, tuple[float, float]],
    graph: RoadGraph,
    horizons_min: Sequence[int] = (60, 30, 10),
    free_flow: Mapping[tuple[tuple[float, float], tuple[float, float]], float] | None = None,
) -> dict[str, Any]:
    """Score forecasts and alerts against ``truth`` (one row per visit, simulator format).

    ``gps_records``: the fixes' records, or the :class:`Track` already made of them.

    ``free_flow``: free-flow seconds already known, by (site, position) (see
    :func:`candidate_pairs`); the free-flow baseline of any other pair is computed here."""
    forecasts: dict[str, list[Forecast]] = defaultdict(list)
    for raw in eta_records:
        event = decode_trusted(raw)
        if isinstance(event, k.EtaUpdated):
            forecasts[event.work_order_id].append(
                Forecast(event.time, event.p10, event.p50, event.p90)
            )
    for items in forecasts.values():
        items.sort(key=lambda f: f.issued)
    track = gps_records if isinstance(gps_records, Track) else Track.of(gps_records)

    rows = sorted(truth, key=lambda r: (r["work_order_id"], r["visit"]))
    previous_arrival: dict[str, int] = {}
    visit_start: dict[tuple[str, int], int] = {}
    for row in rows:
        wo = row["work_order_id"]
        visit_start[(wo, row["visit"])] = previous_arrival.get(wo, 0)
        previous_arrival[wo] = row["arrival_ms"]

    # Crow-flies speed fitted on the same day: straight-line metres over driving seconds.
    metres = seconds = 0.0
    for row in rows:
        site = sites.get(row["work_order_id"])
        start = track.at(row["technician_id"], row["en_route_ms"])
        if site is None or start is None or row["travel_s"] <= 0:
            continue
        metres += distance_m(start[0], start[1], site[0], site[1])
        seconds += row["travel_s"]
    crow_speed = metres / seconds if seconds > 0 else 8.0

    # The pairs scored, in order; then the free-flow baseline for all of them at once: the
    # nearest nodes in one query each, and per destination one Dijkstra search, bounded by
    # the longest horizon asked of it (see RoadGraph.times_to: the times do not depend on it).
    pairs: list[tuple[int, str, Forecast, int, int, float]] = []
    site_at: list[tuple[float, float]] = []
    position_at: list[tuple[float, float]] = []
    issued_of = {wo: [f.issued for f in items] for wo, items in forecasts.items()}
    for row, h, t, site, position in _points(rows, sites, track, horizons_min):
        wo = row["work_order_id"]
        items = forecasts.get(wo, [])
        i = bisect.bisect_right(issued_of.get(wo, []), t) - 1
        if i < 0 or items[i].issued < visit_start[(wo, row["visit"])]:
            continue
        state = EN_ROUTE if row["en_route_ms"] <= t else NOT_DEPARTED
        crow = distance_m(position[0], position[1], site[0], site[1]) / crow_speed
        pairs.append((h, state, items[i], row["arrival_ms"], t, crow))
        site_at.append(site)
        position_at.append(position)
    # Those computed ahead (for every pair that might be scored) are taken; the others now.
    ahead = [(p[3] - p[4]) / 1000.0 for p in pairs]
    known = free_flow or {}
    free_s = [known.get(key, math.nan) for key in zip(site_at, position_at, strict=True)]
    missing = [j for j, value in enumerate(free_s) if math.isnan(value)]
    if missing:
        found = free_flow_s(
            graph,
            [site_at[j] for j in missing],
            [position_at[j] for j in missing],
            [ahead[j] for j in missing],
        )
        for j, value in zip(missing, found, strict=True):
            free_s[j] = value

    scores = {h: HorizonScore() for h in horizons_min}
    by_state = {h: {state: HorizonScore() for state in STATES} for h in horizons_min}
    for (h, state, forecast, arrival, t, crow), free in zip(pairs, free_s, strict=True):
        for s in (scores[h], by_state[h][state]):
            s.n += 1
            s.engine_abs_min.append(abs(forecast.p50 - arrival) / MINUTE_MS)
            s.covered += forecast.p10 <= arrival <= forecast.p90
            s.widths_min.append((forecast.p90 - forecast.p10) / MINUTE_MS)
            s.crowflies_abs_min.append(abs(t + crow * 1000 - arrival) / MINUTE_MS)
            if math.isfinite(free):
                s.freeflow_abs_min.append(abs(t + free * 1000 - arrival) / MINUTE_MS)

    alerts = _score_alerts(rows, alert_records)
    return {
        "visits": len(rows),
        "crowflies_speed_mps": round(crow_speed, 2),
        "horizons": {str(h): scores[h].summary() for h in horizons_min},
        "alerts": alerts,
        "by_state": {
            str(h): {state: by_state[h][state].summary() for state in STATES} for h in horizons_min
        },
    }


def candidate_pairs(
    truth: Sequence[Mapping[str, Any]],
    sites: Mapping[str, tuple[float, float]],
    track: Track,
    horizons_min: Sequence[int],
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], list[float]]:
    """Every (site, position, seconds ahead) :func:`score` may take the free-flow baseline
    of, known before any forecast is: which of them it takes depends on the forecasts."""
    site_at: list[tuple[float, float]] = []
    position_at: list[tuple[float, float]] = []
    ahead: list[float] = []
    for row, _h, t, site, position in _points(truth, sites, track, horizons_min):
        site_at.append(site)
        position_at.append(position)
        ahead.append((row["arrival_ms"] - t) / 1000.0)
    return site_at, position_at, ahead


def _points(
    rows: Sequence[Mapping[str, Any]],
    sites: Mapping[str, tuple[float, float]],
    track: Track,
    horizons_min: Sequence[int],
) -> Iterator[tuple[Mapping[str, Any], int, int, tuple[float, float], tuple[float, float]]]:
    """(row, horizon, time, site, position) for each visit and horizon that can be scored,
    forecasts aside: the visit's site is known, the time is at most six hours before it set
    off, and the van's position at that time is known."""
    for row in rows:
        site = sites.get(row["work_order_id"])
        if site is None:
            continue
        for h in horizons_min:
            t = row["arrival_ms"] - h * MINUTE_MS
            if t < row["en_route_ms"] - 6 * 60 * MINUTE_MS:
                continue
            position = track.at(row["technician_id"], t)
            if position is not None:
                yield row, h, t, site, position


def free_flow_s(
    graph: RoadGraph,
    sites: Sequence[tuple[float, float]],
    positions: Sequence[tuple[float, float]],
    ahead_s: Sequence[float],
) -> list[float]:
    """Free-flow seconds on the graph from each position's nearest node to its site's, the
    search towards each site bounded first by the most time ``ahead_s`` asked of it."""
    if not sites:
        return []
    dst, _ = graph.nearest_nodes([p[0] for p in sites], [p[1] for p in sites])
    src, _ = graph.nearest_nodes([p[0] for p in positions], [p[1] for p in positions])
    groups: dict[int, list[int]] = defaultdict(list)
    for j, node in enumerate(dst.tolist()):
        groups[node].append(j)
    out = [math.inf] * len(sites)
    for node, members in groups.items():
        limit = 1.5 * max(ahead_s[j] for j in members) + 120.0
        times = graph.times_to(node, src[members], graph.edge_time_s, limit_s=limit)
        for j, value in zip(members, times.tolist(), strict=True):
            out[j] = value
    return out


def _score_alerts(
    rows: Sequence[Mapping[str, Any]], alert_records: Iterable[bytes]
) -> dict[str, Any]:
    raised: dict[str, list[int]] = defaultdict(list)
    cleared: dict[str, list[int]] = defaultdict(list)
    for raw in alert_records:
        event = decode_trusted(raw)
        if isinstance(event, k.LateAlertRaised):
            raised[event.work_order_id].append(event.time)
        elif isinstance(event, k.LateAlertCleared):
            cleared[event.work_order_id].append(event.time)
    visits: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        visits[row["work_order_id"]].append(row)
    for items in visits.values():
        items.sort(key=lambda r: r["arrival_ms"])

    def concerned(wo: str, at: int) -> Mapping[str, Any] | None:
        """The visit an alert raised at ``at`` was about: the order's next arrival."""
        items = visits.get(wo, [])
        i = bisect.bisect_right([r["arrival_ms"] for r in items], at)
        return items[i] if i < len(items) else None

    late_rows = [r for r in rows if r["late"]]
    alerted_in_time = 0
    leads: list[float] = []
    for late in late_rows:
        times = [
            t
            for t in raised.get(late["work_order_id"], [])
            if t < late["window_end_ms"] and concerned(late["work_order_id"], t) is late
        ]
        if times:
            alerted_in_time += 1
            leads.append((late["window_end_ms"] - min(times)) / MINUTE_MS)
    # Alerted visits: (order, visit number) of the visit each alert concerned; 0 for alerts
    # no arrival followed that day.
    alerted: dict[tuple[str, int], bool] = {}
    for wo, times in raised.items():
        for t in times:
            visit = concerned(wo, t)
            key = (wo, int(visit["visit"])) if visit is not None else (wo, 0)
            alerted[key] = bool(visit is not None and visit["late"])
    alerts_total = sum(len(v) for v in raised.values())
    flapped = 0
    for wo, unsorted in raised.items():
        clears = sorted(cleared.get(wo, []))
        for first, second in itertools.pairwise(sorted(unsorted)):
            if second - first <= FLAP_WINDOW_MS and any(first < c < second for c in clears):
                flapped += 1
    return {
        "late_visits": len(late_rows),
        "alerts": alerts_total,
        "recall": round(alerted_in_time / len(late_rows), 4) if late_rows else None,
        "precision": round(sum(alerted.values()) / len(alerted), 4) if alerted else None,
        "median_lead_min": round(statistics.median(leads), 2) if leads else None,
        "flap_rate": round(flapped / alerts_total, 4) if alerts_total else 0.0,
    }
