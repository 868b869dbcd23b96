"""The live-tracking view: what the map and the customer pages show, folded from the log.

:class:`LiveView` is pure (no I/O, no clock): feed it records of the topics in
:data:`TOPICS` with :meth:`LiveView.apply`, then take what changed with
:meth:`LiveView.take_changes`. It reads only public topics:

* ``fs.dispatch``: technicians' registrations (name, team, region) and shifts;
* ``fs.gps``: position fixes, shown **only while the technician is on shift**: a fix outside
  the shift in force is dropped, and a ``ShiftEnded`` hides the position at once;
* ``fs.workorders``: each work order's whole state (status, technician, site, window);
* ``fs.eta``: the latest arrival window of each work order;
* ``fs.alerts``: late alerts raised and cleared, assignment conflicts.

Its clock is event time: ``now`` is the newest event time it has read, so the same records
give the same view, whatever the wall clock says. Records may repeat (a stage re-appends a
batch's outputs after a crash) and arrive late: every entity keeps the newest event time it
was updated at and ignores anything older, so a repeat or a stale record is a no-op.

Documents (:meth:`technician_doc`, :meth:`order_doc`, :meth:`alert_doc`,
:meth:`customer_doc`) are plain JSON-ready dicts; docs/websocket-protocol.md describes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from events.codec import parse_time

TOPICS = ("fs.dispatch", "fs.workorders", "fs.eta", "fs.alerts", "fs.gps")
OPEN = frozenset({"booked", "assigned", "en_route", "arrived", "in_progress", "paused"})
ON_SITE = frozenset({"arrived", "in_progress", "paused"})
CLOSED = frozenset({"completed_fixed", "completed_not_fixed", "cancelled"})
DISPATCH_RETENTION_MS = 3_600_000
"""A closed work order stays on the dispatcher's map this long (event time) after closing."""
MEMORY_RETENTION_MS = 24 * 3_600_000
"""...and in memory (for its customer page) this long."""
ROUND_MS = 300_000
"""Customer-facing windows are rounded outwards to five minutes."""

Fix = tuple[int, float, float, float | None, float | None]
"""(time ms, lat, lon, heading deg, speed m/s)."""


@dataclass(slots=True)
class Tech:
    id: str
    name: str = ""
    team: str = ""
    region: str = ""
    skills: tuple[str, ...] = ()
    registered_at: int = -1
    shift_start: int | None = None
    shift_end: int | None = None
    fix: Fix | None = None
    status: str = "off_shift"
    job: str | None = None

    @property
    def on_shift(self) -> bool:
        return self.shift_start is not None and self.shift_end is None

    def covers(self, at: int) -> bool:
        """Whether the shift in force covers a fix taken at ``at``."""
        return (
            self.shift_start is not None
            and self.shift_start <= at
            and (self.shift_end is None or at <= self.shift_end)
        )


@dataclass(slots=True)
class Order:
    id: str
    snapshot: dict[str, Any]
    updated: int
    window: tuple[int, int]
    """The promised window (start, end), parsed once per snapshot."""
    eta: tuple[int, int, int, int] | None = None
    """(time, p10, p50, p90) of the latest EtaUpdated."""
    eta_at_departure: tuple[int, int, int, int] | None = None
    late: dict[str, Any] | None = None
    """The active late alert: time, probability, message, suggestion."""

    @property
    def status(self) -> str:
        return str(self.snapshot["status"])

    @property
    def technician(self) -> str | None:
        tid = self.snapshot.get("technician_id")
        return None if tid is None else str(tid)

    @property
    def region(self) -> str:
        return str(self.snapshot.get("region", ""))


@dataclass(slots=True)
class Changes:
    """What a batch of records changed, by entity id."""

    positions: set[str] = field(default_factory=set)
    technicians: set[str] = field(default_factory=set)
    orders: set[str] = field(default_factory=set)
    alerts: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.positions or self.technicians or self.orders or self.alerts)


