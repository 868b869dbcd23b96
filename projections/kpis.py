"""The KPI catalog, and the incremental bookkeeping that keeps every KPI table row current.

Every KPI is a function of a *group's accumulator*: integer counters (sums) and sorted
integer samples (for percentiles). A group is ``(day, dimension, group)``: dimension
``all`` (group ``all``), ``technician``, ``team``, ``region`` or ``job_type``.

Accumulators are fed by *subjects*: a visit, a work order, a booking, a rating, an invoice, a
customer contact, a technician's day. Each subject's :class:`Contribution` is a pure function
of the projection's state; when a subject changes, its old contribution is taken out of every
group it was in and the new one is added (counters are integers: milliseconds, millimetres,
cents; so the totals are exact and do not depend on the order of updates). Then only the
metrics whose inputs changed are recomputed. So the KPI tables of a log are the same whether
it was projected in one go or batch by batch, with or without restarts.

docs/kpis.md states every formula in terms of events; :data:`METRICS` is its executable form.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

DIMENSIONS = ("all", "technician", "team", "region", "job_type")
DAY_MS = 86_400_000

GroupKey = tuple[str, str, str]
"""(day ``YYYY-MM-DD``, dimension, group)."""
Counters = tuple[tuple[str, int], ...]
Samples = tuple[tuple[str, int], ...]
Groups = tuple[tuple[str, str], ...]
"""(dimension, group) pairs a contribution counts in (``("all", "all")`` always first)."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One KPI. ``kind``: ``count`` (a counter), ``ratio`` (``num / den * scale``, None when
    ``den`` is 0) or ``percentile`` (the ``q`` quantile of a sample, times ``scale``, linear
    interpolation between closest ranks; None without samples)."""

    name: str
    unit: str
    kind: str
    num: str
    den: str = ""
    scale: float = 1.0
    q: float = 0.0
    description: str = ""
    technician_day: bool = False
    """Per technician-day: grouped by the technician's own team and region, not by job type."""

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.num, self.den) if self.den else (self.num,)


MIN = 60_000.0


def _m(name: str, unit: str, kind: str, num: str, den: str = "", **kw: object) -> Metric:
    return Metric(name, unit, kind, num, den, **kw)  # type: ignore[arg-type]


