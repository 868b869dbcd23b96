"""The streaming ETA engine: technician-keyed events in, arrival windows and late alerts out.

``EtaEngine(graph, config).apply(batch)`` takes ``(event, position)`` pairs of one partition in
log order and returns the derived events they cause (:class:`~events.kinds.EtaUpdated`,
:class:`~events.kinds.LateAlertRaised`, :class:`~events.kinds.LateAlertCleared`). It is pure:
no I/O, no clock, seeded randomness only; a derived event's ``time`` is its cause's ``time``.

Input it understands (anything else is ignored)
    ``TechnicianRegistered`` (skills, home), ``ShiftStarted`` / ``ShiftEnded`` (pings outside a
    shift are dropped unread: privacy), ``GpsPinged``, ``WorkOrderStateChanged`` (the order's
    whole state after each change, keyed to the technician it concerns), ``PartUsed`` (van
    stock, and a sign that the job on hand is ending) and, if the stage routes it here too,
    ``PartMissing`` (the visit will end early, unfixed).

Evaluation steps: why outputs do not depend on batch boundaries
    Event time is cut into steps of ``step_s``. The engine's watermark is the largest event
    time seen so far, and a step *closes* when the watermark enters a later step, i.e. just
    before the first event of the later step is applied. Closing a step processes its pings
    together (vectorised: map-matching, field look-ups, speed learning) and re-evaluates the
    technicians it touched, once each: at once after a state change, otherwise at most every
    ``eval_interval_s``. State changes are applied at once, in log order.
    Because steps are a function of the event sequence alone, the same log yields the same
    outputs however the stage cuts it into batches; the price is that a step's outputs come
    out with the first event of the next step (at most ``step_s`` of event time later).
    :meth:`EtaEngine.flush` closes the open step on demand (end of input); outputs after a
    flush depend on where it was called.

Per technician in a closing step
    Pings older than the newest one already seen are late: they are not used at all (their
    place in the drive is already passed). The newest in-order ping positions the van (not
    while it is on a site: the site is its position); the in-order pings of a van en route
    are checked against the site's geofence (arrival detection). Two consecutive positions of
    a van en route give a speed observation (free-flow progress over elapsed time), a lone
    moving fix its reported speed against its road's.

Derived events
    ids are ``eta-<cause id>-<work order>``, ``alert-<cause id>-<work order>`` and
    ``alert-clear-<cause id>-<work order>``; ``source`` is :data:`SOURCE`; ``subject`` the work
    order; ``causation`` the input's position. The cause of an evaluation is the newest (by
    event time, then log order) in-order event of that technician in the step.

State
    :meth:`EtaEngine.snapshot` returns everything as plain JSON-able data (orjson); a new
    engine given it through :meth:`EtaEngine.restore` continues exactly as the old one would
    have (same outputs, byte for byte). Caches (fields, legs) are not part of it: they are
    recomputed, and nothing they hold depends on anything but the graph and the state.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from eta_engine import alerts as al
from eta_engine.calibration import CalibrationConfig, Calibrator, residual
from eta_engine.durations import DurationConfig, DurationModel, Overheads
from eta_engine.fields import FieldStore, Leg, live_remaining, live_suffix
from eta_engine.matching import MatchConfig, Matched, edge_bearings, match, time_to
from eta_engine.roads import RoadGraph
from eta_engine.speeds import SpeedConfig, SpeedModel
from eta_engine.windows import (
    ARRIVED,
    EN_ROUTE,
    QUEUED,
    WORKING,
    ChainParams,
    Chains,
    conditional_lognormal,
    latin_normals,
    simulate_arrivals,
)
from events.base import Causation, Event
from events.kinds import (
    EtaUpdated,
    GpsPinged,
    LateAlertCleared,
    LateAlertRaised,
    PartMissing,
    PartUsed,
    ShiftEnded,
    ShiftStarted,
    TechnicianRegistered,
    WorkOrderStateChanged,
)

FloatArray = npt.NDArray[np.float64]

SOURCE = "fieldstream/eta"
STATE_FORMAT = 2
"""Version of the :meth:`EtaEngine.snapshot` layout; :meth:`EtaEngine.restore` checks it."""

_FORGET_EVERY = 15
"""Speed publication periods between two scans for orders to forget."""

ON_SITE = ("arrived", "in_progress", "paused")
CURRENT = ("en_route", *ON_SITE)
FINISHED = ("completed_fixed", "completed_not_fixed", "cancelled")


@dataclass(frozen=True, slots=True)
class EtaConfig:
    """Every threshold of the engine, with its default and why (one documented field each;
    unlisted defaults of the sub-models are documented in their modules). Defaults marked
    *tuned* were chosen on simulated days (four scenarios, several seeds, none the
    evaluation's), the rest by the reasoning given."""

    levels: tuple[float, float, float] = (0.1, 0.5, 0.9)
    """Quantile levels of ``p10``/``p50``/``p90``: the window is the outer two (80 % nominal)."""
    samples: int = 192
    """Monte Carlo samples per chain (common random numbers; a Latin hypercube: quantiles of a
    chain are stable to well under a minute with a couple of hundred)."""
    seed: int = 20_261_123
    """Seed of those draws: the only randomness in the engine."""
    max_stops: int = 10
    """Stops per technician evaluated (the job on hand and the next queued ones)."""
    model_version: str = "eta-1"
    """Written on every EtaUpdated."""
    utc_offset_minutes: int = 60
    """Local time for alert messages and the hour-of-day profile (Andorra in winter: +60)."""
    step_s: float = 60.0
    """Evaluation step (event time): outputs of a step come out when the next one begins.
    A van's position is taken once per step, from its newest fix."""
    eval_interval_s: float = 60.0
    """A technician's chain is re-evaluated on new pings at most this often (event time);
    a state change (assignment, departure, arrival, a part fitted...) re-evaluates at once."""
    publish_interval_s: float = 900.0
    """An unchanged window is re-published after this long ("interval"): a heartbeat that says
    the window still holds, not news (at 300 s it was a quarter of all EtaUpdated)."""
    move_min_s: float = 30.0
    move_fraction: float = 0.08
    """A window *moves* when p50 changes by more than ``max(move_min_s, move_fraction * time
    to arrival)``. The floor counts only in the last minutes of a drive (beyond 6 minutes out
    8% of the time left is above it), where a customer at the door minds half a minute: at
    60 s, the P50 shown two minutes out could be a minute stale, and lost to the free-flow
    time from the van's position (MAE at 2 min on the simulator's traces with a fix every
    5-15 s: 0.223 min against 0.191; at 30 s, 0.174), for a fifth more EtaUpdated. Smaller
    changes are not worth a message..."""
    move_end_fraction: float = 0.25
    """...or when p10 or p90 changes by more than that and by more than this share of its
    side of the window as last published (p50 - p10, p90 - p50). Without it, three quarters
    of the EtaUpdated of a simulated day were far tails (a P90 hours out, after an overrun)
    wandering by minutes to hours from one evaluation to the next while P50 stayed put."""
    move_end_hold_s: float = 300.0
    """...and only once this long has passed since the last publication: a move of the median
    is news at once, the ends' are folded into one update at most this often."""

    # -- positions
    arrival_radius_m: float = 60.0
    """A ping this close to the site of the job en route is an arrival (geofence)."""
    min_heading_speed_mps: float = 2.0
    """Headings of slower fixes are ignored when choosing the direction on a two-way road."""
    snap_m: float = 25.0
    """Distance to the road accepted as GPS error; beyond it the rest is driven off-road..."""
    offroad_speed_mps: float = 4.0
    """...at this speed (car parks, yards)."""

    # -- speeds
    prior_speed_factor: float = 1.15
    """Cold-start ratio of real to free-flow travel time (free flow = the graph's speeds: OSM
    ``maxspeed``, else the per-class defaults of ``osm_build``). 1.15 is the allowance
    dispatchers usually put on free-flow times."""
    cell_m: float = 1000.0
    """Side of a speed cell; congestion is learned per cell."""
    super_cells: int = 4
    """Cells per side of a super-cell (the next level up when a cell has no data)."""
    speed_half_life_s: float = 600.0
    """Half-life of live speed evidence: congestion shows within minutes and fades as fast."""
    speed_shrink_s: float = 60.0
    """Free-flow seconds of evidence at which a cell trusts itself as much as its parent
    (*tuned*: 120 lagged behind rush hours)."""
    speed_publish_s: float = 60.0
    """New speed factors are published (and fields re-priced) at most this often."""
    min_factor: float = 0.6
    max_factor: float = 8.0
    """Bounds of one observation's factor (GPS glitches, a van parked with the engine on)."""
    max_pair_s: float = 300.0
    """Two positions further apart in time do not make a speed observation."""
    speed_span_s: float = 10.0
    """Free-flow seconds one moving fix's reported speed stands for."""

    # -- chains
    travel_sigma: float = 0.15
    travel_sigma_growth: float = 0.15
    """Log-sd of a future leg's travel time, plus this much more for a leg an hour ahead."""
    en_route_sigma: float = 0.12
    """Log-sd of the remaining drive of a van en route."""
    drive_pace_s: float = 300.0
    """A van's own pace on the drive so far counts half, against the speed model, once it
    has covered this many free-flow seconds of it (see ``EtaEngine._from_position``)."""
    cold_travel_sigma: float = 0.4
    cold_evidence_s: float = 600.0
    """Before the speed model has seen ``cold_evidence_s`` free-flow seconds of driving (a cold
    start: today's first departures, an unseen city) every drive is that much less certain:
    its log-sd grows by up to ``cold_travel_sigma``, fading as evidence comes in."""
    congestion_reversion_s: float = 5400.0
    """Time constant with which today's congestion on a future leg relaxes to the prior."""
    wait_detect_s: float = 600.0
    """A departure this much later than the technician could have left was a wait (learns
    the *lead*); an earlier one was a turnaround."""

    # -- durations (see eta_engine.durations for the model)
    prior_duration_median_s: float = 3600.0
    prior_duration_log_sd: float = 0.5
    """Cold-start job duration: median 1 h, 80 % between 32 and 114 min (a generic repair)."""
    duration_decay: float = 0.97
    """Weight kept by older jobs at each new one of the same key (recent jobs count most)."""
    duration_censoring: bool = False
    """Count work under way as right-censored durations (see :mod:`eta_engine.durations`), so
    the first completions of a morning, the short jobs, do not set the durations of the whole
    day. Off by default: on the evaluation it made every forecast of a job still under way
    later, and the error 30 minutes before the arrival grew by half (rush-hour seed 1: 12.9
    -> 19.7 min, normal seed 3: 13.3 -> 21.4, incidents seed 2: 10.5 -> 13.2, 30
    technicians), while coverage and alerts were no better."""

    # -- calibration
    horizon_edges_min: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 75.0, 120.0, 180.0)
    """Calibration buckets by predicted minutes to arrival (*tuned*: far-ahead predictions
    err differently, one bucket for everything beyond 75 min made late alerts overconfident;
    the last minutes of a drive differ from the rest of it)."""
    calibration_capacity: int = 400
    """Residuals kept per bucket: the calibration follows the last few hundred arrivals."""
    calibration_prior_weight: float = 30.0
    """Pseudo-residuals of a calibrated base model each bucket starts with (cold start)."""
    calibration_adapt_rate: float = 0.01
    """Step of the adaptive levels (adaptive conformal inference, see
    :meth:`~eta_engine.calibration.Calibrator.feedback`): each observed miss of a window end
    moves that end's level out by this much times 0.9, each hit in by this much times 0.1.
    The residual buffers lag behind the day (they mix the morning's errors with the
    afternoon's); the levels follow what the windows have actually been doing lately."""
    calibration_adapt_band: float = 0.5
    """How far the adaptive levels may stray, as a share of the nominal miss rate (0.5: the
    P10 end is read between the 5 % and 15 % residual quantiles): a bounded correction, so a
    run of hits in one direction (a morning when everyone is late) cannot fold a window end
    onto the median."""
    arrival_edges_min: tuple[float, ...] = tuple(round(2.0 * 1.25**i, 2) for i in range(22))
    """Edges of the arrival bins (actual minutes to arrival, 2 min to 3.6 h, each 25 % past
    the last): windows are calibrated so that arrivals that come D minutes later fall inside
    the nominal share of them, bin by bin (see :mod:`eta_engine.calibration`). Empty: windows
    calibrated by predicted horizon only. The bins are narrow so that the coverage is even
    within each (it changes fast with D below half an hour); their number is not tuned."""
    arrival_min_count: int = 30
    """Scores an arrival bin needs before its threshold is used (before, the window by
    predicted horizon stands in that bin)."""
    calibration_every_s: float = 120.0
    """A prediction is kept for calibration at most this often per work order."""

    # -- alerts (see eta_engine.alerts)
    raise_threshold: float = 0.93
    """Raise when P(arrival after the window's end) is at least this on ``alert_confirm``
    evaluations in a row, for work that will be done today (*tuned* on 20 simulated days:
    at 0.6 half the alerts were for visits that made it; at 0.93 pooled recall 0.98 and
    precision 0.81, median warning 20 min before the window's end)."""
    sure_threshold: float = 0.95
    """...or at once at this probability."""
    clear_threshold: float = 0.25
    """Clear when P(late) is at most this on ``alert_confirm`` evaluations in a row."""
    alert_confirm: int = 3
    """Consecutive evaluations (each at least ``eval_interval_s`` apart on pings) to act."""
    min_hold_s: float = 600.0
    """An alert stays up at least this long (unless the visit ends)."""
    rearm_s: float = 900.0
    """No new alert this long after a clear: with ``min_hold_s`` (sum >= 600 s) a flap, raised
    cleared and raised again within ten minutes, is impossible."""
    overtime_s: float = 1800.0
    """Work that would end more than this past the shift's planned end even if the technician
    got there early (P10 arrival plus mean duration) is dispatch's to move to another day (the
    usual rule: start nothing that cannot end within half an hour of overtime), not a delay to
    announce, so it gets no late alert (alerts for orders then moved to tomorrow were a third
    of the false ones; with the median arrival instead of P10, late visits that did happen
    that day went unannounced)."""
    suggest_gain_s: float = 600.0
    """A swap is suggested only if it arrives at least this much earlier (and in the window)."""

    forget_after_s: float = 6 * 3600.0
    """A finished (completed, cancelled) or unassigned order is dropped from the state this
    long after its last change, so the state does not grow day after day; if it comes back
    its next snapshot carries everything needed."""

    # -- caches
    max_fields: int = 2048
    """Time fields kept in memory, about 130 kB each on Andorra (least recently used go;
    recomputed on demand, so this bounds memory, never changes outputs)."""

    def alert_config(self) -> al.AlertConfig:
        return al.AlertConfig(
            raise_threshold=self.raise_threshold,
            sure_threshold=self.sure_threshold,
            clear_threshold=self.clear_threshold,
            confirm=self.alert_confirm,
            min_hold_s=self.min_hold_s,
            rearm_s=self.rearm_s,
        )