@dataclass(frozen=True, slots=True)
class EtaObservation:
    """An arrival scored against the ETA in force: at departure (``when="departure"``) or
    the last one before arrival (``when="last"``)."""

    when: str
    error_s: float
    """Arrival minus P50, seconds (positive: later than predicted)."""
    inside: bool
    """Whether the arrival fell inside [P10, P90]."""


def first_name(name: str) -> str:
    """The first word of a technician's registered name: all a customer is shown."""
    return name.split(maxsplit=1)[0] if name.strip() else ""


class LiveView:
    """The whole live state; see the module docstring."""

    def __init__(self, *, timezone: str = "Europe/Andorra") -> None:
        self.tz = ZoneInfo(timezone)
        self.timezone = timezone
        self.technicians: dict[str, Tech] = {}
        self.orders: dict[str, Order] = {}
        self.alerts: dict[str, dict[str, Any]] = {}
        self.now = 0
        self.records = 0
        self._by_tech: dict[str, set[str]] = {}
        """technician -> open work orders assigned to them."""
        self._hidden: set[str] = set()
        """Closed work orders no longer on the dispatcher's map."""
        self._changes = Changes()
        self._observations: list[EtaObservation] = []
        self._raised = 0
        self._pruned_at = 0
        self._handlers: dict[str, Callable[[dict[str, Any], int], None]] = {
            "TechnicianRegistered": self._registered,
            "ShiftStarted": self._shift_started,
            "ShiftEnded": self._shift_ended,
            "WorkOrderStateChanged": self._work_order,
            "EtaUpdated": self._eta,
            "LateAlertRaised": self._late_raised,
            "LateAlertCleared": self._late_cleared,
            "AssignmentConflicted": self._conflict,
        }

    # -- input -------------------------------------------------------------------------------

    def apply(self, topic: str, values: Iterable[bytes]) -> None:
        """Fold the values of records of ``topic``, each partition in offset order.

        Unreadable values and event types the view does not use are skipped: the log's
        input topics were validated at ingest, and the derived ones written by the stages.
        """
        ping = topic == "fs.gps"
        for value in values:
            self.records += 1
            try:
                doc = orjson.loads(value)
                at = _ms(doc["time"])
                if ping:
                    self._ping(doc["data"], at)
                else:
                    handler = self._handlers.get(doc["type"])
                    if handler is not None:
                        handler(doc, at)
            except (ValueError, KeyError, TypeError):
                continue
            self.now = max(self.now, at)
        if self.now - self._pruned_at >= 60_000:
            self._prune()

    def take_changes(self) -> Changes:
        """What changed since the last call (and forget it)."""
        changes, self._changes = self._changes, Changes()
        return changes

    def take_observations(self) -> tuple[list[EtaObservation], int]:
        """ETA errors observed at arrivals, and late alerts raised, since the last call."""
        out, raised = self._observations, self._raised
        self._observations, self._raised = [], 0
        return out, raised

    def _tech(self, tid: str) -> Tech:
        tech = self.technicians.get(tid)
        if tech is None:
            tech = self.technicians[tid] = Tech(tid)
            self._changes.technicians.add(tid)
        return tech

    def _registered(self, doc: dict[str, Any], at: int) -> None:
        data = doc["data"]
        tech = self._tech(data["technician_id"])
        if at < tech.registered_at:
            return
        tech.registered_at = at
        tech.name = data["name"]
        tech.team = data.get("team", "")
        tech.region = data.get("region", "")
        tech.skills = tuple(data.get("skills", ()))
        self._changes.technicians.add(tech.id)

    def _shift_started(self, doc: dict[str, Any], at: int) -> None:
        tech = self._tech(doc["data"]["technician_id"])
        if tech.shift_start is not None and at <= tech.shift_start:
            return  # an older shift's start, or a repeat
        tech.shift_start, tech.shift_end = at, None
        if tech.fix is not None and not tech.covers(tech.fix[0]):
            self._hide(tech)
        self._restatus(tech)

    def _shift_ended(self, doc: dict[str, Any], at: int) -> None:
        tech = self._tech(doc["data"]["technician_id"])
        if tech.shift_start is None or at < tech.shift_start or tech.shift_end is not None:
            return  # the end of an older shift, or a repeat
        tech.shift_end = at
        self._hide(tech)
        self._restatus(tech)

    def _hide(self, tech: Tech) -> None:
        if tech.fix is not None:
            tech.fix = None
            self._changes.positions.add(tech.id)

    def _ping(self, data: dict[str, Any], at: int) -> None:
        tech = self.technicians.get(data["technician_id"])
        if tech is None or not tech.on_shift or not tech.covers(at):
            return  # privacy: no known shift covers this fix
        if tech.fix is not None and at <= tech.fix[0]:
            return  # late or repeated
        tech.fix = (
            at,
            float(data["lat"]),
            float(data["lon"]),
            data.get("heading_deg"),
            data.get("speed_mps"),
        )
        self._changes.positions.add(tech.id)

    def _work_order(self, doc: dict[str, Any], at: int) -> None:
        data = doc["data"]
        wid = data["work_order_id"]
        order = self.orders.get(wid)
        if order is not None and at < order.updated:
            return
        window = (_ms(data["window_start"]), _ms(data["window_end"]))
        before_tech = None if order is None else order.technician
        before_status = None if order is None else order.status
        if order is None:
            order = self.orders[wid] = Order(wid, data, at, window)
        else:
            order.snapshot, order.updated, order.window = data, at, window
        status = order.status
        if status == "en_route" and before_status != "en_route":
            order.eta_at_departure = order.eta
        if status in ON_SITE and before_status not in ON_SITE and data.get("arrived_at"):
            self._observe(order, int(_ms(data["arrived_at"])))
        if status not in {"booked", "assigned", "en_route"} and order.late is not None:
            order.late = None  # arrived (or closed): a late alert no longer applies
        if status in CLOSED or status == "booked":
            order.eta = None
        self._hidden.discard(wid)
        for tid in {before_tech, order.technician}:
            if tid is None:
                continue
            jobs = self._by_tech.setdefault(tid, set())
            had = wid in jobs
            if tid == order.technician and status in OPEN:
                jobs.add(wid)
            else:
                jobs.discard(wid)
            if had or wid in jobs:
                self._changes.technicians.add(tid)  # their queue may have changed
            self._restatus(self._tech(tid))
        self._changes.orders.add(wid)

    def _observe(self, order: Order, arrived: int) -> None:
        for when, eta in (("departure", order.eta_at_departure), ("last", order.eta)):
            if eta is not None and eta[0] <= arrived:
                _, p10, p50, p90 = eta
                self._observations.append(
                    EtaObservation(when, (arrived - p50) / 1000.0, p10 <= arrived <= p90)
                )

    def _restatus(self, tech: Tech) -> None:
        """A technician's status and current job, from the shift and their open orders."""
        status, job = ("available" if tech.on_shift else "off_shift"), None
        for wid in sorted(self._by_tech.get(tech.id, ())):
            order_status = self.orders[wid].status
            if order_status in ON_SITE:
                status, job = "on_site", wid
                break
            if order_status == "en_route":
                status, job = "en_route", wid
        if (status, job) != (tech.status, tech.job):
            tech.status, tech.job = status, job
            self._changes.technicians.add(tech.id)

    def _eta(self, doc: dict[str, Any], at: int) -> None:
        data = doc["data"]
        order = self.orders.get(data["work_order_id"])
        if order is None or order.status not in {"assigned", "en_route"}:
            return
        if order.eta is not None and at < order.eta[0]:
            return
        order.eta = (at, _ms(data["p10"]), _ms(data["p50"]), _ms(data["p90"]))
        self._changes.orders.add(order.id)

    def _late_raised(self, doc: dict[str, Any], at: int) -> None:
        data = doc["data"]
        wid = data["work_order_id"]
        key = f"late:{wid}"
        old = self.alerts.get(key)
        if old is not None and at < old["at"]:
            return
        if old is None or old["id"] != doc["id"]:
            self._raised += 1
        order = self.orders.get(wid)
        self.alerts[key] = {
            "key": key,
            "id": doc["id"],
            "kind": "late",
            "state": "raised",
            "work_order": wid,
            "technician": data["technician_id"],
            "region": None if order is None else order.region,
            "at": at,
            "probability": data["probability_late"],
            "message": data["message"],
            "window": [_ms(data["window_start"]), _ms(data["window_end"])],
            "p50": _ms(data["p50"]),
            "suggested_technician": data.get("suggested_technician_id"),
        }
        self._changes.alerts.add(key)
        if order is not None and order.status in {"assigned", "en_route"}:
            order.late = {
                "at": at,
                "probability": data["probability_late"],
                "message": data["message"],
            }
            self._changes.orders.add(wid)

    def _late_cleared(self, doc: dict[str, Any], at: int) -> None:
        data = doc["data"]
        wid = data["work_order_id"]
        key = f"late:{wid}"
        old = self.alerts.get(key)
        if old is None or at < old["at"]:
            return
        old.update(state="cleared", at=at, probability=data["probability_late"])
        old["cleared_because"] = data["reason"]
        self._changes.alerts.add(key)
        order = self.orders.get(wid)
        if order is not None and order.late is not None:
            order.late = None
            self._changes.orders.add(wid)

    def _conflict(self, doc: dict[str, Any], at: int) -> None:
        data = doc["data"]
        wid = data["work_order_id"]
        key = f"conflict:{wid}:{data['conflicting_work_order_id']}"
        if key in self.alerts and at < self.alerts[key]["at"]:
            return
        order = self.orders.get(wid)
        self.alerts[key] = {
            "key": key,
            "id": doc["id"],
            "kind": "conflict",
            "state": "raised",
            "work_order": wid,
            "technician": data["technician_id"],
            "region": None if order is None else order.region,
            "at": at,
            "message": data["detail"],
            "conflict": data["kind"],
            "conflicting_work_order": data["conflicting_work_order_id"],
        }
        self._changes.alerts.add(key)

    def _prune(self) -> None:
        """Take closed work orders off the dispatcher's map after an hour, out of memory
        (with their alerts) after a day."""
        self._pruned_at = self.now
        for wid, order in list(self.orders.items()):
            if order.status not in CLOSED:
                continue
            age = self.now - order.updated
            if age >= MEMORY_RETENTION_MS:
                del self.orders[wid]
                self._hidden.discard(wid)
                for key in [k for k, a in self.alerts.items() if a["work_order"] == wid]:
                    del self.alerts[key]
                    self._changes.alerts.add(key)
                self._changes.orders.add(wid)
            elif age >= DISPATCH_RETENTION_MS and wid not in self._hidden:
                self._hidden.add(wid)
                for key in [k for k, a in self.alerts.items() if a["work_order"] == wid]:
                    self._changes.alerts.add(key)
                self._changes.orders.add(wid)

    # -- documents ---------------------------------------------------------------------------

    def open_orders_of(self, tid: str) -> frozenset[str] | set[str]:
        """The open work orders assigned to a technician (whose customer pages may show
        them)."""
        return self._by_tech.get(tid, frozenset())

    def on_map(self, wid: str) -> bool:
        """Whether a work order is on the dispatcher's map (known and not long closed)."""
        return wid in self.orders and wid not in self._hidden

    def position(self, tid: str) -> list[Any] | None:
        """``[lat, lon, heading, speed, time]`` of a technician on shift, else None."""
        tech = self.technicians.get(tid)
        if tech is None or tech.fix is None:
            return None
        at, lat, lon, heading, speed = tech.fix
        return [lat, lon, heading, speed, at]

    def technician_doc(self, tid: str) -> dict[str, Any] | None:
        tech = self.technicians.get(tid)
        if tech is None:
            return None
        queue = sorted(
            (w for w in self._by_tech.get(tid, ()) if self.orders[w].status == "assigned"),
            key=lambda w: (self.orders[w].snapshot.get("queue_position") or 0, w),
        )
        return {
            "id": tid,
            "name": tech.name,
            "team": tech.team,
            "region": tech.region,
            "status": tech.status,
            "job": tech.job,
            "queue": queue,
            "shift_start": tech.shift_start,
        }

    def order_doc(self, wid: str) -> dict[str, Any] | None:
        order = self.orders.get(wid)
        if order is None or wid in self._hidden:
            return None
        s = order.snapshot
        eta = order.eta
        return {
            "id": wid,
            "status": order.status,
            "technician": order.technician,
            "region": order.region,
            "job_type": s.get("job_type"),
            "priority": s.get("priority"),
            "site": [s["site_lat"], s["site_lon"]],
            "window": list(order.window),
            "eta": None if eta is None else [eta[1], eta[2], eta[3]],
            "eta_at": None if eta is None else eta[0],
            "late": order.late,
            "queue_position": s.get("queue_position"),
            "arrived_at": _opt_ms(s.get("arrived_at")),
            "completed_at": _opt_ms(s.get("completed_at")),
            "updated": order.updated,
        }

    def alert_doc(self, key: str) -> dict[str, Any] | None:
        alert = self.alerts.get(key)
        if alert is None or alert["work_order"] in self._hidden:
            return None
        return alert

    def alert_region(self, key: str) -> str | None:
        alert = self.alerts.get(key)
        if alert is None:
            return None
        order = self.orders.get(alert["work_order"])
        return order.region if order is not None else alert["region"]

    def dispatch_snapshot(self, region: str | None) -> dict[str, Any]:
        """Everything a dispatcher of ``region`` (None: all) sees."""
        techs = [t for t in self.technicians.values() if region is None or t.region == region]
        return {
            "now": self.now,
            "region": region,
            "timezone": self.timezone,
            "technicians": {t.id: self.technician_doc(t.id) for t in techs},
            "positions": {t.id: self.position(t.id) for t in techs if t.fix is not None},
            "orders": {
                w: self.order_doc(w)
                for w, o in self.orders.items()
                if w not in self._hidden and (region is None or o.region == region)
            },
            "alerts": {
                k: a
                for k, a in self.alerts.items()
                if a["work_order"] not in self._hidden
                and (region is None or self.alert_region(k) == region)
            },
        }

    def dispatch_deltas(
        self, changes: Changes, regions: Iterable[str | None]
    ) -> dict[str | None, dict[str, Any]]:
        """The part of ``changes`` each dispatcher feed sees, for each of ``regions`` (None:
        all regions): entity id -> new document, or ``None`` where the entity left the view;
        empty for a region where nothing changed. Each document is built once, whatever the
        number of regions."""
        out: dict[str | None, dict[str, Any]] = {region: {} for region in regions}
        everywhere = list(out.values())
        whole = out.get(None)

        def targets(region: str | None) -> list[dict[str, Any]]:
            found = [] if whole is None else [whole]
            if region is not None:
                mine = out.get(region)
                if mine is not None:
                    found.append(mine)
            return found

        def put(into: list[dict[str, Any]], kind: str, key: str, doc: Any) -> None:
            for delta in into:
                part = delta.get(kind)
                if part is None:
                    part = delta[kind] = {}
                part[key] = doc

        techs = self.technicians
        for tid in changes.positions:
            into = targets(techs[tid].region)
            if into:
                put(into, "positions", tid, self.position(tid))
        for tid in changes.technicians:
            into = targets(techs[tid].region)
            if into:
                put(into, "technicians", tid, self.technician_doc(tid))
        for wid in changes.orders:
            order = self.orders.get(wid)
            into = everywhere if order is None else targets(order.region)
            if into:
                put(into, "orders", wid, self.order_doc(wid))
        for key in changes.alerts:
            into = everywhere if key not in self.alerts else targets(self.alert_region(key))
            if into:
                put(into, "alerts", key, self.alert_doc(key))
        return out

    def customer_doc(self, wid: str) -> dict[str, Any]:
        """What a customer sees of their work order (see docs/websocket-protocol.md)."""
        order = self.orders.get(wid)
        if order is None:
            return {
                "work_order": wid,
                "known": False,
                "status": None,
                "headline": "We have no booking under this reference yet.",
                "technician": None,
                "position": None,
                "site": None,
                "promised": None,
                "expected": None,
                "delay": None,
                "timezone": self.timezone,
            }
        s = order.snapshot
        status = order.status
        promised = list(order.window)
        tech = None if order.technician is None else self.technicians.get(order.technician)
        name = first_name(tech.name) if tech is not None else ""
        expected = None
        if order.eta is not None and status in {"assigned", "en_route"}:
            expected = [
                order.eta[1] // ROUND_MS * ROUND_MS,
                -(-order.eta[3] // ROUND_MS) * ROUND_MS,
            ]
        position = None
        if status == "en_route" and tech is not None and tech.fix is not None:
            at, lat, lon, heading, _ = tech.fix
            position = {"lat": lat, "lon": lon, "heading": heading, "at": at}
        delay = None
        if order.late is not None and status in {"assigned", "en_route"}:
            delay = {
                "message": f"Sorry, we are running late. {order.late['message']}.",
                "at": order.late["at"],
            }
        return {
            "work_order": wid,
            "known": True,
            "status": status,
            "headline": self._headline(status, name, promised, expected, s),
            "technician": {"first_name": name} if name and status != "booked" else None,
            "position": position,
            "site": [s["site_lat"], s["site_lon"]],
            "promised": promised,
            "expected": expected,
            "delay": delay,
            "timezone": self.timezone,
        }

    def hhmm(self, ms: int) -> str:
        """A time as the customer reads it: local ``HH:MM``."""
        return _hhmm(ms // 60_000, self.tz)

    def _headline(
        self,
        status: str,
        name: str,
        promised: list[int],
        expected: list[int] | None,
        snapshot: dict[str, Any],
    ) -> str:
        """The one customer-ready line: confirmed, on the way, on site, done (the routine
        messages), worded from the state."""
        span = promised if expected is None else expected
        window = f"{self.hhmm(span[0])}-{self.hhmm(span[1])}"
        who = name or "Your technician"
        if status == "booked":
            return f"Confirmed, we will come between {self.hhmm(promised[0])} and " + (
                f"{self.hhmm(promised[1])}"
            )
        if status == "assigned":
            return f"Confirmed: {who} will come, arriving {window}"
        if status == "en_route":
            return f"On the way, arriving {window}"
        if status == "arrived":
            return f"{who} has arrived"
        if status in {"in_progress", "paused"}:
            return f"{who} is working on site"
        done = _opt_ms(snapshot.get("completed_at"))
        at = f" at {self.hhmm(done)}" if done is not None else ""
        if status == "completed_fixed":
            return f"Done{at}: fixed"
        if status == "completed_not_fixed":
            return f"Visit finished{at}: a follow-up visit is needed, we will be in touch"
        return "Cancelled"


@lru_cache(maxsize=4096)
def _hhmm(minute: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).astimezone(tz).strftime("%H:%M")


def _ms(value: Any) -> int:
    """An event time from the wire (RFC 3339 text) or already in ms."""
    if isinstance(value, int):
        return value
    return parse_time(value)


def _opt_ms(value: Any) -> int | None:
    return None if value is None else _ms(value)