METRICS: tuple[Metric, ...] = (
    # -- arrivals -------------------------------------------------------------------------------
    _m("visits", "visits", "count", "arr", description="visits that reached the site"),
    _m("on_time_rate", "share", "ratio", "arr_on_time", "arr",
       description="arrivals no later than the end of the promised window (SLA hit rate)"),
    _m("early_arrival_rate", "share", "ratio", "arr_early", "arr",
       description="arrivals before the promised window opened"),
    _m("time_to_site_p50_min", "min", "percentile", "tts_ms", scale=1 / MIN, q=0.5,
       description="booking to first arrival, median"),
    _m("time_to_site_p90_min", "min", "percentile", "tts_ms", scale=1 / MIN, q=0.9,
       description="booking to first arrival, 90th percentile"),
    _m("travel_min_per_visit", "min", "ratio", "leg_ms", "leg_n", scale=1 / MIN,
       description="en route to arrival, mean per visit"),
    _m("travel_km_per_visit", "km", "ratio", "leg_mm", "leg_n", scale=1e-6,
       description="GPS distance from en route to arrival, mean per visit"),
    _m("late_arrivals", "visits", "count", "arr_late", description="arrivals after the window"),
    _m("proactive_notice_rate", "share", "ratio", "late_alerted", "arr_late",
       description="late arrivals alerted before their window ended"),
    _m("alert_lead_time_p50_min", "min", "percentile", "alert_lead_ms", scale=1 / MIN, q=0.5,
       description="window end minus the first alert, median over alerted late arrivals"),
    _m("alert_precision", "share", "ratio", "alerted_late", "alerted",
       description="arrivals alerted before they happened that were late"),
    _m("eta_visits_30", "visits", "count", "eta_n",
       description="arrivals with an ETA published at least 30 minutes before"),
    _m("eta_mae_30_min", "min", "ratio", "eta_abs_ms", "eta_n", scale=1 / MIN,
       description="|P50 - arrival| of the ETA in force 30 minutes before arrival, mean"),
    _m("eta_bias_30_min", "min", "ratio", "eta_err_ms", "eta_n", scale=1 / MIN,
       description="arrival - P50 of that ETA, mean (positive: later than predicted)"),
    _m("eta_coverage_30", "share", "ratio", "eta_in", "eta_n",
       description="arrivals inside that ETA's P10-P90 window (nominal 0.8)"),
    _m("eta_width_30_min", "min", "ratio", "eta_width_ms", "eta_n", scale=1 / MIN,
       description="P90 - P10 of that ETA, mean"),
    _m("eta_below_p10_30", "share", "ratio", "eta_le10", "eta_n",
       description="arrivals at or before that ETA's P10 (nominal 0.1)"),
    _m("eta_below_p50_30", "share", "ratio", "eta_le50", "eta_n",
       description="arrivals at or before that ETA's P50 (nominal 0.5)"),
    _m("eta_below_p90_30", "share", "ratio", "eta_le90", "eta_n",
       description="arrivals at or before that ETA's P90 (nominal 0.9)"),
    _m("where_are_you_per_100_visits", "per 100 visits", "ratio", "way", "arr", scale=100.0,
       description='"where are you?" contacts per 100 arrivals'),
    # -- completed visits -------------------------------------------------------------------
    _m("completed_visits", "visits", "count", "done", description="visits completed"),
    _m("missing_part_rate", "share", "ratio", "done_missing", "done",
       description="completed visits that reported a missing part"),
    _m("feedback_1h_rate", "share", "ratio", "done_rated_1h", "done",
       description="completed visits rated by the customer within one hour"),
    # -- work orders ------------------------------------------------------------------------
    _m("first_time_fix_rate", "share", "ratio", "ftf", "ftf_n",
       description="work orders fixed by their first visit, of those whose first visit ended"),
    _m("ftf_rate_complete_kit", "share", "ratio", "kit_ftf", "kit_n",
       description="first-time fix rate when the van held the job type's whole kit"),
    _m("ftf_rate_incomplete_kit", "share", "ratio", "nokit_ftf", "nokit_n",
       description="first-time fix rate when the van lacked part of the kit"),
    _m("repeat_visit_rate", "share", "ratio", "rep", "rep_n",
       description="work orders whose first visit ended that needed another visit on site"),
    _m("work_orders_fixed", "work orders", "count", "fixed_n", description="work orders fixed"),
    _m("mttr_min", "min", "ratio", "fixed_work_ms", "fixed_n", scale=1 / MIN,
       description="hands-on work time (all visits) per fixed work order, mean"),
    # -- bookings ---------------------------------------------------------------------------
    _m("bookings", "work orders", "count", "book", description="work orders booked"),
    _m("time_to_book_p50_min", "min", "percentile", "ttb_ms", scale=1 / MIN, q=0.5,
       description="first contact to booking, median"),
    _m("reschedule_rate", "share", "ratio", "book_resched", "book",
       description="booked work orders whose window was moved at least once"),
    _m("cancellation_rate", "share", "ratio", "book_cancel", "book",
       description="booked work orders later cancelled"),
    _m("repeat_customer_rate", "share", "ratio", "book_repeat", "book",
       description="bookings by a customer who had booked before"),
    _m("preventive_ratio", "ratio", "ratio", "book_prev", "book_reac",
       description="preventive bookings per reactive booking"),
    # -- customers and billing --------------------------------------------------------------
    _m("ratings", "ratings", "count", "rt_n", description="customer ratings received"),
    _m("avg_rating", "0-10", "ratio", "rt_sum", "rt_n", description="mean rating (0-10)"),
    _m("nps", "points", "ratio", "rt_nps", "rt_n", scale=100.0,
       description="% promoters (9-10) minus % detractors (0-6)"),
    _m("invoices", "invoices", "count", "inv_n", description="invoices issued"),
    _m("avg_ticket_value", "EUR", "ratio", "inv_cents", "inv_n", scale=0.01,
       description="mean invoice amount"),
    _m("dispute_rate", "share", "ratio", "inv_disp", "inv_n",
       description="invoices disputed"),
    # -- technician-days --------------------------------------------------------------------
    _m("technicians", "technicians", "count", "td_n", technician_day=True,
       description="technicians who started a shift"),
    _m("jobs_per_technician", "jobs", "ratio", "td_jobs", "td_n", technician_day=True,
       description="work orders a technician completed a visit on, per technician-day"),
    _m("visits_per_technician", "visits", "ratio", "td_visits", "td_n", technician_day=True,
       description="arrivals per technician-day"),
    _m("travel_min_per_technician", "min", "ratio", "td_leg_ms", "td_n", scale=1 / MIN,
       technician_day=True, description="en route to arrival, per technician-day"),
    _m("travel_km_per_technician", "km", "ratio", "td_mm", "td_n", scale=1e-6,
       technician_day=True, description="GPS distance driven on shift, per technician-day"),
    _m("utilisation", "share", "ratio", "td_work_ms", "td_shift_ms", technician_day=True,
       description="hands-on work time / shift time (ended shifts)"),
    _m("idle_min_per_technician", "min", "ratio", "td_idle_ms", "td_ended", scale=1 / MIN,
       technician_day=True,
       description="shift time not working nor travelling to a job, per ended shift"),
    _m("revenue_per_technician", "EUR", "ratio", "td_rev_cents", "td_n", scale=0.01,
       technician_day=True, description="invoiced amount per technician-day"),
)  # fmt: skip
METRIC_BY_NAME = {m.name: m for m in METRICS}
METRIC_NAMES = tuple(m.name for m in METRICS)
HEADLINE = (
    "visits",
    "on_time_rate",
    "first_time_fix_rate",
    "time_to_site_p50_min",
    "proactive_notice_rate",
    "eta_coverage_30",
    "utilisation",
    "travel_km_per_technician",
    "nps",
    "where_are_you_per_100_visits",
)
"""The columns ``fieldstream kpi`` shows by default."""

