"""Live speed factors learned from the technicians' own GPS fixes, by area and time of day.

A *factor* is observed travel time over the graph's free-flow time (1 = the posted or default
speed, 2 = twice as slow). The graph's free-flow speeds are the OSM ``maxspeed`` tags where
present and, for untagged roads, the per-class defaults that :mod:`eta_engine.osm_build` writes
(``build_params["default_speed_kph"]``, e.g. residential 30 km/h, primary 70 km/h). Nobody
sustains those speeds through junctions and traffic, so the cold-start prior factor is
``prior_factor`` (1.15 by default: the allowance dispatchers commonly put on free-flow times).

Observations
    The engine feeds pairs ``(actual seconds, free-flow seconds)`` at a place and time: two
    consecutive fixes of a van driving to a site give ``actual = dt`` and ``free`` = how much
    the free-flow time to the site went down between them; a single moving fix with a speed
    gives ``free / actual = speed / free-flow speed`` over a nominal span.

Areas
    Space is cut into square cells (``cell_m``) grouped into super-cells (``super_cells`` x
    ``super_cells`` cells). An edge belongs to the cell of its midpoint. Estimates shrink
    level by level: ``cell -> super-cell -> time-of-day prior of the super-cell -> the
    region's time-of-day prior -> prior_factor``, each level as ``(A + k * parent) / (F + k)``
    with ``A``/``F`` the sums of actual and free-flow seconds and ``k`` the evidence (in
    free-flow seconds) at which a level trusts itself as much as its parent (``shrink_s`` for
    live levels, ``profile_shrink_s`` for the profile). Without data a cell gets the prior; a
    few fixes through it pull it quickly to what they saw. Congestion seen in one valley is
    not spread to roads nobody drove today: towns jam, mountain roads do not.

Time
    Live sums decay with ``half_life_s`` (10 min by default), so congestion and incidents show
    up within minutes and fade when they clear. The *profile* per super-cell and local hour of
    day holds previous days only (today's evidence joins it at local midnight; old days fade
    with ``profile_half_life_s``), so a morning starts from what mornings looked like and today
    is never counted twice. Factors are *published* at most every ``publish_s`` of event time
    (a version number), so what is priced with them can be cached and a restart reproduces
    them exactly.

Pure: the only clock is the event time the caller passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from eta_engine.roads import RoadGraph

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class SpeedConfig:
    """Speed-learning parameters (documented in :class:`eta_engine.engine.EtaConfig`)."""

    prior_factor: float = 1.15
    cell_m: float = 1000.0
    super_cells: int = 4
    half_life_s: float = 600.0
    shrink_s: float = 120.0
    profile_half_life_s: float = 7 * 86_400.0
    profile_shrink_s: float = 1800.0
    publish_s: float = 60.0
    min_factor: float = 0.6
    max_factor: float = 8.0
    utc_offset_minutes: int = 60


class SpeedModel:
    """Decayed travel-time evidence per cell, super-cell, the whole region and hour of day."""

    def __init__(self, graph: RoadGraph, config: SpeedConfig = SpeedConfig()) -> None:
        self.config = config
        self.graph = graph
        x, y = graph.project(graph.node_lat, graph.node_lon)
        self._x0, self._y0 = float(x.min()), float(y.min())
        self.nx = math.floor((float(x.max()) - self._x0) / config.cell_m) + 1
        self.ny = math.floor((float(y.max()) - self._y0) / config.cell_m) + 1
        g = config.super_cells
        self.snx = (self.nx + g - 1) // g
        self.sny = (self.ny + g - 1) // g
        self.n_cells = self.nx * self.ny
        self.n_super = self.snx * self.sny
        ix = np.arange(self.n_cells) % self.nx
        iy = np.arange(self.n_cells) // self.nx
        self.super_of_cell: IntArray = (ix // g + self.snx * (iy // g)).astype(np.int64)
        mx = (x[graph.edge_src] + x[graph.edge_dst]) / 2.0
        my = (y[graph.edge_src] + y[graph.edge_dst]) / 2.0
        self.edge_cell: IntArray = self.cells_of(mx, my)
        self.base_time_s: FloatArray = np.asarray(graph.edge_time_s, dtype=np.float64)
        # Live evidence (decayed), the hour-of-day profile, and what was last published.
        self.cell_a = np.zeros(self.n_cells)
        self.cell_f = np.zeros(self.n_cells)
        self.super_a = np.zeros(self.n_super)
        self.super_f = np.zeros(self.n_super)
        self.region_a = 0.0
        self.region_f = 0.0
        self.profile_a = np.zeros((self.n_super, 24))
        self.profile_f = np.zeros((self.n_super, 24))
        self.today_a = np.zeros((self.n_super, 24))
        self.today_f = np.zeros((self.n_super, 24))
        self.day: int | None = None
        """Local day (days since the epoch) that ``today_*`` belong to."""
        self.decayed_at_ms: int | None = None
        self.version = 0
        self.tick = -1
        self.cell_factor: FloatArray = np.full(self.n_cells, config.prior_factor)
        self.region_factor = config.prior_factor
        self.published_ms: int | None = None
        self._edge_cache: tuple[int, FloatArray] | None = None
        self._times_cache: tuple[int, FloatArray] | None = None

    # ------------------------------------------------------------------------------- places

    def cells_of(self, x: npt.ArrayLike, y: npt.ArrayLike) -> IntArray:
        """Cell index of projected points (points off the grid fall in its border cells)."""
        cfg = self.config
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        ix = np.clip(np.floor((xa - self._x0) / cfg.cell_m), 0, self.nx - 1).astype(np.int64)
        iy = np.clip(np.floor((ya - self._y0) / cfg.cell_m), 0, self.ny - 1).astype(np.int64)
        out: IntArray = ix + self.nx * iy
        return out

    def local_hour(self, time_ms: npt.ArrayLike) -> IntArray:
        """Local hour of day (0..23) of event times."""
        offset = self.config.utc_offset_minutes * 60_000
        t = np.asarray(time_ms, dtype=np.int64) + offset
        out: IntArray = (t // HOUR_MS) % 24
        return out

    # ------------------------------------------------------------------------- observations

    def observe(
        self,
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        actual_s: npt.ArrayLike,
        free_s: npt.ArrayLike,
        time_ms: npt.ArrayLike,
    ) -> None:
        """Add evidence: ``actual_s`` taken to cover ``free_s`` free-flow seconds at ``(x, y)``.

        Each observation's factor is clipped to ``[min_factor, max_factor]`` first, so one
        van parked with its engine running cannot poison an area. Non-positive free-flow
        spans are ignored. Takes effect at the next :meth:`publish`.
        """
        cfg = self.config
        free = np.atleast_1d(np.asarray(free_s, dtype=np.float64))
        actual = np.atleast_1d(np.asarray(actual_s, dtype=np.float64))
        ok = (free > 0) & np.isfinite(free) & np.isfinite(actual)
        if not ok.any():
            return
        free = free[ok]
        actual = np.clip(actual[ok], cfg.min_factor * free, cfg.max_factor * free)
        cells = self.cells_of(np.atleast_1d(x)[ok], np.atleast_1d(y)[ok])
        supers = self.super_of_cell[cells]
        self.cell_a += np.bincount(cells, actual, self.n_cells)
        self.cell_f += np.bincount(cells, free, self.n_cells)
        self.super_a += np.bincount(supers, actual, self.n_super)
        self.super_f += np.bincount(supers, free, self.n_super)
        self.region_a += float(actual.sum())
        self.region_f += float(free.sum())
        hours = self.local_hour(np.atleast_1d(time_ms)[ok])
        slot = supers * 24 + hours
        size = self.n_super * 24
        self.today_a += np.bincount(slot, actual, size).reshape(self.n_super, 24)
        self.today_f += np.bincount(slot, free, size).reshape(self.n_super, 24)

    # ---------------------------------------------------------------------------- estimates

    def due(self, watermark_ms: int) -> bool:
        """Whether the event-time watermark has entered a new publication period."""
        return watermark_ms // round(self.config.publish_s * 1000) > self.tick

    def publish(self, watermark_ms: int) -> None:
        """Decay the evidence to the current period's start and publish new cell factors.

        Called by the engine when :meth:`due`; bumps :attr:`version`. The period start (a
        multiple of ``publish_s``), not the watermark itself, is the time used, so the result
        does not depend on where batches happen to end within a period.
        """
        cfg = self.config
        period = round(cfg.publish_s * 1000)
        self.tick = watermark_ms // period
        now = self.tick * period
        if self.decayed_at_ms is not None and now > self.decayed_at_ms:
            live = 0.5 ** ((now - self.decayed_at_ms) / 1000.0 / cfg.half_life_s)
            self.cell_a *= live
            self.cell_f *= live
            self.super_a *= live
            self.super_f *= live
            self.region_a *= live
            self.region_f *= live
        self.decayed_at_ms = now if self.decayed_at_ms is None else max(now, self.decayed_at_ms)
        day = (now + cfg.utc_offset_minutes * 60_000) // (24 * HOUR_MS)
        if self.day is not None and day > self.day:
            # A new local day: yesterday joins the profile, older days fade.
            old = 0.5 ** ((day - self.day) * 86_400.0 / cfg.profile_half_life_s)
            self.profile_a = self.profile_a * old + self.today_a
            self.profile_f = self.profile_f * old + self.today_f
            self.today_a = np.zeros_like(self.today_a)
            self.today_f = np.zeros_like(self.today_f)
        self.day = day if self.day is None else max(day, self.day)
        hour = int(self.local_hour(now))
        prior_region = self.region_prior(hour)
        k, kp = cfg.shrink_s, cfg.profile_shrink_s
        super_prior = (self.profile_a[:, hour] + kp * prior_region) / (self.profile_f[:, hour] + kp)
        supers = (self.super_a + k * super_prior) / (self.super_f + k)
        cells = (self.cell_a + k * supers[self.super_of_cell]) / (self.cell_f + k)
        region = (self.region_a + k * prior_region) / (self.region_f + k)
        self.cell_factor = np.clip(cells, cfg.min_factor, cfg.max_factor)
        self.region_factor = float(np.clip(region, cfg.min_factor, cfg.max_factor))
        self.published_ms = now
        self.version += 1

    def region_prior(self, hour: int) -> float:
        """The region-wide time-of-day prior factor at a local hour (``prior_factor`` cold):
        what previous days looked like at that hour, shrunk to ``prior_factor``."""
        cfg = self.config
        a = float(self.profile_a[:, hour].sum())
        f = float(self.profile_f[:, hour].sum())
        return (a + cfg.profile_shrink_s * cfg.prior_factor) / (f + cfg.profile_shrink_s)

    def evidence_s(self, time_ms: int) -> float:
        """Free-flow seconds of evidence behind the factors now: today's live evidence plus
        what previous days saw at this hour (0 on a cold start)."""
        hour = int(self.local_hour(time_ms))
        return self.region_f + float(self.profile_f[:, hour].sum())

    def prior_at(self, time_ms: int) -> float:
        """The region-wide prior factor at an event time (the level congestion returns to)."""
        return self.region_prior(int(self.local_hour(time_ms)))

    def edge_factors(self) -> FloatArray:
        """The published factor of every edge (cached per version; read-only)."""
        cached = self._edge_cache
        if cached is not None and cached[0] == self.version:
            return cached[1]
        factors = self.cell_factor[self.edge_cell]
        factors.setflags(write=False)
        self._edge_cache = (self.version, factors)
        return factors

    def edge_times(self) -> FloatArray:
        """Live seconds of every edge at the published factors (cached per version)."""
        cached = self._times_cache
        if cached is not None and cached[0] == self.version:
            return cached[1]
        times: FloatArray = self.base_time_s * self.edge_factors()
        times.setflags(write=False)
        self._times_cache = (self.version, times)
        return times

    # ----------------------------------------------------------------------------- state

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able state (arrays as lists of floats; exact when read back)."""
        return {
            "cell_a": self.cell_a.tolist(),
            "cell_f": self.cell_f.tolist(),
            "super_a": self.super_a.tolist(),
            "super_f": self.super_f.tolist(),
            "region_a": self.region_a,
            "region_f": self.region_f,
            "profile_a": self.profile_a.ravel().tolist(),
            "profile_f": self.profile_f.ravel().tolist(),
            "today_a": self.today_a.ravel().tolist(),
            "today_f": self.today_f.ravel().tolist(),
            "day": self.day,
            "decayed_at_ms": self.decayed_at_ms,
            "version": self.version,
            "tick": self.tick,
            "cell_factor": self.cell_factor.tolist(),
            "region_factor": self.region_factor,
            "published_ms": self.published_ms,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load what :meth:`snapshot` returned (for the same graph and config)."""
        self.cell_a = np.asarray(state["cell_a"], dtype=np.float64)
        self.cell_f = np.asarray(state["cell_f"], dtype=np.float64)
        self.super_a = np.asarray(state["super_a"], dtype=np.float64)
        self.super_f = np.asarray(state["super_f"], dtype=np.float64)
        self.region_a = float(state["region_a"])
        self.region_f = float(state["region_f"])
        shape = (self.n_super, 24)
        self.profile_a = np.asarray(state["profile_a"], dtype=np.float64).reshape(shape)
        self.profile_f = np.asarray(state["profile_f"], dtype=np.float64).reshape(shape)
        self.today_a = np.asarray(state["today_a"], dtype=np.float64).reshape(shape)
        self.today_f = np.asarray(state["today_f"], dtype=np.float64).reshape(shape)
        self.day = state["day"]
        self.decayed_at_ms = state["decayed_at_ms"]
        self.version = int(state["version"])
        self.tick = int(state["tick"])
        self.cell_factor = np.asarray(state["cell_factor"], dtype=np.float64)
        self.region_factor = float(state["region_factor"])
        self.published_ms = state["published_ms"]
        self._edge_cache = None
        self._times_cache = None
