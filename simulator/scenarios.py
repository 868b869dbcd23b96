"""What one simulated day looks like: the scenario presets and the parameters of a run.

A run is described by two frozen dataclasses:

* :class:`Scenario`: *how the world behaves* (traffic, incidents, GPS quality, overruns,
  parts, customers). Four documented presets live in :data:`SCENARIOS`; every field can be
  overridden one by one with :func:`dataclasses.replace` (or :func:`make_params`).
* :class:`SimParams`: *which day is simulated*: how many technicians, the seed, the date, the
  shift, and the :class:`Scenario`.

The presets differ from ``normal`` only in the fields listed here:

============ ==================================================================================
preset       what changes, and why
============ ==================================================================================
normal       a weekday in late November: mild rush hours in the Andorra la Vella/Escaldes
             valley (peak +70 % travel time there), ~0.3 incidents an hour, a GPS fix every
             5-15 s while driving and about every 60 s on site.
rush-hour    a bad traffic day (holiday eve, first snow): rush-hour peaks ``x4.8`` in the valley
             and wider (1 h 20 min standard deviation), base congestion tripled. The dispatcher
             plans exactly as on a normal day, so more arrivals miss their windows.
incidents    ten times the incident rate, each slowing a larger area (400 m) more (x3-x8) for
             longer (median 60 min): tests delay detection that traffic profiles cannot
             anticipate.
sparse-gps   low-end devices or a battery-saving app: a fix every 60-120 s whatever the
             vehicle does, more dropouts and signal gaps, and a fifth of the fixes delivered
             late (buffered on the device): tests map-matching and ETAs on thin data.
============ ==================================================================================

Times of day are local (Europe/Andorra). The simulated dates are in November, when Andorra is
on CET, so local time is taken as a **fixed offset of UTC+1** (:attr:`SimParams.utc_offset_h`);
no time-zone database is consulted, which keeps the simulator free of environment state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_range(name: str, value: tuple[float, float], minimum: float = 0.0) -> None:
    lo, hi = value
    if not minimum <= lo <= hi:
        raise ValueError(f"{name} must be (lo, hi) with {minimum:g} <= lo <= hi, got {value!r}")


@dataclass(frozen=True, slots=True)
class Scenario:
    """How the simulated world behaves. Field comments give the unit and the meaning.

    Invalid values (a probability outside [0, 1], an interval range with ``lo > hi``...) raise
    ``ValueError`` at construction, so an override typo fails before a run starts.
    """

    name: str = "normal"
    description: str = "a weekday with mild rush hours"

    # -- traffic -----------------------------------------------------------------------------
    congestion_base: float = 0.10
    """All-day extra travel time in the busiest area (0.10 = +10 %), scaled by area weight."""
    congestion_amplitude: float = 0.60
    """Extra travel time at the peak of a rush hour in the busiest area (0.6 = +60 %)."""
    rush_width_min: float = 45.0
    """Standard deviation of each rush-hour peak (08:15, 13:15 at a third, 17:45 local)."""
    incident_rate_per_hour: float = 0.3
    """Incidents (accidents, roadworks, a lorry unloading) per hour over the whole region."""
    incident_slowdown: tuple[float, float] = (2.0, 4.0)
    """Travel-time multiplier on the affected roads, drawn uniformly in this range."""
    incident_duration_min: float = 40.0
    """Median incident duration (lognormal, spread 0.5)."""
    incident_radius_m: float = 200.0
    """Roads whose midpoint is within this distance of the incident are slowed."""

    # -- GPS ---------------------------------------------------------------------------------
    ping_interval_s: tuple[float, float] = (5.0, 15.0)
    """Time between fixes while driving, uniform in this range."""
    site_ping_interval_s: tuple[float, float] = (55.0, 65.0)
    """Time between fixes while parked (on site, waiting, at home during the shift)."""
    gps_accuracy_m: tuple[float, float] = (4.0, 12.0)
    """Reported accuracy (68 % radius); the error on each axis is normal with sd accuracy/2."""
    gps_outlier_rate: float = 0.003
    """Share of fixes thrown off by multipath (sd 25 m per axis, accuracy 15-40 m)."""
    dropout_rate: float = 0.03
    """Share of fixes lost independently (no satellite fix, upload failed for good)."""
    gap_rate: float = 0.10
    """Chance per driving leg of one signal gap (tunnel, gorge) of 30-180 s."""
    late_delivery_rate: float = 0.03
    """Share of fixes buffered on the device and delivered late (out of order)."""
    late_delivery_s: tuple[float, float] = (20.0, 600.0)
    """Extra delay of a late fix, uniform in this range (normal fixes take 0.2-10 s)."""

    # -- work --------------------------------------------------------------------------------
    jobs_per_technician: float = 5.0
    """Mean jobs per technician over a 9-hour shift (scaled by :attr:`SimParams.hours`)."""
    window_minutes: int = 120
    """Length of a promised arrival window."""
    urgent_share: float = 0.15
    """Share of the day's demand that is booked during the day as urgent, same-day work."""
    overrun_rate: float = 0.12
    """Share of jobs that overrun their drawn duration..."""
    overrun_factor: tuple[float, float] = (1.3, 2.0)
    """...by a factor drawn uniformly in this range."""
    missing_part_rate: float = 0.04
    """Chance that a van starts the day without a given part of its trade's kits."""
    untapped_arrival_rate: float = 0.15
    """Share of arrivals the technician forgets to tap (only GPS shows them)."""
    untapped_departure_rate: float = 0.4
    """Share of departures from a site that are not tapped (only GPS shows them)."""
    pause_rate: float = 0.10
    """Share of visits paused once (waiting for the customer, access, a break)."""
    follow_up_rate: float = 0.03
    """Share of visits (with all parts) that end unfixed, needing a follow-up another day."""
    cancel_rate: float = 0.03
    """Share of booked jobs the customer cancels before the technician sets off."""
    reschedule_rate: float = 0.04
    """Share of booked jobs the customer moves to a later window before the visit."""

    # -- customers ---------------------------------------------------------------------------
    where_are_you_rate: float = 0.7
    """Chance that a customer whose window ended without an arrival calls to ask."""
    call_delay_min: tuple[float, float] = (3.0, 20.0)
    """How long after the window's end such a call comes, uniform in this range."""
    rating_response_rate: float = 0.5
    """Share of customers who answer the feedback request."""
    dispute_rate: float = 0.04
    """Base share of invoices disputed (four times higher after a detractor score)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "urgent_share" or (
                f.name.endswith("_rate") and f.name != "incident_rate_per_hour"
            ):
                _check_rate(f.name, value)
            elif isinstance(value, tuple):
                _check_range(f.name, value)
        if self.ping_interval_s[0] < 1.0 or self.site_ping_interval_s[0] < 1.0:
            raise ValueError("GPS fixes must be at least 1 s apart")
        if self.incident_slowdown[0] < 1.0 or self.overrun_factor[0] < 1.0:
            raise ValueError("slowdown and overrun factors must be >= 1")
        if self.window_minutes < 15:
            raise ValueError("window_minutes must be at least 15")
        for name in (
            "congestion_base",
            "congestion_amplitude",
            "incident_rate_per_hour",
            "jobs_per_technician",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.rush_width_min <= 0 or self.incident_duration_min <= 0:
            raise ValueError("rush_width_min and incident_duration_min must be > 0")


NORMAL = Scenario()
SCENARIOS: dict[str, Scenario] = {
    "normal": NORMAL,
    "rush-hour": replace(
        NORMAL,
        name="rush-hour",
        description="heavy, long rush hours in the valley; planned as on a normal day",
        congestion_base=0.30,
        congestion_amplitude=3.5,
        rush_width_min=80.0,
    ),
    "incidents": replace(
        NORMAL,
        name="incidents",
        description="many incidents slowing wide areas for long",
        incident_rate_per_hour=3.0,
        incident_slowdown=(3.0, 8.0),
        incident_duration_min=60.0,
        incident_radius_m=400.0,
    ),
    "sparse-gps": replace(
        NORMAL,
        name="sparse-gps",
        description="a fix every 60-120 s, more dropouts and late deliveries",
        ping_interval_s=(60.0, 120.0),
        site_ping_interval_s=(60.0, 120.0),
        dropout_rate=0.08,
        gap_rate=0.2,
        late_delivery_rate=0.2,
    ),
}
"""The documented presets, by the name the CLI takes (``--scenario rush-hour``)."""


@dataclass(frozen=True, slots=True)
class SimParams:
    """One simulated day. Same parameters (and the same road graph) -> the same output, byte
    for byte: every random draw comes from ``numpy.random.Generator(PCG64([seed, stream]))``
    with a fixed stream number per purpose, and nothing reads the wall clock.

    The shift runs from ``shift_start_local_h`` for ``hours`` hours, local time (UTC +
    ``utc_offset_h``). The log starts an hour before the shift (registrations, the morning's
    bookings, the dispatch plan) and ends when the last feedback or dispute is in.
    """

    technicians: int = 50
    seed: int = 1
    scenario: Scenario = NORMAL
    start_date: date = date(2026, 11, 23)
    """The simulated day (default: Monday 23 November 2026)."""
    hours: float = 9.0
    """Planned shift length; 9 h gives the usual 08:00-17:00."""
    shift_start_local_h: float = 8.0
    utc_offset_h: int = 1
    """Local time minus UTC (Europe/Andorra is UTC+1 in winter; taken as fixed, see above)."""
    workforce_seed: int | None = dataclasses.field(default=None, repr=False)
    """The seed the technicians (trade, team, home, van, shift start) are drawn with; None:
    ``seed``. Days simulated with different seeds and one workforce seed are days of the same
    workforce (a simulated week), where each seed alone would hire a new one every day."""

    def __post_init__(self) -> None:
        if self.technicians < 1:
            raise ValueError("technicians must be >= 1")
        if not 1.0 <= self.hours <= 14.0:
            raise ValueError("hours must be between 1 and 14")
        if not 0.0 <= self.shift_start_local_h <= 12.0:
            raise ValueError("shift_start_local_h must be between 0 and 12")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.workforce_seed is not None and self.workforce_seed < 0:
            raise ValueError("workforce_seed must be >= 0")

    @property
    def midnight_ms(self) -> int:
        """Local midnight at the start of :attr:`start_date`, in ms since the epoch (UTC)."""
        utc = datetime(self.start_date.year, self.start_date.month, self.start_date.day, tzinfo=UTC)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return (utc - timedelta(hours=self.utc_offset_h) - epoch) // timedelta(milliseconds=1)

    @property
    def shift_start_ms(self) -> int:
        """The planned start of every shift (ms since the epoch)."""
        return self.midnight_ms + round(self.shift_start_local_h * HOUR_MS)

    @property
    def shift_end_ms(self) -> int:
        """The planned end of every shift (``ShiftStarted.planned_end``)."""
        return self.shift_start_ms + round(self.hours * HOUR_MS)

    @property
    def log_start_ms(self) -> int:
        """The time of the first event: technicians register an hour before the shift."""
        return self.shift_start_ms - HOUR_MS

    def run_tag(self) -> str:
        """Eight hex digits identifying these parameters; prefixes every event id, so runs
        with different parameters never share an id (consumers deduplicate by id). A workforce
        seed of its own is added to the text hashed (so parameters without one keep their
        tag)."""
        text = repr(self)
        if self.workforce_seed is not None:
            text += f"+workforce_seed={self.workforce_seed}"
        return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def make_params(
    scenario: str | Scenario = "normal",
    *,
    technicians: int = 50,
    seed: int = 1,
    start_date: date = date(2026, 11, 23),
    hours: float = 9.0,
    workforce_seed: int | None = None,
    **overrides: Any,
) -> SimParams:
    """Parameters for a preset, with any :class:`Scenario` field overridden by keyword.

    ``make_params("rush-hour", technicians=500, dropout_rate=0.1)``. Unknown names raise
    ``TypeError``; a preset name not in :data:`SCENARIOS` raises ``KeyError``.
    """
    base = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    return SimParams(
        technicians=technicians,
        seed=seed,
        scenario=replace(base, **overrides) if overrides else base,
        start_date=start_date,
        hours=hours,
        workforce_seed=workforce_seed,
    )


def parse_override(text: str) -> tuple[str, Any]:
    """``"name=value"`` (a CLI ``--set``) -> ``(name, typed value)`` for a Scenario field.

    Ranges are written ``lo,hi`` (``ping_interval_s=60,120``). Raises ``ValueError`` for an
    unknown field or a value of the wrong type.
    """
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep:
        raise ValueError(f"expected name=value, got {text!r}")
    hints = typing.get_type_hints(Scenario)
    if name not in hints:
        raise ValueError(f"unknown scenario parameter {name!r}")
    hint = hints[name]
    raw = raw.strip()
    if hint is float:
        return name, float(raw)
    if hint is int:
        return name, int(raw)
    if hint is str:
        return name, raw
    lo, _, hi = raw.partition(",")
    if not hi:
        raise ValueError(f"{name} takes a range lo,hi, got {raw!r}")
    return name, (float(lo), float(hi))
