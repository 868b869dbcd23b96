"""The projection's state: what :class:`projections.fold.Projection` folds the log into,
shared by the fold, the KPI subjects (:mod:`projections.subjects`) and the row builders
(:mod:`projections.views`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections.etas import EtaPoint, Etas
from projections.kpis import DAY_MS, GroupKey, KpiBook, day_of
from projections.model import AlertPoint, Input, Order, Technician
from projections.tracks import Track

HOUR_MS = 3_600_000
Subject = tuple[str, ...]
"""A KPI subject: ``("visit", wo, n)``, ``("order", wo)``, ``("input", id)`` or
``("techday", technician, day)``."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The projection's knobs. ``day_offset_ms``: days are UTC calendar days shifted by it
    (``3_600_000`` for UTC+1); ``lateness_ms``: how late a GPS fix may be, as for the
    aggregate stages; ``eta_horizon_ms``: the horizon of the ETA-accuracy KPIs."""

    lateness_ms: int = 15 * 60_000
    day_offset_ms: int = 0
    eta_horizon_ms: int = 30 * 60_000
    retain_track_ms: int = 2 * DAY_MS
    """GPS fixes older than this (behind their technician's newest) are forgotten; every
    figure that needs them is final by then."""


@dataclass(frozen=True, slots=True)
class Cause:
    """A record that causes derived events: its event id and log position, and its time."""

    id: str
    topic: str
    partition: int
    offset: int
    time: int


class ProjectionState:
    """Every entity, index and bookkeeping table of the fold (no behaviour but lookups)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.orders: dict[str, Order] = {}
        self.techs: dict[str, Technician] = {}
        self.tracks: dict[str, Track] = {}
        self.inputs: dict[str, Input] = {}
        self.etas = Etas()
        self.alerts: dict[str, dict[str, AlertPoint]] = {}
        self.book = KpiBook()
        # indices, rebuilt from the entities on restore
        self.inputs_by_wo: dict[str, set[str]] = {}
        self.inputs_by_tech: dict[str, set[str]] = {}
        self.part_uses_by_tech: dict[str, list[tuple[int, str]]] = {}
        """The PartUsed inputs among each technician's (what the van's stock depends on), as
        (time, id) sorted: a shift's uses are a slice, however many days the state holds."""
        self.customers: dict[str, list[tuple[int, str]]] = {}
        """Each customer's booked work orders, as (booking time, work order) sorted: whether
        an order is a repeat customer's is a look at the first, however many the customer
        has booked."""
        self.visits_by_tech: dict[str, set[tuple[str, int]]] = {}
        self.arrivals_by_tech: dict[str, list[tuple[int, str, int]]] = {}
        """Each technician's visits that have an arrival, as (arrival time, work order,
        visit number) sorted: the visits arrived at or after a time are a slice, however
        many days the state holds."""
        self.orders_by_tech: dict[str, set[str]] = {}
        self._visit_tech: dict[tuple[str, int], str] = {}
        self._td_mm: dict[tuple[str, str], int] = {}
        self._refs: dict[Subject, frozenset[tuple[str, str]]] = {}
        """The technician-days each subject feeds (its arrival, completion, invoice days)."""
        self._td_subjects: dict[tuple[str, str], set[Subject]] = {}
        """The other way round: technician-day -> the subjects that feed it."""
        self._td_base: dict[tuple[str, str], dict[str, int | bool]] = {}
        # rows as last written (only changes are written)
        self.written_kpi: dict[GroupKey, dict[str, float | None]] = {}
        self.written_facts: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.written_live_tech: dict[str, tuple[Any, ...]] = {}
        self.written_live_wo: dict[str, tuple[Any, ...]] = {}
        self.watermark = 0
        self.cause: Cause | None = None
        self.close_causes: dict[int, Cause] = {}
        """Per day (number since the epoch, shifted by the lateness): the last event read."""
        self.published: set[str] = set()
        # what the current batch touched
        self._orders: set[str] = set()
        self._techs: set[str] = set()
        self._registered: set[str] = set()
        self._tech_docs: set[str] = set()
        self._order_docs: set[str] = set()
        self._eta_new: list[tuple[str, str, EtaPoint]] = []
        self._visits_touched: set[tuple[str, int]] = set()
        self.eta_chunks = 0
        self.eta_stored = 0
        """ETA points in the stored chunks (kept or not: a chunk is never rewritten)."""
        self._inputs: set[str] = set()
        self._eta_wo: set[str] = set()
        self._alert_wo: set[str] = set()
        self._pinged: set[str] = set()
        self._shifts_from: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._refresh = False

    def _count(self, name: str, n: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + n

    def day(self, ms: int) -> str:
        return day_of(ms, self.settings.day_offset_ms)

    def _tech(self, tid: str) -> Technician:
        """The technician ``tid`` (created, empty, on first mention)."""
        tech = self.techs.get(tid)
        if tech is None:
            tech = self.techs[tid] = Technician(tid)
        return tech
