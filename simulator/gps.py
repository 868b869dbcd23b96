"""GPS fixes, generated a whole phase at a time with numpy and kept as columns.

A technician's shift is a chain of contiguous phases: parked (at home, on site, waiting) or
driving a leg. Fix times follow one schedule across phases: each fix comes an interval after
the previous one, drawn from the range of the phase it lands in (so a phase change never
produces two fixes closer than the smaller range's minimum). Fixes exist only inside the
shift: the first comes an interval after ``ShiftStarted``, and phases end at ``ShiftEnded``.

Error model (all per fix): reported accuracy uniform in the scenario's range; the position is
off by a normal error of sd ``accuracy / 1.51`` on each axis, so 68 % of fixes fall within the
reported accuracy (the convention phones follow; the mean error is 0.83 x accuracy, 3-10 m
by default); a small share are multipath outliers (sd 25 m, accuracy 15-40 m). Dropped fixes
(independent dropouts, plus one 30-180 s gap on some legs) simply do not appear.

Delivery: most fixes reach the server 0.2-10 s after they were measured (lognormal, median
1.2 s); a share are buffered and arrive 20-600 s late, hence out of order. While driving,
speed is the edge's traversal speed with 4 % noise and heading the edge's bearing +- 2
degrees; parked fixes have a small speed jitter and no heading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simulator.scenarios import Scenario
from simulator.world import EARTH_M_PER_DEG, FloatArray, IntArray, World

_SD_PER_ACCURACY = math.sqrt(-2.0 * math.log(1.0 - 0.68))
"""A 2-D normal error of sd ``a / 1.51`` per axis lies within ``a`` 68 % of the time."""


@dataclass(slots=True)
class PingTable:
    """All fixes of a run as columns (one row per fix, in generation order).

    ``speed_mps``/``heading_deg`` are NaN where the fix has none (``null`` on the wire);
    ``true_lat``/``true_lon`` are where the van really was (ground truth, never on the log).
    """

    seq: IntArray
    tech: IntArray
    time_ms: IntArray
    delivery_ms: IntArray
    lat: FloatArray
    lon: FloatArray
    speed_mps: FloatArray
    heading_deg: FloatArray
    accuracy_m: FloatArray
    true_lat: FloatArray
    true_lon: FloatArray

    def __len__(self) -> int:
        return len(self.seq)


class Sequence:
    """The run-wide event counter: sequence numbers become event ids and break ties between
    equal delivery times, so fixes and other events share one."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def take(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive numbers; returns the first."""
        first = self.value
        self.value += n
        return first