@dataclass(slots=True)
class Tech:
    """What the engine knows of one technician (plain data; see :meth:`EtaEngine.snapshot`)."""

    id: str
    skills: list[str] = field(default_factory=list)
    registered: bool = False
    region: str = ""
    home_node: int | None = None
    on_shift: bool = False
    ended: bool = False
    van: dict[str, int] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    current: str | None = None
    shift_ms: int | None = None
    """When the current shift started."""
    planned_end_ms: int | None = None
    """When the current shift is planned to end."""
    departed: bool = False
    """Whether they have set off for a job since the shift started."""
    free_since_ms: int | None = None
    free_after_job: bool = False
    last_site_node: int | None = None
    seen_ms: int = -1
    """Newest ping time seen this shift (in-order pings are newer than this)."""
    en_route: str | None = None
    """The job they are driving to, until its arrival is known."""
    eval_ms: int | None = None
    """When their chain was last evaluated."""
    slot: int = -1
    """Their row in :class:`Positions`."""


_INT_COLUMNS = (
    "ping_ms",
    "edge",
    "alt",
    "rem_dst",
    "rem_ahead",
    "leg_dst",
    "leg_origin",
    "pair_dst",
    "pair_ms",
    "drive_ms",
)
_FLOAT_COLUMNS = (
    "x",
    "y",
    "frac",
    "dist",
    "speed",
    "rem_static",
    "pair_static",
    "pair_x",
    "pair_y",
    "drive_free",
)