_USERS: dict[str, tuple[Metric, ...]] = {}
for _metric in METRICS:
    for _name in _metric.inputs:
        _USERS[_name] = (*_USERS.get(_name, ()), _metric)
SAMPLED = frozenset(m.num for m in METRICS if m.kind == "percentile")


_DAY_CACHE: dict[int, str] = {}


def day_of(ms: int, offset_ms: int = 0) -> str:
    """The calendar day (``YYYY-MM-DD``) of a time, in UTC shifted by ``offset_ms``."""
    n = (ms + offset_ms) // DAY_MS
    text = _DAY_CACHE.get(n)
    if text is None:
        text = _DAY_CACHE[n] = datetime.fromtimestamp(n * 86_400, UTC).strftime("%Y-%m-%d")
    return text


_DAY_STARTS: dict[str, int] = {}


def day_start(day: str, offset_ms: int = 0) -> int:
    """The first millisecond of ``day`` (inverse of :func:`day_of`: ``day_of(t, offset_ms)
    == day`` exactly for the times from there to a day later)."""
    midnight = _DAY_STARTS.get(day)
    if midnight is None:
        moment = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
        midnight = _DAY_STARTS[day] = int(moment.timestamp()) * 1000
    return midnight - offset_ms


def quantile(values: list[int], q: float) -> float:
    """The ``q`` quantile of sorted ``values``, linear between closest ranks (numpy's
    default, "type 7")."""
    n = len(values)
    pos = q * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Part:
    """What one subject adds to the groups of one day."""

    day: str
    groups: Groups
    counters: Counters
    samples: Samples = ()


@dataclass(frozen=True, slots=True)
class Contribution:
    parts: tuple[Part, ...]


@dataclass(slots=True)
class Accumulator:
    counters: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[int]] = field(default_factory=dict)
    members: int = 0


def compute(metric: Metric, acc: Accumulator) -> float | None:
    """A metric's value from a group's accumulator."""
    if metric.kind == "count":
        return float(acc.counters.get(metric.num, 0))
    if metric.kind == "ratio":
        den = acc.counters.get(metric.den, 0)
        if den == 0:
            return None
        return acc.counters.get(metric.num, 0) / den * metric.scale
    values = acc.samples.get(metric.num)
    if not values:
        return None
    return quantile(values, metric.q) * metric.scale