@dataclass(slots=True)
class PingWriter:
    """Generates fixes phase by phase and collects them; :meth:`table` assembles the columns."""

    world: World
    scenario: Scenario
    rng: np.random.Generator
    sequence: Sequence
    _ints: list[tuple[IntArray, IntArray, IntArray, IntArray]] = field(default_factory=list)
    _floats: list[FloatArray] = field(default_factory=list)

    def _times(
        self, last_ms: int, start_ms: int, end_ms: int, interval_s: tuple[float, float]
    ) -> IntArray:
        """Fix times in ``[start_ms, end_ms)`` continuing a schedule whose last fix was at
        ``last_ms``: intervals uniform in ``interval_s``, the first at least ``start_ms``."""
        lo, hi = round(interval_s[0] * 1000), round(interval_s[1] * 1000)
        if end_ms <= start_ms:
            return np.zeros(0, dtype=np.int64)
        n = (end_ms - min(last_ms, start_ms)) // lo + 2
        times = last_ms + np.cumsum(self.rng.integers(lo, hi + 1, size=n, dtype=np.int64))
        if times[0] < start_ms:
            times += start_ms - times[0]
        out: IntArray = times[times < end_ms]
        return out

    def parked(self, tech: int, node: int, last_ms: int, start_ms: int, end_ms: int) -> int:
        """Fixes while parked at ``node`` during ``[start_ms, end_ms)``; returns the new last
        fix time of the schedule (``last_ms`` if there was none)."""
        times = self._times(last_ms, start_ms, end_ms, self.scenario.site_ping_interval_s)
        n = len(times)
        if n == 0:
            return last_ms
        lat = np.full(n, self.world.lat[node])
        lon = np.full(n, self.world.lon[node])
        speed: FloatArray = np.abs(self.rng.normal(0.0, 0.15, n)).round(2)
        self._emit(tech, times, lat, lon, speed=speed, heading=np.full(n, np.nan), gap=False)
        return int(times[-1])

    def driving(
        self,
        tech: int,
        *,
        nodes: IntArray,
        edges: IntArray,
        depart_ms: int,
        entry_s: FloatArray,
        dur_s: FloatArray,
        last_ms: int,
    ) -> int:
        """Fixes along a leg driven from ``depart_ms`` (``entry_s``/``dur_s`` as returned by
        :meth:`simulator.traffic.Traffic.drive`); returns the new last fix time."""
        if len(edges) == 0:
            return last_ms
        arrive_ms = depart_ms + round(float(entry_s[-1] + dur_s[-1]) * 1000.0)
        times = self._times(last_ms, depart_ms, arrive_ms, self.scenario.ping_interval_s)
        n = len(times)
        if n == 0:
            return last_ms
        s = (times - depart_ms) / 1000.0
        k = np.minimum(np.searchsorted(entry_s + dur_s, s, side="right"), len(edges) - 1)
        frac = np.clip((s - entry_s[k]) / dur_s[k], 0.0, 1.0)
        u, v = nodes[k], nodes[k + 1]
        w = self.world
        lat = w.lat[u] + frac * (w.lat[v] - w.lat[u])
        lon = w.lon[u] + frac * (w.lon[v] - w.lon[u])
        e = edges[k]
        noise = 1.0 + self.rng.normal(0.0, 0.04, n)
        speed: FloatArray = np.maximum(w.edge_length_m[e] / dur_s[k] * noise, 0.0).round(2)
        heading: FloatArray = ((w.edge_bearing[e] + self.rng.normal(0.0, 2.0, n)) % 360.0).round(1)
        self._emit(tech, times, lat, lon, speed=speed, heading=heading, gap=True)
        return int(times[-1])

    def _emit(
        self,
        tech: int,
        times: IntArray,
        true_lat: FloatArray,
        true_lon: FloatArray,
        *,
        speed: FloatArray,
        heading: FloatArray,
        gap: bool,
    ) -> None:
        """Add noise, drop lost fixes, draw delivery times; keep the rest."""
        sc = self.scenario
        rng = self.rng
        n = len(times)
        acc = rng.uniform(sc.gps_accuracy_m[0], sc.gps_accuracy_m[1], n)
        sd = acc / _SD_PER_ACCURACY
        outlier = rng.random(n) < sc.gps_outlier_rate
        if outlier.any():
            sd = np.where(outlier, 25.0, sd)
            acc = np.where(outlier, rng.uniform(15.0, 40.0, n), acc)
        ex = rng.standard_normal(n) * sd
        ey = rng.standard_normal(n) * sd
        keep = rng.random(n) >= sc.dropout_rate
        if gap and rng.random() < sc.gap_rate:
            t0 = int(rng.integers(int(times[0]), int(times[-1]) + 1))
            t1 = t0 + int(rng.integers(30_000, 180_001))
            keep &= (times < t0) | (times >= t1)
        latency = np.clip(rng.lognormal(math.log(1200.0), 0.5, n), 200.0, 10_000.0)
        late = rng.random(n) < sc.late_delivery_rate
        extra = rng.uniform(sc.late_delivery_s[0] * 1000.0, sc.late_delivery_s[1] * 1000.0, n)
        latency = np.where(late, latency + extra, latency)
        idx = np.flatnonzero(keep)
        m = len(idx)
        if m == 0:
            return
        first = self.sequence.take(m)
        self._ints.append(
            (
                np.arange(first, first + m, dtype=np.int64),
                np.full(m, tech, dtype=np.int64),
                times[idx],
                times[idx] + np.round(latency[idx]).astype(np.int64),
            )
        )
        lat = np.round(true_lat[idx] + ey[idx] / EARTH_M_PER_DEG, 6)
        lon = np.round(true_lon[idx] + ex[idx] / self.world.m_per_deg_lon, 6)
        self._floats.append(
            np.stack(
                [
                    lat,
                    lon,
                    speed[idx],
                    heading[idx],
                    np.round(acc[idx], 1),
                    true_lat[idx],
                    true_lon[idx],
                ]
            )
        )

    def table(self) -> PingTable:
        """Every fix generated so far, as columns in generation order."""
        if not self._ints:
            empty_i = np.zeros(0, dtype=np.int64)
            empty_f = np.zeros(0, dtype=np.float64)
            return PingTable(empty_i, empty_i, empty_i, empty_i, *([empty_f] * 7))
        seq, tech, time_ms, delivery_ms = (
            np.concatenate([c[i] for c in self._ints]) for i in range(4)
        )
        rows = [np.ascontiguousarray(r) for r in np.concatenate(self._floats, axis=1)]
        return PingTable(seq, tech, time_ms, delivery_ms, *rows)
