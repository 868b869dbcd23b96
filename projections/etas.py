"""The ETA points the projection keeps: per work order and technician, sorted by time.

An ``EtaUpdated`` is kept until its work order is done; then only the points its visits were
judged by remain (see :meth:`Etas.prune`). Pure data, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import UTC, datetime, timedelta

from events.codec import parse_time

EtaPoint = tuple[int, str, str, str, str]
"""(time, event id, p10, p50, p90) of one EtaUpdated; the quantiles as the RFC 3339 text of
the event (parsed by :func:`quantiles` for the few points that are used)."""
_TOP = "\U0010ffff"
"""Sorts after every event id."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_TIMES: dict[str, int] = {}
_TIMES_MAX = 1 << 16


def time_ms(text: str) -> int:
    """An RFC 3339 time as the pipeline writes it (``2026-11-23T14:05:00.000Z``) in ms since
    the epoch (exact integer arithmetic); recent texts are remembered (a work order's
    snapshots repeat its window and visit times). Any other form goes to
    :func:`events.codec.parse_time`."""
    ms = _TIMES.get(text)
    if ms is not None:
        return ms
    if len(text) != 24 or text[10] != "T" or text[19] != "." or text[23] != "Z":
        return parse_time(text)
    try:
        ms = (datetime.fromisoformat(text) - _EPOCH) // _MS
    except ValueError:
        return parse_time(text)
    if len(_TIMES) >= _TIMES_MAX:
        _TIMES.clear()
    _TIMES[text] = ms
    return ms


def quantiles(point: EtaPoint) -> tuple[int, int, int]:
    """(p10, p50, p90) of a point, in ms since the epoch."""
    return time_ms(point[2]), time_ms(point[3]), time_ms(point[4])


class Etas:
    """ETA points by work order and technician (each list sorted by (time, id))."""

    def __init__(self) -> None:
        self.by_order: dict[str, dict[str, list[EtaPoint]]] = {}
        self.latest: dict[str, tuple[int, str, str]] = {}
        """work order -> (time, id, technician) of its newest point."""
        self.count = 0
        """How many points are kept."""

    def add(self, order: str, technician: str, point: EtaPoint) -> bool:
        """Keep a point; False if it is already kept (a repeated event id)."""
        points = self.by_order.setdefault(order, {}).setdefault(technician, [])
        stamp = (point[0], point[1])
        if not points or points[-1][:2] < stamp:
            points.append(point)  # the usual case: the newest so far
        else:
            # (time, id) sorts before (time, id, ...): bisect on the stamp finds an equal one
            i = bisect_left(points, stamp)
            if i < len(points) and points[i][:2] == stamp:
                return False
            points.insert(i, point)
        latest = self.latest.get(order)
        if latest is None or stamp > (latest[0], latest[1]):
            self.latest[order] = (point[0], point[1], technician)
        self.count += 1
        return True

    def in_force(
        self, order: str, technician: str | None, since: int | None, at: int
    ) -> EtaPoint | None:
        """The ETA in force at ``at`` for this technician: the latest published at or before
        ``at`` (ties: the greater id), if not before ``since`` (the visit's assignment)."""
        if technician is None:
            return None
        points = self.by_order.get(order, {}).get(technician)
        if not points:
            return None
        i = bisect_right(points, (at, _TOP)) - 1
        if i < 0 or (since is not None and points[i][0] < since):
            return None
        return points[i]

    def newest(self, order: str) -> EtaPoint | None:
        latest = self.latest.get(order)
        if latest is None:
            return None
        points = self.by_order.get(order, {}).get(latest[2], [])
        i = bisect_left(points, (latest[0], latest[1]))
        if i < len(points) and points[i][:2] == (latest[0], latest[1]):
            return points[i]
        return None

    def prune(self, order: str, keep: set[tuple[str, str]]) -> int:
        """Forget the order's points but ``keep`` ((technician, id) pairs). Returns how many
        were forgotten."""
        by_tech = self.by_order.get(order)
        if not by_tech:
            return 0
        removed = 0
        for technician in list(by_tech):
            points = by_tech[technician]
            kept = [p for p in points if (technician, p[1]) in keep]
            removed += len(points) - len(kept)
            if kept:
                by_tech[technician] = kept
            else:
                del by_tech[technician]
        if not by_tech:
            del self.by_order[order]
        self.count -= removed
        return removed

    def rows(self) -> list[tuple[str, str, EtaPoint]]:
        """Every point as ``(order, technician, point)``, sorted."""
        return [
            (order, technician, point)
            for order, by_tech in sorted(self.by_order.items())
            for technician, points in sorted(by_tech.items())
            for point in points
        ]