class KpiBook:
    """Subjects' contributions, the groups' accumulators, and which metric values changed.

    Use: :meth:`update` each changed subject; at the end of a batch, :meth:`changed_values`
    gives the KPI rows to write and :meth:`emptied` the groups that no longer have any data.
    """

    def __init__(self) -> None:
        self.contributions: dict[tuple[str, ...], Contribution] = {}
        self.groups: dict[GroupKey, Accumulator] = {}
        self._day_groups: dict[str, int] = {}
        """day -> how many of :attr:`groups` it has (asked after every batch)."""
        self._dirty: dict[GroupKey, set[str]] = {}

    def update(self, subject: tuple[str, ...], new: Contribution | None) -> bool:
        """Replace a subject's contribution (None: it contributes nothing). True if changed.

        The old and the new parts are taken pairwise, in order. A pair of one day with the
        same samples changes only what differs: the counters that changed, in the groups
        both count in, and the whole part in the groups only one of them counts in (the
        usual changes: a few counters, or a technician's team). Any other pair, and a part
        without a partner, is taken out and put in whole. The accumulators are the same
        either way (integer sums, sorted samples); only what did change is marked dirty."""
        old = self.contributions.get(subject)
        if old == new:
            return False
        before = old.parts if old is not None else ()
        after = new.parts if new is not None else ()
        if new is not None and after:
            self.contributions[subject] = new
        else:
            self.contributions.pop(subject, None)
        for i in range(max(len(before), len(after))):
            a = before[i] if i < len(before) else None
            b = after[i] if i < len(after) else None
            if a is None or b is None or a.day != b.day or a.samples != b.samples:
                if a is not None:
                    self._apply(a.day, a.groups, a.counters, a.samples, -1)
                if b is not None:
                    self._apply(b.day, b.groups, b.counters, b.samples, 1)
            elif a.groups == b.groups:
                if a.counters != b.counters:
                    self._delta(b.day, b.groups, a.counters, b.counters)
            else:
                common = tuple(g for g in b.groups if g in a.groups)
                if common and a.counters != b.counters:
                    self._delta(b.day, common, a.counters, b.counters)
                gone = tuple(g for g in a.groups if g not in b.groups)
                if gone:
                    self._apply(a.day, gone, a.counters, a.samples, -1)
                added = tuple(g for g in b.groups if g not in a.groups)
                if added:
                    self._apply(b.day, added, b.counters, b.samples, 1)
        return True

    def _delta(self, day: str, groups: Groups, old: Counters, new: Counters) -> None:
        diff = dict(new)
        for name, value in old:
            diff[name] = diff.get(name, 0) - value
        changed = [(n, v) for n, v in diff.items() if v]
        if not changed:
            return
        names_changed = [n for n, _ in changed]
        for dim, grp in groups:
            key = (day, dim, grp)
            counters = self.groups[key].counters
            names = self._dirty.get(key)
            if names is None:
                self._dirty[key] = set(names_changed)
            else:
                names.update(names_changed)
            for name, value in changed:
                counters[name] = counters.get(name, 0) + value

    def _apply(
        self, day: str, groups_of: Groups, pairs: Counters, samples: Samples, sign: int
    ) -> None:
        """Add (``sign`` 1) or take out (-1) one part's counters and samples in ``groups_of``."""
        groups = self.groups
        dirty = self._dirty
        if sign < 0:
            pairs = tuple((name, -value) for name, value in pairs)
        touched = [name for name, _ in pairs]
        touched += [name for name, _ in samples]
        for dim, grp in groups_of:
            key = (day, dim, grp)
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = Accumulator()
                self._day_groups[day] = self._day_groups.get(day, 0) + 1
            names = dirty.get(key)
            if names is None:
                names = dirty[key] = set(touched)
            else:
                names.update(touched)
            if acc.members == 0 or (sign < 0 and acc.members == 1):
                names.add("*")
            acc.members += sign
            counters = acc.counters
            for name, value in pairs:
                counters[name] = counters.get(name, 0) + value
            for name, value in samples:
                values = acc.samples.setdefault(name, [])
                if sign > 0:
                    insort(values, value)
                else:
                    del values[bisect_left(values, value)]

    def take_dirty(self) -> Iterator[tuple[GroupKey, Accumulator | None, tuple[Metric, ...]]]:
        """The groups changed since the last call, each with the metrics to recompute
        (``None`` accumulator: the group is now empty and its rows must go)."""
        dirty, self._dirty = self._dirty, {}
        for key, names in dirty.items():
            acc = self.groups.get(key)
            if acc is not None and acc.members <= 0:
                del self.groups[key]
                left = self._day_groups[key[0]] - 1
                if left:
                    self._day_groups[key[0]] = left
                else:
                    del self._day_groups[key[0]]
                yield key, None, ()
                continue
            if acc is None:
                yield key, None, ()
                continue
            if "*" in names:
                yield key, acc, METRICS
                continue
            metrics: dict[str, Metric] = {}
            for name in names:
                for metric in _USERS.get(name, ()):
                    metrics[metric.name] = metric
            yield key, acc, tuple(metrics.values())

    def values(self, key: GroupKey) -> dict[str, float | None]:
        """Every metric of one group, as it stands."""
        acc = self.groups.get(key)
        if acc is None:
            return {}
        return {m.name: compute(m, acc) for m in METRICS}

    def days(self) -> set[str]:
        """The days that have groups."""
        return set(self._day_groups)

    def keys_of_day(self, day: str) -> list[GroupKey]:
        return sorted(key for key in self.groups if key[0] == day)


def counters(pairs: Mapping[str, int | bool]) -> Counters:
    """A counters tuple from a mapping, zeros dropped, names sorted (a canonical form, so
    equal contributions compare equal)."""
    return tuple(sorted((k, int(v)) for k, v in pairs.items() if v))


def group_pairs(
    technician: str | None,
    team: str | None,
    region: str | None,
    job_type: str | None,
) -> Groups:
    """The (dimension, group) pairs of a subject; unknown attributes are left out."""
    out: list[tuple[str, str]] = [("all", "all")]
    for dim, value in (
        ("technician", technician),
        ("team", team),
        ("region", region),
        ("job_type", job_type),
    ):
        if value:
            out.append((dim, value))
    return tuple(out)


def group_key_text(key: GroupKey) -> str:
    """The record key of a group's KpiSnapshot: ``day/dimension/group``."""
    return "/".join(key)


def all_inputs() -> Iterable[str]:
    """Every counter or sample name some metric reads (for documentation and tests)."""
    return sorted(_USERS)