class Positions:
    """Where each technician is, as columns (one row per technician slot).

    Kept as arrays so that a step's positions are read and written for all vans at once.
    ``ping_ms``: time of the fix the row comes from (-1: none this shift). ``edge``/``frac``
    /``alt``/``dist``/``x``/``y``/``speed``: the matched fix (see :class:`Matched`; speed NaN
    if not reported). ``rem_dst``/``rem_static``/``rem_ahead``: the destination it was
    heading to, the free-flow seconds left and the node ahead. ``leg_dst``/``leg_origin``:
    the route it is on (where it was first seen heading to ``leg_dst``). ``pair_*``: the
    last position of a van en route, for the next speed observation. ``drive_ms``/
    ``drive_free``: when and how far (free-flow seconds) from the site the van was at its first
    fix of the drive it is on, to compare its progress with the model's. -1 / NaN mean none.
    """

    def __init__(self, capacity: int = 64) -> None:
        self.n = 0
        self.capacity = capacity
        self.ping_ms = np.full(capacity, -1, dtype=np.int64)
        self.edge = np.full(capacity, -1, dtype=np.int64)
        self.alt = np.full(capacity, -1, dtype=np.int64)
        self.rem_dst = np.full(capacity, -1, dtype=np.int64)
        self.rem_ahead = np.full(capacity, -1, dtype=np.int64)
        self.leg_dst = np.full(capacity, -1, dtype=np.int64)
        self.leg_origin = np.full(capacity, -1, dtype=np.int64)
        self.pair_dst = np.full(capacity, -1, dtype=np.int64)
        self.pair_ms = np.full(capacity, -1, dtype=np.int64)
        self.drive_ms = np.full(capacity, -1, dtype=np.int64)
        self.drive_free = np.full(capacity, np.nan)
        self.x = np.full(capacity, np.nan)
        self.y = np.full(capacity, np.nan)
        self.frac = np.full(capacity, np.nan)
        self.dist = np.full(capacity, np.nan)
        self.speed = np.full(capacity, np.nan)
        self.rem_static = np.full(capacity, np.nan)
        self.pair_static = np.full(capacity, np.nan)
        self.pair_x = np.full(capacity, np.nan)
        self.pair_y = np.full(capacity, np.nan)

    def add(self) -> int:
        """A new row (all "none"); columns double when full."""
        if self.n == self.capacity:
            grow = self.capacity
            for name in _INT_COLUMNS:
                column = getattr(self, name)
                setattr(self, name, np.concatenate([column, np.full(grow, -1, np.int64)]))
            for name in _FLOAT_COLUMNS:
                column = getattr(self, name)
                setattr(self, name, np.concatenate([column, np.full(grow, np.nan)]))
            self.capacity += grow
        self.n += 1
        return self.n - 1

    def forget(self, slot: int) -> None:
        """Reset a row to "none" (a shift ended: the position is private)."""
        for name in _INT_COLUMNS:
            getattr(self, name)[slot] = -1
        for name in _FLOAT_COLUMNS:
            getattr(self, name)[slot] = np.nan

    def snapshot(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for name in _INT_COLUMNS:
            out[name] = getattr(self, name)[: self.n].tolist()
        for name in _FLOAT_COLUMNS:
            values = getattr(self, name)[: self.n].tolist()
            out[name] = [None if math.isnan(v) else v for v in values]
        return out

    def restore(self, state: dict[str, list[Any]]) -> None:
        n = len(state["ping_ms"])
        self.__init__(max(64, n))  # type: ignore[misc]
        self.n = n
        for name in _INT_COLUMNS:
            getattr(self, name)[:n] = state[name]
        for name in _FLOAT_COLUMNS:
            getattr(self, name)[:n] = [math.nan if v is None else v for v in state[name]]


@dataclass(slots=True)
class Job:
    """One work order as the engine tracks it."""

    id: str
    tech: str | None = None
    status: str = "booked"
    job_type: str = ""
    visit: int = 0
    region: str = ""
    site_lat: float = 0.0
    site_lon: float = 0.0
    site_node: int = 0
    ws: int = 0
    we: int = 0
    assigned_at: int | None = None
    en_route_at: int | None = None
    arrived_at: int | None = None
    started_at: int | None = None
    completed_at: int | None = None
    arrival_ms: int | None = None
    """First sign of arrival on this visit (geofence, arrival tap or start of work)."""
    part_used_ms: int | None = None
    """First part fitted on this visit: the job's end is near (see durations.Overheads)."""
    part_missing_ms: int | None = None
    """First part found missing on this visit: it will end soon, unfixed."""
    learned: list[str] = field(default_factory=list)
    """What this visit already taught ("lead", "setup", "duration"), so it teaches once."""
    pub_ms: int | None = None
    pub: list[int] | None = None
    pub_window: list[int] | None = None
    reason: str | None = None
    """Pending reason for the next EtaUpdated (a state change), if any."""
    alert: al.AlertState = field(default_factory=al.AlertState)
    alert_window: list[int] | None = None
    """The promised window when the alert was raised (a clear after it moved says so)."""
    calib: list[tuple[float, float, float, float, float, float, float]] = field(
        default_factory=list
    )
    """Predictions kept for calibration: ``(time (ms), bucket, lo, mid, hi, c_lo, c_hi)``, the
    base quantiles and the calibrated window's ends, in seconds from that time."""
    calib_ms: int | None = None
    changed_ms: int = 0
    """Event time of the last snapshot (finished orders are forgotten a while after)."""
    queue_key: float = 0.0
    queue_rank: int = 0
    """Where the job sits in its technician's queue (see ``EtaEngine._enqueue``)."""


Fix = tuple[Causation, float, float, float | None, float | None]
"""What the engine reads of a ``GpsPinged``: its position on the log (the causation of what
it causes), ``lat``, ``lon``, ``speed_mps`` and ``heading_deg``."""


class PingSource(Protocol):
    """Where the pings of a :class:`PingColumns` are read from, one at a time."""

    def ping(self, row: int) -> Fix | None:
        """The fix of row ``row``; None if it cannot be read (the engine then does not use
        it). May be called more than once for a row."""


@dataclass(frozen=True, slots=True)
class PingColumns:
    """A batch's GPS pings, a column at a time (see :meth:`EtaEngine.apply_columns`).

    Row ``j`` is a ``GpsPinged`` of technician ``technician_ids[j]`` measured at ``times[j]``
    (its event time); rows are in log order. ``before[i]`` is how many of them come before
    the batch's ``i``-th other event. Only the rows the engine uses are read from
    ``source``: a step's newest fix of each van, and the fixes of vans near their site.
    """

    technician_ids: Sequence[str]
    times: Sequence[int]
    before: Sequence[int]
    source: PingSource


@dataclass(frozen=True, slots=True)
class _DecodedPings:
    """A :class:`PingSource` over pings already decoded."""

    items: Sequence[tuple[GpsPinged, Causation]]

    def ping(self, row: int) -> Fix | None:
        ping, position = self.items[row]
        return (position, ping.lat, ping.lon, ping.speed_mps, ping.heading_deg)


@dataclass(frozen=True, slots=True)
class _Fixes:
    """A :class:`PingSource` over fixes (the open step's pings of a restored state)."""

    items: Sequence[Fix]

    def ping(self, row: int) -> Fix | None:
        return self.items[row]


@dataclass(slots=True)
class _Cause:
    seq: int
    time: int
    causation: Causation


@dataclass(slots=True)
class _Candidates:
    ids: list[str]
    skills: list[frozenset[str]]
    free_at: FloatArray
    nodes: npt.NDArray[np.int64]


@dataclass(slots=True)
class _Stop:
    job: Job
    kind: int
    travel_s: float = 0.0
    free_s: float = 0.0
    anchor_s: float = 0.0
    timer: str | None = None
    """A WORKING stop timed by an overhead (``wind_down`` after a part fitted,
    ``missing_wind_down`` after a part missing) rather than by the job's duration."""
    leg: Leg | None = None
    """A QUEUED stop's leg from the previous stop, still to be priced (``travel_s`` is set
    by ``EtaEngine._price_legs``, for all chains of an evaluation at once)."""


def _copier(cls: type) -> Callable[[Any], dict[str, Any]]:
    """A function giving an instance of the dataclass ``cls`` as plain data: its fields by
    name in declaration order, containers copied (the copy must not change when the engine
    goes on; the tuples inside are immutable), the alert state as a list."""
    kinds: list[tuple[str, int]] = []
    for f in fields(cls):
        hint = str(f.type)
        if "AlertState" in hint:
            kinds.append((f.name, 3))
        elif hint.startswith("list"):
            kinds.append((f.name, 1))
        elif hint.startswith("dict"):
            kinds.append((f.name, 2))
        else:
            kinds.append((f.name, 0))

    def copy(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, kind in kinds:
            value = getattr(obj, name)
            if kind == 0 or value is None:
                out[name] = value
            elif kind == 1:
                out[name] = list(value)
            elif kind == 2:
                out[name] = dict(value)
            else:
                out[name] = value.to_list()
        return out

    return copy


_tech_data = _copier(Tech)
_job_data = _copier(Job)


def _local_hhmm(ms: int, offset_min: int) -> str:
    minutes = (ms // 60_000 + offset_min) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class EtaEngine:
    """Arrival windows and late alerts for one partition of technicians (see the module).

    Public API: :meth:`apply` (a batch in log order -> derived events; :meth:`apply_columns`
    with its pings as columns, read only where used), :meth:`flush` (close
    the open step at the end of input), :meth:`snapshot` / :meth:`restore` (the whole state
    as plain JSON-able data, to store with the consumed offsets). One engine serves one
    partition (or any set of partitions, as long as their events reach it in one order). Not
    thread-safe; the graph may be shared read-only between engines.
    """

    def __init__(self, graph: RoadGraph, config: EtaConfig = EtaConfig()) -> None:
        self.graph = graph
        self.config = config
        cfg = config
        self._match_cfg = MatchConfig(cfg.min_heading_speed_mps, cfg.snap_m, cfg.offroad_speed_mps)
        self._alert_cfg = cfg.alert_config()
        self._bearings = edge_bearings(graph)
        self._node_x, self._node_y = graph.project(graph.node_lat, graph.node_lon)
        self._base_speed = graph.edge_length_m / graph.edge_time_s
        self.fields = FieldStore(graph, max_fields=cfg.max_fields)
        self._speed_cfg = SpeedConfig(
            prior_factor=cfg.prior_speed_factor,
            cell_m=cfg.cell_m,
            super_cells=cfg.super_cells,
            half_life_s=cfg.speed_half_life_s,
            shrink_s=cfg.speed_shrink_s,
            publish_s=cfg.speed_publish_s,
            min_factor=cfg.min_factor,
            max_factor=cfg.max_factor,
            utc_offset_minutes=cfg.utc_offset_minutes,
        )
        self._duration_cfg = DurationConfig(
            prior_median_s=cfg.prior_duration_median_s,
            prior_log_sd=cfg.prior_duration_log_sd,
            decay=cfg.duration_decay,
        )
        self._calibration_cfg = CalibrationConfig(
            levels=cfg.levels,
            horizon_edges_min=cfg.horizon_edges_min,
            capacity=cfg.calibration_capacity,
            prior_weight=cfg.calibration_prior_weight,
            classes=3,
            adapt_rate=cfg.calibration_adapt_rate,
            adapt_band=cfg.calibration_adapt_band,
            arrival_edges_min=cfg.arrival_edges_min,
            arrival_min_count=cfg.arrival_min_count,
        )
        self._z = latin_normals(cfg.max_stops, cfg.samples, cfg.seed)
        self._site_nodes: dict[tuple[float, float], int] = {}
        self._handlers: dict[type[Event], Callable[[Any, Causation], None]] = {
            TechnicianRegistered: self._on_registered,
            ShiftStarted: self._on_shift_started,
            ShiftEnded: self._on_shift_ended,
            WorkOrderStateChanged: self._on_state,
            PartUsed: self._on_part_used,
            PartMissing: self._on_part_missing,
        }
        self._reset()

    def _reset(self) -> None:
        self.speeds = SpeedModel(self.graph, self._speed_cfg)
        self.durations = DurationModel(self._duration_cfg)
        self.overheads = Overheads(self._duration_cfg)
        self.calibrator = Calibrator(self._calibration_cfg)
        self.techs: dict[str, Tech] = {}
        self.pos = Positions()
        self.jobs: dict[str, Job] = {}
        self.required_skills: dict[str, list[str]] = {}
        self.type_parts: dict[str, dict[str, int]] = {}
        self.type_jobs: dict[str, int] = {}
        self._seq = 0
        self._watermark: int | None = None
        self._step: int | None = None
        self._causes: dict[str, _Cause] = {}
        self._pings: list[tuple[str, int, int, str | None, PingSource, int]] = []
        """The open step's in-order pings: (technician, time, sequence number, job en route,
        where to read it, its row there)."""
        self._last_ping: dict[str, int] = {}
        self._out: list[Event] = []
        self._suffixes: dict[tuple[int, int], tuple[int, FloatArray]] = {}
        self._leg_live: dict[tuple[int, int], float] = {}
        self._leg_version = -1
        self._candidate_table: _Candidates | None = None

    # ================================================================================ input

    def apply(self, batch: Sequence[tuple[Event, Causation]]) -> list[Event]:
        """Apply events of one partition in log order; return the derived events, in order.

        Idempotence is the caller's: each record must be applied once (the stage stores the
        engine's :meth:`snapshot` with its offsets). Outputs of a step appear when the step
        closes (see the module docstring), so a batch may return events caused by the
        previous batch's records and the last records' outputs wait for the next batch.
        """
        rows: list[tuple[Event, Causation]] = []
        before: list[int] = []
        tids: list[str] = []
        times: list[int] = []
        fixes: list[tuple[GpsPinged, Causation]] = []
        for item in batch:
            event = item[0]
            if type(event) is GpsPinged:
                tids.append(event.technician_id)
                times.append(event.time)
                fixes.append(item)  # type: ignore[arg-type]
            else:
                rows.append(item)
                before.append(len(fixes))
        return self.apply_columns(rows, PingColumns(tids, times, before, _DecodedPings(fixes)))

    def apply_columns(
        self, rows: Sequence[tuple[Event, Causation]], pings: PingColumns
    ) -> list[Event]:
        """:meth:`apply` with the batch's GPS pings given a column at a time.

        ``rows`` are the batch's other events in log order (no ``GpsPinged`` among them: a
        ping there is ignored), ``pings`` its pings in log order and where they fall among
        ``rows`` (see :class:`PingColumns`); the outputs are those of :meth:`apply` on the
        merged sequence. A ping is read (``pings.source.ping``) only if
        the engine uses it: most are not, a van's newest fix of a step standing for the rest.
        """
        out: list[Event] = []
        self._out = out
        step_ms = round(self.config.step_s * 1000)
        techs_get = self.techs.get
        handlers_get = self._handlers.get
        pending = self._pings
        last = self._last_ping
        mark = self._watermark
        step = self._step
        seq = self._seq
        tids, times, before, source = pings.technician_ids, pings.times, pings.before, pings.source
        n_rows = len(rows)
        done = 0
        # The per-event work is a few dictionary operations; everything else waits for the
        # step to close and is done for all its pings at once. Counters live in locals and
        # are written back before anything else can read them; the step's ping lists are
        # emptied in place when it closes, so the locals stay valid.
        # ``step`` is the watermark's step, so an event enters a later step exactly when its
        # time reaches ``boundary``, the next step's start (which the watermark is short of):
        # a ping's only test. The watermark and the sequence numbers of a run of pings follow
        # from the run (its largest time, the pings' places), worked out where they are read.
        boundary = -math.inf if step is None else (step + 1) * step_ms
        for i in range(n_rows + 1):
            upto = before[i] if i < n_rows else len(times)
            if upto > done:
                # The j-th ping's sequence number is base + j; pings from ``unmarked`` on are
                # not yet in ``mark``.
                base = seq + 1 - done
                unmarked = done
                for j in range(done, upto):
                    t = times[j]
                    if t >= boundary:
                        if step is not None:
                            if j > unmarked:
                                newest = max(times[unmarked:j])
                                if mark is None or newest > mark:
                                    mark = newest
                            self._watermark = mark
                            self._seq = base + j - 1
                            self._close_step()
                        step = self._step = t // step_ms
                        boundary = (step + 1) * step_ms
                        mark = t
                        unmarked = j + 1
                    tech = techs_get(tids[j])
                    # Off shift: private, dropped unread. Late: older than a position taken.
                    if tech is None or not tech.on_shift or t <= tech.seen_ms:
                        continue
                    tech.seen_ms = t
                    last[tech.id] = len(pending)
                    pending.append((tech.id, t, base + j, tech.en_route, source, j))
                if upto > unmarked:
                    newest = max(times[unmarked:upto])
                    if mark is None or newest > mark:
                        mark = newest
                seq = base + upto - 1
                done = upto
            if i == n_rows:
                break
            event, position = rows[i]
            t = event.time
            if mark is None or t > mark:
                if t >= boundary:
                    if step is not None:
                        self._watermark = mark
                        self._seq = seq
                        self._close_step()
                    step = self._step = t // step_ms
                    boundary = (step + 1) * step_ms
                mark = t
            seq += 1
            handler = handlers_get(type(event))
            if handler is not None:
                self._seq = seq
                handler(event, position)
        self._watermark = mark
        self._seq = seq
        return out

    def flush(self) -> list[Event]:
        """Close the open step now (end of input): its outputs, in order."""
        out: list[Event] = []
        self._out = out
        if self._step is not None:
            self._close_step()
        return out

    def _touch(self, tech: Tech, time: int, position: Causation) -> None:
        """Make this event the technician's cause for the step if it is the newest."""
        cause = self._causes.get(tech.id)
        if cause is None or time >= cause.time:
            self._causes[tech.id] = _Cause(self._seq, time, position)

    def _tech(self, tech_id: str) -> Tech:
        tech = self.techs.get(tech_id)
        if tech is None:
            tech = self.techs[tech_id] = Tech(id=tech_id, slot=self.pos.add())
        return tech

    def _site_node(self, lat: float, lon: float) -> int:
        key = (lat, lon)
        node = self._site_nodes.get(key)
        if node is None:
            node = self._site_nodes[key] = self.graph.nearest_node(lat, lon)[0]
        return node

    # ---------------------------------------------------------------------------- handlers

    def _on_registered(self, event: TechnicianRegistered, position: Causation) -> None:
        tech = self._tech(event.technician_id)
        tech.skills = sorted(event.skills)
        tech.registered = True
        tech.region = event.region
        tech.home_node = self._site_node(event.home_lat, event.home_lon)

    def _on_shift_started(self, event: ShiftStarted, position: Causation) -> None:
        tech = self._tech(event.technician_id)
        tech.on_shift = True
        tech.ended = False
        tech.van = dict(event.van_stock)
        tech.shift_ms = event.time
        tech.planned_end_ms = event.planned_end
        tech.departed = False
        tech.seen_ms = -1
        tech.free_since_ms = event.time
        tech.free_after_job = False
        self._touch(tech, event.time, position)

    def _on_shift_ended(self, event: ShiftEnded, position: Causation) -> None:
        tech = self._tech(event.technician_id)
        tech.on_shift = False
        tech.ended = True
        # Forget the position: after hours a technician is private.
        tech.seen_ms = -1
        self.pos.forget(tech.slot)
        self._last_ping.pop(tech.id, None)
        self._causes.pop(tech.id, None)

    def _on_part_used(self, event: PartUsed, position: Causation) -> None:
        tech = self._tech(event.technician_id)
        if event.part in tech.van:
            tech.van[event.part] = max(0, tech.van[event.part] - event.quantity)
        job = self.jobs.get(event.work_order_id)
        if job is None:
            return
        if job.job_type:
            parts = self.type_parts.setdefault(job.job_type, {})
            parts[event.part] = parts.get(event.part, 0) + 1
        if job.tech == tech.id and job.status in ON_SITE and job.part_used_ms is None:
            job.part_used_ms = event.time
            self._touch(tech, event.time, position)

    def _on_part_missing(self, event: PartMissing, position: Causation) -> None:
        job = self.jobs.get(event.work_order_id)
        if job is None or job.tech != event.technician_id:
            return
        if job.status in ON_SITE and job.part_missing_ms is None:
            job.part_missing_ms = event.time
            self._touch(self._tech(event.technician_id), event.time, position)

    def _on_state(self, s: WorkOrderStateChanged, position: Causation) -> None:
        job = self.jobs.get(s.work_order_id)
        if job is None:
            job = self.jobs[s.work_order_id] = Job(id=s.work_order_id)
        old_tech, old_status, old_visit = job.tech, job.status, job.visit
        old_window = (job.ws, job.we)
        holder = s.technician_id if s.status not in ("booked", "cancelled") else None

        job.status = s.status
        job.job_type = s.job_type
        job.visit = s.visit
        job.region = s.region
        if (s.site_lat, s.site_lon) != (job.site_lat, job.site_lon) or old_tech is None:
            job.site_node = self._site_node(s.site_lat, s.site_lon)
        job.site_lat, job.site_lon = s.site_lat, s.site_lon
        job.ws, job.we = s.window_start, s.window_end
        job.assigned_at, job.en_route_at = s.assigned_at, s.en_route_at
        job.arrived_at, job.started_at = s.arrived_at, s.started_at
        job.completed_at = s.completed_at
        job.changed_ms = max(job.changed_ms, s.time)

        if s.visit != old_visit:
            # A new visit is a new promise: arrival, calibration and publication start over.
            job.arrival_ms = None
            job.part_used_ms = None
            job.part_missing_ms = None
            job.learned = []
            job.calib = []
            job.calib_ms = None
            job.pub = None
            job.pub_ms = None

        if old_tech is not None and (old_tech != holder or s.status in FINISHED):
            loser = self._tech(old_tech)
            self._detach(loser, job)
            if old_tech != holder:
                reason = "cancelled" if s.status == "cancelled" else "unassigned"
                self._terminal_clear(job, old_tech, (s.time, position), reason)
                job.pub = None
                job.pub_ms = None
                self._touch(loser, s.time, position)
        elif old_tech is None and s.status == "cancelled" and s.previous_technician_id:
            self._touch(self._tech(s.previous_technician_id), s.time, position)
        job.tech = holder
        if holder is None:
            return

        tech = self._tech(holder)
        self._learn_skills(tech, s.job_type)
        status = s.status
        if status == "assigned":
            if tech.current == job.id:
                tech.current = None
            if job.id not in tech.queue:
                self._enqueue(tech, job, s.queue_position)
                job.reason = "assigned"
            elif old_window != (job.ws, job.we):
                job.reason = "rescheduled"
        elif status in CURRENT:
            if job.id in tech.queue:
                tech.queue.remove(job.id)
            tech.current = job.id
            if status == "en_route" and (old_status != "en_route" or old_visit != s.visit):
                job.reason = "en_route"
                self._learn_departure(tech, job)
            if status in ON_SITE and old_status not in ON_SITE:
                tech.last_site_node = job.site_node
                # On site the job's place is the position; a fix from the drive there must
                # not become the origin of the next leg.
                self.pos.forget(tech.slot)
            if status in ON_SITE:
                seen = [t for t in (s.arrived_at, s.started_at) if t is not None]
                if seen and job.arrival_ms is None:
                    self._arrived(job, min(seen), s.time, position)
                if (
                    s.arrived_at is not None
                    and s.started_at is not None
                    and "setup" not in job.learned
                ):
                    job.learned.append("setup")
                    self.overheads.observe("setup", (s.started_at - s.arrived_at) / 1000.0)
                if s.trigger == "PartMissing" and job.part_missing_ms is None:
                    # The work-order stage records a missing part as a snapshot of the order
                    # (the PartMissing event itself is not routed to this stage): the visit
                    # will end soon, unfixed.
                    job.part_missing_ms = s.time
        elif status in ("completed_fixed", "completed_not_fixed"):
            if tech.current == job.id:
                tech.current = None
            if job.id in tech.queue:
                tech.queue.remove(job.id)
            if old_status != status:
                # Later snapshots of a finished job (invoice, rating) must not move the van.
                tech.last_site_node = job.site_node
            if job.arrival_ms is None and s.started_at is not None:
                self._arrived(job, s.started_at, s.time, position)
            if (
                s.started_at is not None
                and s.completed_at is not None
                and "duration" not in job.learned
            ):
                job.learned.append("duration")
                # Unfinished visits (a part missing, a specialist needed) end early for
                # reasons of their own; the durations that plan a day are the fixed ones.
                if status == "completed_fixed":
                    seconds = (s.completed_at - s.started_at) / 1000.0
                    self.durations.observe(job.job_type, job.visit, tech.id, seconds)
                self.type_jobs[job.job_type] = self.type_jobs.get(job.job_type, 0) + 1
                if job.part_used_ms is not None:
                    self.overheads.observe("wind_down", (s.completed_at - job.part_used_ms) / 1e3)
                if job.part_missing_ms is not None:
                    seconds = (s.completed_at - job.part_missing_ms) / 1e3
                    self.overheads.observe("missing_wind_down", seconds)
            if s.completed_at is not None and old_status != status:
                tech.free_since_ms = s.completed_at
                tech.free_after_job = True
        self._sync_en_route(tech)
        self._touch(tech, s.time, position)

    def _detach(self, tech: Tech, job: Job) -> None:
        if job.id in tech.queue:
            tech.queue.remove(job.id)
        if tech.current == job.id:
            tech.current = None
        self._sync_en_route(tech)

    def _sync_en_route(self, tech: Tech) -> None:
        """Keep ``tech.en_route`` (read per ping) in step with the job on hand."""
        job = self.jobs.get(tech.current) if tech.current is not None else None
        driving = job is not None and job.status == "en_route" and job.arrival_ms is None
        tech.en_route = job.id if driving and job is not None else None

    def _enqueue(self, tech: Tech, job: Job, position: int | None) -> None:
        """Put a newly assigned job in the technician's queue.

        ``position`` is where the dispatcher put it in the queue *as it stood then*: among the
        jobs assigned before it. Jobs assigned at the same moment (a morning plan) reach the
        engine in whatever order the work-order stage wrote them, so they are ordered among
        themselves by their positions, not by arrival. Each job gets a sort key between its
        earlier neighbours' keys; without a position it goes by its window's start.
        """

        def assigned(j: Job) -> int:
            return j.assigned_at if j.assigned_at is not None else -1

        older = [self.jobs[w] for w in tech.queue if assigned(self.jobs[w]) < assigned(job)]
        if position is None:
            index = bisect_right([o.ws for o in older], job.ws)
        else:
            index = min(position, len(older))
        if not older:
            key = 0.0
        elif index == 0:
            key = older[0].queue_key - 1.0
        elif index == len(older):
            key = older[-1].queue_key + 1.0
        else:
            lo, hi = older[index - 1].queue_key, older[index].queue_key
            if hi - lo < 1e-6:
                # Keys crowd after many insertions at one spot: renumber, keeping the order.
                for rank, wo in enumerate(tech.queue):
                    self.jobs[wo].queue_key = float(rank)
                lo, hi = older[index - 1].queue_key, older[index].queue_key
            key = (lo + hi) / 2.0
        job.queue_key = key
        job.queue_rank = position if position is not None else 0
        tech.queue.append(job.id)
        tech.queue.sort(
            key=lambda w: (self.jobs[w].queue_key, self.jobs[w].queue_rank, self.jobs[w].ws, w)
        )

    def _learn_skills(self, tech: Tech, job_type: str) -> None:
        """Required skills of a job type ~ what every technician given it has in common."""
        if not tech.registered or not job_type:
            return
        known = self.required_skills.get(job_type)
        if known is None:
            self.required_skills[job_type] = list(tech.skills)
        else:
            self.required_skills[job_type] = [s for s in known if s in tech.skills]

    def _learn_departure(self, tech: Tech, job: Job) -> None:
        """At a departure: learn the waiting lead, or the turnaround after the last job."""
        if "lead" in job.learned or job.en_route_at is None:
            return
        job.learned.append("lead")
        first = not tech.departed and tech.shift_ms is not None
        tech.departed = True
        ready_candidates = [t for t in (tech.free_since_ms, job.assigned_at) if t is not None]
        if not ready_candidates:
            return
        ready = max(ready_candidates)
        idle_s = (job.en_route_at - ready) / 1000.0
        if idle_s > self.config.wait_detect_s:
            free = self._free_from_origin(tech, job.site_node)
            if free is not None and math.isfinite(free):
                lead = (job.ws - job.en_route_at) / 1000.0 - free
                if -1800.0 < lead < 3600.0:
                    self.overheads.observe("lead", lead)
        elif first and idle_s >= 0 and ready == tech.shift_ms:
            self.overheads.observe("start_delay", idle_s)
        elif idle_s >= 0 and tech.free_after_job and ready == tech.free_since_ms:
            self.overheads.observe("turnaround", idle_s)

    def _free_from_origin(self, tech: Tech, dst: int) -> float | None:
        """Free-flow seconds from where the technician is (or last was) to ``dst``."""
        if self.pos.edge[tech.slot] >= 0:
            return self._static_from_position(tech, dst)[0]
        origin = tech.last_site_node if tech.last_site_node is not None else tech.home_node
        if origin is None:
            return None
        return self.fields.leg(origin, dst).static_s

    # ============================================================================ arrivals

    def _arrived(self, job: Job, arrival_ms: int, time: int, position: Causation) -> None:
        """The visit's arrival became known: calibrate on it and end any alert."""
        job.arrival_ms = arrival_ms
        floor = self._calibration_cfg.min_scale_s
        kept = [c for c in job.calib if c[0] < arrival_ms]
        if kept:
            # All of the visit's predictions at once (the same elementwise arithmetic).
            made, bucket, lo, mid, hi, c_lo, c_hi = (np.array(c) for c in zip(*kept, strict=True))
            actual = (arrival_ms - made) / 1000.0
            r = residual(actual, lo, mid, hi, floor=floor).tolist()
            below = (actual < c_lo).tolist()
            above = (actual > c_hi).tolist()
            for b, value, low, high in zip(bucket.tolist(), r, below, above, strict=True):
                self.calibrator.record(int(b), value)
                self.calibrator.feedback(int(b), low, high)
            kinds = bucket.astype(np.int64) // self.calibrator.n_horizons
            self.calibrator.record_arrival(kinds, actual, lo, mid, hi)
        job.calib = []
        job.calib_ms = None
        if job.tech is not None:
            holder = self.techs.get(job.tech)
            if holder is not None:
                self._sync_en_route(holder)
            self._terminal_clear(job, job.tech, (time, position), "arrived", arrival_ms)

    def _terminal_clear(
        self,
        job: Job,
        tech_id: str,
        cause: tuple[int, Causation],
        reason: str,
        arrival_ms: int | None = None,
    ) -> None:
        time, position = cause
        if not al.terminal_clear(job.alert, time):
            return
        late = arrival_ms is not None and arrival_ms > job.we
        self._out.append(
            LateAlertCleared(
                id=f"alert-clear-{position.id}-{job.id}",
                source=SOURCE,
                time=time,
                subject=job.id,
                causation=position,
                work_order_id=job.id,
                technician_id=tech_id,
                probability_late=1.0 if late else 0.0,
                p50=arrival_ms if arrival_ms is not None else (job.pub or [time] * 3)[1],
                reason=reason,
            )
        )

    # =========================================================================== the step

    def _close_step(self) -> None:
        # Each technician's newest in-order ping of the step, in log order: read for the
        # van's position (not on site) and when it causes an evaluation; an unreadable one
        # is not used.
        pending = self._pings
        newest = [pending[index] for index in sorted(self._last_ping.values())]
        if newest:
            self._process_pings(newest)
        if self._watermark is not None and self.speeds.due(self._watermark):
            before = self.speeds.tick
            self.speeds.publish(self._watermark)
            # A scan of every order: every quarter of an hour is often enough to bound the
            # state, and the speed model's period count (part of the state) says when.
            if self.speeds.tick // _FORGET_EVERY != before // _FORGET_EVERY:
                self._forget_old_orders(self._watermark)
        causes = self._causes
        interval = self.config.eval_interval_s * 1000.0
        for tid, time, seq, _job, source, row in newest:
            cause = causes.get(tid)
            if cause is not None:
                # A state change is evaluated anyway, from the newest of its events.
                if time >= cause.time and (fix := source.ping(row)) is not None:
                    causes[tid] = _Cause(seq, time, fix[0])
                continue
            tech = self.techs[tid]
            if tech.eval_ms is None or time - tech.eval_ms >= interval:
                fix = source.ping(row)
                if fix is not None:
                    causes[tid] = _Cause(seq, time, fix[0])
        ordered = sorted(causes.items(), key=lambda item: item[1].seq)
        self._causes = {}
        self._pings.clear()
        self._last_ping.clear()
        self._candidate_table = None
        todo = []
        for tid, cause in ordered:
            tech = self.techs[tid]
            if not tech.ended:
                tech.eval_ms = cause.time
                todo.append((tech, cause))
        if todo:
            self._evaluate(todo)

    def _forget_old_orders(self, now: int) -> None:
        limit = now - self.config.forget_after_s * 1000.0
        old = [
            wo
            for wo, job in self.jobs.items()
            if (job.tech is None or job.status in FINISHED) and job.changed_ms < limit
        ]
        for wo in old:
            del self.jobs[wo]
        if len(self._site_nodes) > 100_000:
            self._site_nodes.clear()  # a cache of nearest nodes: bounded, recomputed at will

    def _process_pings(
        self, newest: list[tuple[str, int, int, str | None, PingSource, int]]
    ) -> None:
        """Geofence arrivals, positions, speed evidence: the step's pings, vectorised.

        ``newest`` are the newest in-order ping of each technician in the step, in log order.
        """
        cfg = self.config

        # Positions: those newest pings, except for technicians at work on a site (where
        # they are is known; the next leg starts there).
        on_site = ON_SITE
        jobs = self.jobs
        techs_all = self.techs
        techs: list[Tech] = []
        evs: list[Fix] = []
        at: list[int] = []
        for tid, time, _seq, _job, source, row in newest:
            tech = techs_all[tid]
            if (
                tech.current is None
                or jobs[tech.current].status not in on_site
                or tech.en_route is not None
            ) and (fix := source.ping(row)) is not None:
                techs.append(tech)
                evs.append(fix)
                at.append(time)
        m = len(evs)
        if m == 0:
            return
        lat = np.fromiter((e[1] for e in evs), np.float64, m)
        lon = np.fromiter((e[2] for e in evs), np.float64, m)
        speed = np.fromiter((math.nan if e[3] is None else e[3] for e in evs), np.float64, m)
        heading = np.fromiter((math.nan if e[4] is None else e[4] for e in evs), np.float64, m)
        times = np.asarray(at, dtype=np.int64)
        matched = match(
            self.graph,
            self._bearings,
            lat,
            lon,
            heading_deg=heading,
            speed_mps=speed,
            config=self._match_cfg,
        )
        self._geofence(techs, matched.x, matched.y)

        # Where each van is heading: the job en route, else a free technician's next job;
        # and the free-flow time to it, two field look-ups per van (both ways of its road).
        edge, alt, frac = matched.edge, matched.alt_edge, matched.frac
        heads = self.graph.edge_dst
        head_e = heads[edge]
        alt0 = np.maximum(alt, 0)
        head_a = heads[alt0]
        dst = np.full(m, -1, dtype=np.int64)
        en_route = np.zeros(m, dtype=bool)
        at_e = np.full(m, np.inf)
        at_a = np.full(m, np.inf)
        static = self.fields.static
        head_e_list, head_a_list = head_e.tolist(), head_a.tolist()
        for j, tech in enumerate(techs):
            wo = tech.en_route
            if wo is None:
                if tech.current is not None or not tech.queue:
                    continue
                wo = tech.queue[0]
            else:
                en_route[j] = True
            node = jobs[wo].site_node
            dst[j] = node
            seconds = static(node).seconds
            at_e[j] = seconds[head_e_list[j]]
            at_a[j] = seconds[head_a_list[j]]
        free, ahead = time_to(
            self.graph, matched, at_e, at_a, self.fields.base_time_s, self._match_cfg
        )

        # Speed evidence: free-flow progress between two positions of a van en route...
        slots = np.fromiter((t.slot for t in techs), np.int64, m)
        prev_dst = self.pos.pair_dst[slots]
        prev_free = self.pos.pair_static[slots]
        prev_ms = self.pos.pair_ms[slots]
        prev_x = self.pos.pair_x[slots]
        prev_y = self.pos.pair_y[slots]
        dt = (times - prev_ms) / 1000.0
        pair = en_route & (prev_dst == dst) & (dt > 0.0) & (dt <= cfg.max_pair_s)
        # ...else what a moving fix's own speed says about its road.
        moving = ~pair & (speed >= cfg.min_heading_speed_mps) & (matched.dist_m <= cfg.snap_m)
        if pair.any() or moving.any():
            span = cfg.speed_span_s
            safe = np.where(moving, speed, 1.0)
            self.speeds.observe(
                np.concatenate([(matched.x + prev_x)[pair] / 2.0, matched.x[moving]]),
                np.concatenate([(matched.y + prev_y)[pair] / 2.0, matched.y[moving]]),
                np.concatenate([dt[pair], (span * self._base_speed[edge] / safe)[moving]]),
                np.concatenate([(prev_free - free)[pair], np.full(int(moving.sum()), span)]),
                np.concatenate([times[pair], times[moving]]),
            )

        pos = self.pos
        pos.ping_ms[slots] = times
        pos.x[slots], pos.y[slots] = matched.x, matched.y
        pos.edge[slots], pos.frac[slots], pos.alt[slots] = edge, frac, alt
        pos.dist[slots], pos.speed[slots] = matched.dist_m, speed
        pos.rem_dst[slots], pos.rem_static[slots], pos.rem_ahead[slots] = dst, free, ahead
        new_leg = (dst >= 0) & (pos.leg_dst[slots] != dst)
        pos.leg_dst[slots[new_leg]] = dst[new_leg]
        pos.leg_origin[slots[new_leg]] = ahead[new_leg]
        starting = slots[en_route & (prev_dst != dst)]
        pos.drive_ms[starting] = times[en_route & (prev_dst != dst)]
        pos.drive_free[starting] = free[en_route & (prev_dst != dst)]
        pos.pair_dst[slots] = np.where(en_route, dst, -1)
        driving = slots[en_route]
        pos.pair_static[driving] = free[en_route]
        pos.pair_ms[driving] = times[en_route]
        pos.pair_x[driving] = matched.x[en_route]
        pos.pair_y[driving] = matched.y[en_route]

    def _geofence(self, techs: list[Tech], x: FloatArray, y: FloatArray) -> None:
        """Arrivals: the first in-order ping of a van en route inside its site's geofence.

        Only vans whose newest ping of the step is within twice the radius are scanned (a van
        that drove through its destination's geofence and on is not arriving), which keeps
        this off the path of the step's other pings.
        """
        radius = self.config.arrival_radius_m
        driving = [j for j, tech in enumerate(techs) if tech.en_route is not None]
        if not driving:
            return
        sel = np.asarray(driving, dtype=np.int64)
        nodes = np.fromiter(
            (self.jobs[str(techs[j].en_route)].site_node for j in driving), np.int64, len(sel)
        )
        gap = np.hypot(x[sel] - self._node_x[nodes], y[sel] - self._node_y[nodes])
        near = {techs[j].id: str(techs[j].en_route) for j in sel[gap <= 2 * radius].tolist()}
        if not near:
            return
        rows: list[tuple[Fix, int, str]] = []
        for tid, time, _seq, wo, source, row in self._pings:
            if wo is not None and near.get(tid) == wo:
                fix = source.ping(row)
                if fix is not None:
                    rows.append((fix, time, wo))
        lat = np.fromiter((p[0][1] for p in rows), np.float64, len(rows))
        lon = np.fromiter((p[0][2] for p in rows), np.float64, len(rows))
        px, py = self.graph.project(lat, lon)
        sites = np.fromiter((self.jobs[p[2]].site_node for p in rows), np.int64, len(rows))
        inside = np.hypot(px - self._node_x[sites], py - self._node_y[sites]) <= radius
        for r in np.flatnonzero(inside).tolist():
            fix, time, wo = rows[r]
            job = self.jobs[wo]
            if job.arrival_ms is None and job.status == "en_route":
                self._arrived(job, time, time, fix[0])

    def _static_from_position(self, tech: Tech, dst: int) -> tuple[float, int]:
        """Free-flow seconds from the matched position to ``dst``, and the node ahead."""
        pos, row = self.pos, slice(tech.slot, tech.slot + 1)
        here = Matched(
            edge=pos.edge[row],
            frac=pos.frac[row],
            alt_edge=pos.alt[row],
            dist_m=pos.dist[row],
            x=pos.x[row],
            y=pos.y[row],
        )
        static = self.fields.static(dst).seconds
        heads = self.graph.edge_dst
        at_head = static[heads[here.edge]].astype(np.float64)
        at_alt = static[heads[np.maximum(here.alt_edge, 0)]].astype(np.float64)
        base = self.fields.base_time_s
        free, ahead = time_to(self.graph, here, at_head, at_alt, base, self._match_cfg)
        return float(free[0]), int(ahead[0])

    def _from_position(self, tech: Tech, dst: int) -> tuple[float, float]:
        """``(live, free-flow)`` seconds from the technician's matched position to ``dst``.

        Free-flow from the field; live by the ratio of the rest of the van's route (the leg
        from where it was first seen heading to ``dst``), at the published factors.
        """
        pos, row = self.pos, tech.slot
        if pos.rem_dst[row] == dst:
            free, ahead = float(pos.rem_static[row]), int(pos.rem_ahead[row])
        else:
            free, ahead = self._static_from_position(tech, dst)
        origin = int(pos.leg_origin[row]) if pos.leg_dst[row] == dst else ahead
        leg = self.fields.leg(origin, dst)
        suffix = self._suffix(leg)
        live = live_remaining(leg, suffix, free)
        if pos.pair_dst[row] == dst and pos.drive_ms[row] >= 0:
            # This van's own pace so far on this drive, against what the model says the
            # part behind it takes: a slow van (a jam the cells have not caught, a careful
            # driver) is likely slow for the rest too, the more so the further it has come.
            behind = float(pos.drive_free[row]) - free
            taken = (int(pos.ping_ms[row]) - int(pos.drive_ms[row])) / 1000.0
            model = live_remaining(leg, suffix, float(pos.drive_free[row])) - live
            if behind > 30.0 and taken > 0.0 and model > 0.0:
                pace = min(max(taken / model, 0.5), 3.0)
                weight = behind / (behind + self.config.drive_pace_s)
                live *= pace**weight
        return live, free

    def _suffix(self, leg: Leg) -> FloatArray:
        """Live seconds left along a leg at the published factors (cached per version)."""
        key = (leg.origin, leg.dst)
        version = self.speeds.version
        cached = self._suffixes.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        suffix = live_suffix(leg, self.speeds.edge_times())
        if len(self._suffixes) >= 65_536:
            self._suffixes.clear()  # a bound, not a policy: entries are cheap to recompute
        self._suffixes[key] = (version, suffix)
        return suffix

    # ========================================================================= evaluation

    def _leg(self, origin: int, dst: int) -> tuple[float, float]:
        """``(live, free-flow)`` seconds of the leg ``origin -> dst`` at published factors."""
        leg = self.fields.leg(origin, dst)
        return float(self._suffix(leg)[0]), leg.static_s

    def _start_s(self, tech: Tech, now: int) -> float:
        """Seconds from now to the start of the shift if they have not set off yet, else NaN.

        Before ShiftStarted the start is unknown; the first promised window of their queue
        stands in for it (dispatchers promise windows from the start of the working day).
        """
        if tech.current is not None or tech.departed or not tech.queue:
            return math.nan
        if tech.on_shift and tech.shift_ms is not None:
            return (tech.shift_ms - now) / 1000.0
        if not tech.on_shift and not tech.ended:
            first = min(self.jobs[wo].ws for wo in tech.queue)
            return max(first - now, 0) / 1000.0
        return math.nan

    def _chain(self, tech: Tech, now: int, legged: list[_Stop]) -> list[_Stop]:
        """The technician's stops: the job on hand, then the queue (at most max_stops).

        Queued stops whose leg is still to be priced are also added to ``legged``.
        """
        stops: list[_Stop] = []
        origin: int | None = None
        current = self.jobs.get(tech.current) if tech.current is not None else None
        from_position = False
        ping_ms = -1
        if current is None or current.status == "en_route":
            ping_ms = int(self.pos.ping_ms[tech.slot])
            from_position = ping_ms >= 0 and self.pos.edge[tech.slot] >= 0
        if current is not None:
            if current.status == "en_route" and current.arrival_ms is None:
                if from_position:
                    live, free = self._from_position(tech, current.site_node)
                    since = max(ping_ms, current.en_route_at or ping_ms)
                else:
                    # No fix since setting off: from the last site (or home), dead reckoned.
                    start = tech.last_site_node
                    if start is None:
                        start = tech.home_node
                    live, free = (
                        (0.0, 0.0) if start is None else self._leg(start, current.site_node)
                    )
                    since = current.en_route_at or now
                elapsed = max(now - since, 0) / 1000.0
                # Dead reckoning since the last fix, never below a quarter of what was left.
                travel = max(live - elapsed, 0.25 * live)
                stops.append(_Stop(current, EN_ROUTE, travel, free * travel / max(live, 1e-3)))
            elif current.status in ("in_progress", "paused") and current.part_missing_ms:
                anchor = (current.part_missing_ms - now) / 1e3
                stops.append(_Stop(current, WORKING, anchor_s=anchor, timer="missing_wind_down"))
            elif current.status in ("in_progress", "paused") and current.part_used_ms is not None:
                anchor = (current.part_used_ms - now) / 1e3
                stops.append(_Stop(current, WORKING, anchor_s=anchor, timer="wind_down"))
            elif current.status in ("in_progress", "paused") and current.started_at is not None:
                stops.append(_Stop(current, WORKING, anchor_s=(current.started_at - now) / 1e3))
            else:
                arrived = current.arrival_ms if current.arrival_ms is not None else now
                stops.append(_Stop(current, ARRIVED, anchor_s=(arrived - now) / 1e3))
            origin = current.site_node
            from_position = False
        elif not from_position:
            origin = tech.last_site_node if tech.last_site_node is not None else tech.home_node
        max_stops = self.config.max_stops
        jobs = self.jobs
        leg_of = self.fields.leg
        for wo in tech.queue:
            if len(stops) >= max_stops:
                break
            job = jobs[wo]
            if from_position:
                live, free = self._from_position(tech, job.site_node)
                from_position = False
            elif origin is not None:
                leg = leg_of(origin, job.site_node)
                stop = _Stop(job, QUEUED, 0.0, leg.static_s, 0.0, None, leg)
                stops.append(stop)
                legged.append(stop)
                origin = job.site_node
                continue
            else:
                live, free = 0.0, 0.0
            if not (math.isfinite(live) and math.isfinite(free)):
                live, free = 0.0, 0.0
            stops.append(_Stop(job, QUEUED, live, free))
            origin = job.site_node
        return stops

    def _price_legs(self, legged: list[_Stop]) -> None:
        """Live seconds of queued stops' legs at the published factors, in one pass.

        A leg's live time is the sum of its edges' live times; legs already priced at the
        current speed version are taken from ``_leg_live``.
        """
        version = self.speeds.version
        if self._leg_version != version:
            self._leg_live = {}
            self._leg_version = version
        known = self._leg_live
        pending: list[_Stop] = []
        for stop in legged:
            leg = stop.leg
            if leg is None:
                continue
            live = known.get((leg.origin, leg.dst))
            if live is None:
                pending.append(stop)
            else:
                stop.travel_s = live
        if pending:
            legs = [stop.leg for stop in pending if stop.leg is not None]
            sizes = np.fromiter((len(leg.edges) for leg in legs), np.int64, len(legs))
            totals = np.zeros(len(legs))
            routed = sizes > 0
            if routed.any():
                edges = np.concatenate([leg.edges for leg in legs if len(leg.edges)])
                times = self.speeds.edge_times()[edges]
                starts = np.cumsum(sizes[routed]) - sizes[routed]
                totals[routed] = np.add.reduceat(times, starts)
            for stop, leg, total in zip(pending, legs, totals.tolist(), strict=True):
                live = total if math.isfinite(leg.static_s) else math.inf
                known[(leg.origin, leg.dst)] = live
                stop.travel_s = live
        isfinite = math.isfinite
        for stop in legged:
            if not (isfinite(stop.travel_s) and isfinite(stop.free_s)):
                stop.travel_s = stop.free_s = 0.0
            stop.leg = None

    def _open_work(self, now: int) -> list[tuple[str, int, float]]:
        """Jobs under way (work started, not completed) as right-censored durations."""
        return [
            (job.job_type, job.visit, (now - job.started_at) / 1000.0)
            for job in self.jobs.values()
            if job.status in ("in_progress", "paused")
            and job.started_at is not None
            and job.tech is not None
            and job.part_missing_ms is None
        ]

    def _evaluate(self, todo: list[tuple[Tech, _Cause]]) -> None:
        cfg = self.config
        now_step = max(cause.time for _, cause in todo)
        if cfg.duration_censoring:
            self.durations.set_open(self._open_work(now_step))
        legged: list[_Stop] = []
        chains = [self._chain(tech, cause.time, legged) for tech, cause in todo]
        self._price_legs(legged)
        # The cold-start spread is read at the evaluation's first cause.
        first = todo[0][1].time
        # Chains with no arrival to report (nothing queued behind the job on hand) publish
        # nothing and teach nothing: they are left out (each chain's draws are its own, so
        # the others' results do not change; see simulate_arrivals).
        kept = [
            (item, stops)
            for item, stops in zip(todo, chains, strict=True)
            if len(stops) > 1 or (stops and stops[0].kind in (QUEUED, EN_ROUTE))
        ]
        if not kept:
            return
        todo = [item for item, _stops in kept]
        chains = [stops for _item, stops in kept]
        width = max(len(c) for c in chains)
        n = len(todo)
        inputs = Chains.empty(n, width)
        overrun = np.zeros(n, dtype=bool)
        priors: dict[int, float] = {}
        hour_ms = 3_600_000
        offset_ms = cfg.utc_offset_minutes * 60_000
        # The stops' inputs as flat columns, written into the padded arrays at once; the
        # duration laws looked up once per (law, job kind, technician) in the evaluation.
        laws: dict[tuple[str | None, str, bool, str], tuple[float, float, float]] = {}
        durations, overheads = self.durations, self.overheads
        # One tuple per stop: (chain, stop, kind, travel, free, window start, mu, sigma,
        # level, anchor), turned into columns at the end.
        cells: list[tuple[int, int, int, float, float, float, float, float, float, float]] = []
        add = cells.append
        prior_ratio: list[float] = []
        start_s: list[float] = []
        for i, ((tech, cause), stops) in enumerate(zip(todo, chains, strict=True)):
            now = cause.time
            hour = (now + offset_ms) // hour_ms
            prior = priors.get(hour)
            if prior is None:
                prior = priors[hour] = self.speeds.prior_at(now)
            prior_ratio.append(prior)
            start_s.append(self._start_s(tech, now))
            tid = tech.id
            for k, stop in enumerate(stops):
                job = stop.job
                kind = stop.kind
                timer = stop.timer
                key: tuple[str | None, str, bool, str]
                if timer is not None:
                    key = (timer, "", False, "")
                elif kind == WORKING:
                    key = ("working", job.job_type, job.visit > 1, tid)
                else:
                    key = (None, job.job_type, job.visit > 1, tid)
                law = laws.get(key)
                if law is None:
                    if timer is not None:
                        law = (*overheads.params(timer), 0.0)
                    elif kind == WORKING:
                        law = (*durations.params(job.job_type, job.visit, tid), 0.0)
                    else:
                        law = durations.split(job.job_type, job.visit, tid)
                    laws[key] = law
                mu, sigma, level = law
                anchor = stop.anchor_s
                add(
                    (
                        i,
                        k,
                        kind,
                        stop.travel_s,
                        stop.free_s,
                        (job.ws - now) / 1000.0,
                        mu,
                        sigma,
                        level,
                        anchor,
                    )
                )
                if kind == WORKING and -anchor > math.exp(mu):
                    overrun[i] = True
        (at_i, at_k, stop_kinds, travel, free, window_start, mus, sigmas, levels, anchors) = zip(
            *cells, strict=True
        )
        at = (np.asarray(at_i, dtype=np.int64), np.asarray(at_k, dtype=np.int64))
        inputs.kind[at] = stop_kinds
        inputs.travel_s[at] = travel
        inputs.free_s[at] = free
        inputs.window_start_s[at] = window_start
        inputs.mu[at] = mus
        inputs.sigma[at] = sigmas
        inputs.sigma_level[at] = levels
        inputs.anchor_s[at] = anchors
        inputs.prior_ratio[:] = prior_ratio
        inputs.start_s[:] = start_s
        evidence = self.speeds.evidence_s(first)
        cold = cfg.cold_evidence_s / (cfg.cold_evidence_s + evidence)
        params = ChainParams(
            setup=self.overheads.params("setup"),
            turnaround=self.overheads.params("turnaround"),
            lead=self.overheads.params("lead"),
            start_delay=self.overheads.params("start_delay"),
            travel_sigma=cfg.travel_sigma,
            travel_sigma_growth=cfg.travel_sigma_growth,
            en_route_sigma=cfg.en_route_sigma,
            reversion_s=cfg.congestion_reversion_s,
            cold_sigma=cfg.cold_travel_sigma * cold,
        )
        arrivals = simulate_arrivals(inputs, params, self._z)
        reported = (inputs.kind == QUEUED) | (inputs.kind == EN_ROUTE)
        ti, ki = np.nonzero(reported)
        if len(ti) == 0:
            return
        # Seconds from each technician's now: the calibrator's floors are in seconds.
        lo, mid, hi = np.quantile(arrivals[ti, ki], cfg.levels, axis=-1)
        nows = np.array([todo[i][1].time for i in ti.tolist()], dtype=np.int64)
        # Calibration classes: 0 en route, 1 next job of a free technician, 2 behind work.
        kinds = np.where(inputs.kind[ti, ki] == EN_ROUTE, 0, np.where(ki == 0, 1, 2))
        buckets = self.calibrator.buckets(mid, kinds.astype(np.int64))
        c_lo, c_mid, c_hi = self.calibrator.calibrate(buckets, lo, mid, hi)
        ti_list, ki_list = ti.tolist(), ki.tolist()
        ends = np.array(
            [chains[i][k].job.we for i, k in zip(ti_list, ki_list, strict=True)], np.int64
        )
        p_late = self.calibrator.prob_after(buckets, (ends - nows) / 1000.0, (lo, mid, hi))
        # Work that would end past the shift (plus the overtime dispatch allows) is moved to
        # another day, not delivered late, and dispatch decides with the job's mean time
        # (overruns included) from when the technician gets there: no delay notice for it.
        # "Would" means even if the technician gets there early (P10): a delay notice wrongly
        # held back (a late visit nobody announced) costs more than one for a visit dispatch
        # then moves, and the arrival hours ahead is far from certain.
        shift_end = np.full(len(ti), math.inf)
        for r, i in enumerate(ti.tolist()):
            planned = todo[i][0].planned_end_ms
            if planned is not None:
                shift_end[r] = (planned - todo[i][1].time) / 1000.0 + cfg.overtime_s
        # The job's mean time is the point estimate's: how much jobs of its kind vary one
        # from the next (sigma), not how unsure the engine still is of the kind's level.
        mean_work = np.exp(inputs.mu[ti, ki] + inputs.sigma[ti, ki] ** 2 / 2.0)
        today = lo + mean_work <= shift_end

        # Python numbers from here on: the same doubles, cheaper to read one at a time.
        lo_l, mid_l, hi_l = lo.tolist(), mid.tolist(), hi.tolist()
        c_lo_l, c_mid_l, c_hi_l = c_lo.tolist(), c_mid.tolist(), c_hi.tolist()
        bucket_l, p_late_l, today_l = buckets.tolist(), p_late.tolist(), today.tolist()
        overrun_l = overrun.tolist()
        every_ms = cfg.calibration_every_s * 1000
        raise_at = self._alert_cfg.raise_threshold
        quiet = raise_at > 0.0  # below it, an alert not raised only ends its streak
        for r, (i, k) in enumerate(zip(ti_list, ki_list, strict=True)):
            tech, cause = todo[i]
            job = chains[i][k].job
            now = cause.time
            quant = [
                now + round(c_lo_l[r] * 1000),
                now + round(c_mid_l[r] * 1000),
                now + round(c_hi_l[r] * 1000),
            ]
            if job.calib_ms is None or now - job.calib_ms >= every_ms:
                job.calib.append(
                    (
                        float(now),
                        float(bucket_l[r]),
                        lo_l[r],
                        mid_l[r],
                        hi_l[r],
                        c_lo_l[r],
                        c_hi_l[r],
                    )
                )
                job.calib_ms = now
                if len(job.calib) > 64:
                    del job.calib[0]
            self._publish(tech, job, cause, quant, overrun_l[i])
            alert = job.alert
            if quiet and not alert.raised and (not today_l[r] or p_late_l[r] < raise_at):
                alert.streak = 0  # what alerts.step does then, with nothing to announce
            else:
                self._alert(tech, job, cause, quant, p_late_l[r], today_l[r])

    def _publish(
        self, tech: Tech, job: Job, cause: _Cause, quant: list[int], overrun: bool
    ) -> None:
        """Publish the window if it is new, moved meaningfully, or is due again (interval)."""
        cfg = self.config
        now = cause.time
        reason = job.reason
        if reason is None:
            pub = job.pub
            pub_ms = job.pub_ms
            shown = job.pub_window
            if pub is None or pub_ms is None:
                reason = "assigned"
            elif shown is None or shown[0] != job.ws or shown[1] != job.we:
                reason = "rescheduled"
            else:
                horizon = max(quant[1] - now, 0) / 1000.0
                limit = max(cfg.move_min_s, cfg.move_fraction * horizon) * 1000.0
                # A window end moves when it shifts by a good part of its own side of the
                # window as last published, too: far tails jitter by hours as the model learns.
                end = cfg.move_end_fraction
                moved = abs(quant[1] - pub[1]) > limit or (
                    now - pub_ms >= cfg.move_end_hold_s * 1000
                    and (
                        abs(quant[0] - pub[0]) > max(limit, end * (pub[1] - pub[0]))
                        or abs(quant[2] - pub[2]) > max(limit, end * (pub[2] - pub[1]))
                    )
                )
                if moved:
                    reason = "job_overrun" if overrun and quant[1] > pub[1] else "moved"
                elif now - pub_ms >= cfg.publish_interval_s * 1000:
                    reason = "interval"
                else:
                    return
        job.reason = None
        job.pub = quant
        job.pub_ms = now
        job.pub_window = [job.ws, job.we]
        self._out.append(
            EtaUpdated(
                id=f"eta-{cause.causation.id}-{job.id}",
                source=SOURCE,
                time=now,
                subject=job.id,
                causation=cause.causation,
                work_order_id=job.id,
                technician_id=tech.id,
                p10=quant[0],
                p50=quant[1],
                p90=quant[2],
                window_start=job.ws,
                window_end=job.we,
                reason=reason,
                model_version=cfg.model_version,
            )
        )

    def _alert(
        self, tech: Tech, job: Job, cause: _Cause, quant: list[int], p_late: float, today: bool
    ) -> None:
        """Feed the alert state machine; raise (with a message and a swap) or clear.

        The machine runs on P(late) for work that will be done today, on 0 for work that
        will be moved to another day (``today`` False): that is dispatch's reschedule to
        announce, not a new ETA. The events report P(late).
        """
        now = cause.time
        p = min(max(p_late, 0.0), 1.0)
        action = al.step(job.alert, p if today else 0.0, now, self._alert_cfg)
        if action == al.RAISE:
            job.alert_window = [job.ws, job.we]
            offset = self.config.utc_offset_minutes
            lo = quant[0] // 300_000 * 300_000
            hi = -(-quant[2] // 300_000) * 300_000
            message = f"New ETA {_local_hhmm(lo, offset)}-{_local_hhmm(hi, offset)}"
            suggestion = self._suggest(tech, job, now, quant[1])
            self._out.append(
                LateAlertRaised(
                    id=f"alert-{cause.causation.id}-{job.id}",
                    source=SOURCE,
                    time=now,
                    subject=job.id,
                    causation=cause.causation,
                    work_order_id=job.id,
                    technician_id=tech.id,
                    probability_late=round(p, 4),
                    p10=quant[0],
                    p50=quant[1],
                    p90=quant[2],
                    window_start=job.ws,
                    window_end=job.we,
                    lead_time_s=(job.we - now) // 1000,
                    message=message,
                    suggested_technician_id=None if suggestion is None else suggestion[0],
                    suggested_p50=None if suggestion is None else suggestion[1],
                )
            )
        elif action == al.CLEAR:
            if job.alert_window != [job.ws, job.we]:
                reason = "rescheduled"
            elif p > self.config.clear_threshold:
                reason = "beyond_shift"  # still late, but it will not be done today
            else:
                reason = "back_in_window"
            self._out.append(
                LateAlertCleared(
                    id=f"alert-clear-{cause.causation.id}-{job.id}",
                    source=SOURCE,
                    time=now,
                    subject=job.id,
                    causation=cause.causation,
                    work_order_id=job.id,
                    technician_id=tech.id,
                    probability_late=round(p, 4),
                    p50=quant[1],
                    reason=reason,
                )
            )

    def _candidates(self, now: int) -> _Candidates:
        """Who could take a job now: on-shift technicians, when they are free and where.

        Built at most once per step (at its first alert). A technician on a job is free when
        its median end (given the time already spent) and a turnaround have passed; they
        leave from that site, others from where they are (or were last, or home).
        """
        if self._candidate_table is not None:
            return self._candidate_table
        turn = math.exp(self.overheads.params("turnaround")[0]) * 1000.0
        setup = math.exp(self.overheads.params("setup")[0]) * 1000.0
        ids: list[str] = []
        skills: list[frozenset[str]] = []
        free_at: list[float] = []
        nodes: list[int] = []
        # Those at work: the end of the job on hand given the time spent, all at once.
        working: list[int] = []
        started: list[float] = []
        mus: list[float] = []
        sigmas: list[float] = []
        edges = self.pos.edge
        for other in sorted(self.techs.values(), key=lambda t: t.id):
            if not other.on_shift or not other.registered:
                continue
            current = self.jobs.get(other.current) if other.current is not None else None
            at = float(now)
            node: int | None
            if current is not None:
                mu, sigma = self.durations.params(current.job_type, current.visit, other.id)
                if current.status in ("in_progress", "paused") and current.started_at:
                    working.append(len(ids))
                    started.append(float(current.started_at))
                    mus.append(mu)
                    sigmas.append(sigma)
                else:
                    at = max(now + math.exp(mu) * 1000.0 + setup, float(now)) + turn
                node = current.site_node
            elif edges[other.slot] >= 0:
                node = int(self.graph.edge_dst[edges[other.slot]])
            else:
                node = other.last_site_node if other.last_site_node is not None else other.home_node
            if node is None:
                continue
            ids.append(other.id)
            skills.append(frozenset(other.skills))
            free_at.append(at)
            nodes.append(node)
        free = np.asarray(free_at, dtype=np.float64)
        if working:
            begun = np.asarray(started)
            rest = conditional_lognormal(
                np.asarray(mus), np.asarray(sigmas), (now - begun) / 1000.0, np.zeros(len(begun))
            )
            free[working] = np.maximum(begun + rest * 1000.0, float(now)) + turn
        table = _Candidates(ids, skills, free, np.asarray(nodes, dtype=np.int64))
        self._candidate_table = table
        return table

    def _suggest(self, tech: Tech, job: Job, now: int, p50: int) -> tuple[str, int] | None:
        """The on-shift technician with the job's skills (and parts) who arrives first.

        Required skills are learned (:meth:`_learn_skills`); parts are those used on at least
        a third of the job type's completed visits, and a candidate with them all is
        preferred. Only technicians of this engine's partition are known. Travel is the
        free-flow field of the site times the region's live factor. The candidate must make
        the window and beat the current p50 by ``suggest_gain_s``.
        """
        required = self.required_skills.get(job.job_type)
        if required is None:
            return None
        table = self._candidates(now)
        if not table.ids:
            return None
        need = frozenset(required)
        travel = self.fields.static(job.site_node).seconds[table.nodes].astype(np.float64)
        arrive = table.free_at + travel * self.speeds.region_factor * 1000.0
        limit = min(float(job.we), p50 - self.config.suggest_gain_s * 1000.0)
        done = self.type_jobs.get(job.job_type, 0)
        kit = [
            part
            for part, count in sorted(self.type_parts.get(job.job_type, {}).items())
            if done and count * 3 >= done
        ]
        best: tuple[bool, int, str] | None = None
        for c in np.flatnonzero(arrive <= limit).tolist():
            other_id = table.ids[c]
            if other_id == tech.id or not need <= table.skills[c]:
                continue
            van = self.techs[other_id].van
            key = (any(van.get(part, 0) <= 0 for part in kit), int(arrive[c]), other_id)
            if best is None or key < best:
                best = key
        return None if best is None else (best[2], best[1])

    # ============================================================================== state

    def snapshot(self) -> dict[str, Any]:
        """The engine's whole state as plain JSON-able data (see the module docstring)."""
        # The open step's pings, read (an unreadable one is left out, as it is when the
        # step closes: rows after it move up one).
        pings: list[list[Any]] = []
        renumber: dict[int, int] = {}
        for index, (tid, time, seq, job, source, row) in enumerate(self._pings):
            fix = source.ping(row)
            if fix is None:
                continue
            position, lat, lon, speed, heading = fix
            renumber[index] = len(pings)
            pings.append([tid, time, lat, lon, speed, heading, _causation(position), seq, job])
        last_ping = {
            tid: renumber[index] for tid, index in self._last_ping.items() if index in renumber
        }
        return {
            "format": STATE_FORMAT,
            "seq": self._seq,
            "watermark": self._watermark,
            "step": self._step,
            "causes": {
                tid: [c.seq, c.time, _causation(c.causation)] for tid, c in self._causes.items()
            },
            "pings": pings,
            "last_ping": last_ping,
            "techs": {tid: _tech_data(t) for tid, t in self.techs.items()},
            "positions": self.pos.snapshot(),
            "jobs": {wo: _job_data(j) for wo, j in self.jobs.items()},
            "required_skills": {k: list(v) for k, v in self.required_skills.items()},
            "type_parts": {k: dict(v) for k, v in self.type_parts.items()},
            "type_jobs": dict(self.type_jobs),
            "speeds": self.speeds.snapshot(),
            "durations": self.durations.snapshot(),
            "overheads": self.overheads.snapshot(),
            "calibration": self.calibrator.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot` (taken with the same graph and config)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown ETA engine state format {state.get('format')!r}")
        self._reset()
        self._seq = int(state["seq"])
        self._watermark = state["watermark"]
        self._step = state["step"]
        self._causes = {
            tid: _Cause(int(seq), int(time), Causation(*cause))
            for tid, (seq, time, cause) in state["causes"].items()
        }
        restored: list[Fix] = []
        source = _Fixes(restored)
        for tid, time, lat, lon, speed, heading, cause, seq, job in state["pings"]:
            self._pings.append((str(tid), int(time), int(seq), job, source, len(restored)))
            restored.append((Causation(*cause), float(lat), float(lon), speed, heading))
        self._last_ping = {k: int(v) for k, v in state["last_ping"].items()}
        for tid, data in state["techs"].items():
            tech = Tech(**data)
            tech.van = dict(tech.van)
            tech.queue = list(tech.queue)
            tech.skills = list(tech.skills)
            self.techs[tid] = tech
        self.pos.restore(state["positions"])
        for wo, data in state["jobs"].items():
            values = dict(data)
            values["alert"] = al.AlertState.from_list(values["alert"])
            values["calib"] = [tuple(map(float, c)) for c in values["calib"]]
            self.jobs[wo] = Job(**values)
        self.required_skills = {k: list(v) for k, v in state["required_skills"].items()}
        self.type_parts = {k: dict(v) for k, v in state["type_parts"].items()}
        self.type_jobs = dict(state["type_jobs"])
        self.speeds.restore(state["speeds"])
        self.durations.restore(state["durations"])
        self.overheads.restore(state["overheads"])
        self.calibrator.restore(state["calibration"])


def _causation(c: Causation) -> list[Any]:
    return [c.id, c.topic, c.partition, c.offset]
