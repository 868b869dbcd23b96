"""A technician's GPS track: accepted in-shift fixes in time order, and an odometer over them.

The odometer is what the travel-distance KPIs read. It is defined on the fixes sorted by time,
so it does not depend on the order in which fixes arrive (they arrive late and out of order):

* A fix more than ``lateness_ms`` older than the newest fix already seen for its technician
  (in the order of the technician's partition) is *too late* and ignored, as the fleet stage
  ignores it; a fix at a time the track already holds is a repeat and ignored.
* Each *segment* between two consecutive fixes adds its great-circle length (haversine,
  :data:`EARTH_RADIUS_M`), rounded to the millimetre, if it is at least :data:`MIN_MOVE_M`
  long. Shorter segments add nothing: that is the jitter of a van parked on site, whose fixes
  scatter by a few metres (and a van crawling slower than about 2 m/s between two fixes).
* ``odometer(t)`` is the reading at the last fix at or before ``t``; the distance driven in
  ``(a, b]`` is ``odometer(b) - odometer(a)``. Readings are integer millimetres, so sums are
  exact whatever the order of additions.

Privacy: only fixes inside a known shift enter the track. A fix no known shift covers waits in
a *quarantine* (its ShiftStarted may not have been read yet) and is dropped once its
technician has a fix ``lateness_ms`` newer; a ShiftEnded removes the fixes after it.

Segment lengths are computed with numpy, for every technician of a batch at once
(:func:`append_batch`). This module is pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

EARTH_RADIUS_M = 6_371_008.8
"""The mean Earth radius (IUGG)."""
MIN_MOVE_M = 25.0
"""The jitter filter: segments shorter than this add no distance."""

Fix = tuple[int, float, float, float | None, float | None]
"""(time ms, lat, lon, speed m/s, heading deg) of one GPS fix."""
Shift = tuple[int, int | None]
"""(start ms, end ms or None while open) of one shift."""
_RAD = math.pi / 180.0


def segments_mm(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Each segment's contribution to the odometer: its haversine length in mm, rounded, or
    0 when shorter than :data:`MIN_MOVE_M`."""
    p1 = np.asarray(lat1, dtype=np.float64) * _RAD
    p2 = np.asarray(lat2, dtype=np.float64) * _RAD
    dl = (np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64)) * _RAD
    h = np.sin((p2 - p1) / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2.0) ** 2
    d = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(1.0, h)))
    return np.where(d >= MIN_MOVE_M, np.rint(d * 1000.0), 0.0).astype(np.int64)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _start(shift: Shift) -> int:
    return shift[0]


def _fix_order(fix: Fix) -> tuple[int, float, float, bool, float, bool, float]:
    """A fix's place in the tuple order, with a missing speed or heading after any value (a
    tuple holding None does not compare with one holding a number there)."""
    t, lat, lon, speed, heading = fix
    return (t, lat, lon, speed is None, speed or 0.0, heading is None, heading or 0.0)


def sort_fixes(fixes: list[Fix]) -> None:
    """Sort fixes in place by time, then position, speed and heading (so which of several
    fixes at one time is kept does not depend on their arrival order). Plain tuple order
    unless two fixes agree up to a speed or heading that only one of them has."""
    try:
        fixes.sort()
    except TypeError:
        fixes.sort(key=_fix_order)


def covered(shifts: Sequence[Shift], t: int) -> bool:
    """Whether a shift in ``shifts`` (sorted by start) covers time ``t`` (ends inclusive)."""
    i = bisect_right(shifts, t, key=_start) - 1
    if i < 0:
        return False
    end = shifts[i][1]
    return end is None or t <= end


@dataclass(slots=True)
class Track:
    """One technician's accepted fixes (see the module docstring). Mutated in place."""

    t: array[int] = field(default_factory=lambda: array("q"))
    lat: array[float] = field(default_factory=lambda: array("d"))
    lon: array[float] = field(default_factory=lambda: array("d"))
    speed: array[float] = field(default_factory=lambda: array("d"))
    heading: array[float] = field(default_factory=lambda: array("d"))
    """Speed and heading of each fix (NaN where the fix had none)."""
    odo: array[int] = field(default_factory=lambda: array("q"))
    """Odometer reading (mm) at each fix."""
    newest: int = -(2**62)
    """The newest fix time seen for the technician (the lateness reference)."""
    quarantine: list[Fix] = field(default_factory=list)
    incoming: list[Fix] = field(default_factory=list)
    """Fixes accepted by :meth:`offer` since the last :meth:`settle`."""

    # -- per fix (the hot path) ---------------------------------------------------------------

    def offer(self, fix: Fix, lateness_ms: int) -> bool:
        """Take a fix in partition order; False if it is too late (ignored)."""
        at = fix[0]
        if at < self.newest - lateness_ms:
            return False
        if at > self.newest:  # noqa: PLR1730 (max() costs more: this runs for every ping)
            self.newest = at
        self.incoming.append(fix)
        return True

    def offer_all(self, fixes: Sequence[Fix], lateness_ms: int) -> int:
        """:meth:`offer` each fix in turn; returns how many were too late."""
        newest = self.newest
        incoming = self.incoming
        late = 0
        for fix in fixes:
            at = fix[0]
            if at < newest - lateness_ms:
                late += 1
                continue
            if at > newest:  # noqa: PLR1730 (as in offer)
                newest = at
            incoming.append(fix)
        self.newest = newest
        return late

    # -- per batch ----------------------------------------------------------------------------

    def settle(
        self, shifts: Sequence[Shift], lateness_ms: int, shifts_changed_from: int | None = None
    ) -> tuple[list[Fix], list[Fix], int | None]:
        """Sort the batch's fixes out: the covered ones newer than the track are returned (for
        :func:`append_batch`); older covered ones are merged in at once; the rest wait in
        quarantine, which is also promoted or expired; when shifts changed from some time on,
        the fixes after it that no shift covers any more are removed.

        Returns ``(fixes to append, fixes merged, time from which fixes were removed or
        None)``.
        """
        fresh: list[Fix] = []
        incoming, self.incoming = self.incoming, []
        ordered = False  # whether ``fresh`` is sorted already, with no time twice
        if incoming and shifts:
            # the common case: the oldest and the newest fix in one shift, so all of them
            sort_fixes(incoming)
            lo, hi = incoming[0][0], incoming[-1][0]
            i = bisect_right(shifts, lo, key=_start) - 1
            end = shifts[i][1] if i >= 0 else None
            if i >= 0 and (end is None or hi <= end):
                fresh = incoming
                incoming = []
                ordered = len({f[0] for f in fresh}) == len(fresh)
        waiting: list[Fix] = []
        for f in incoming:
            (fresh if covered(shifts, f[0]) else waiting).append(f)
        floor = self.newest - lateness_ms
        if self.quarantine:
            keep: list[Fix] = []
            for f in self.quarantine:
                if covered(shifts, f[0]):
                    fresh.append(f)
                    ordered = False
                elif f[0] >= floor:
                    keep.append(f)
            self.quarantine = keep
        if waiting:
            self.quarantine.extend(f for f in waiting if f[0] >= floor)
            sort_fixes(self.quarantine)
        removed: int | None = None
        if shifts_changed_from is not None and len(self.t):
            removed = self._purge(shifts, shifts_changed_from)
        if not fresh:
            return [], [], removed
        times = self.t
        n = len(times)
        if ordered and (not n or fresh[0][0] > times[-1]):
            return fresh, [], removed  # the common case: nothing to sort nor drop
        sort_fixes(fresh)
        if not n or fresh[0][0] > times[-1]:
            unique = [f for i, f in enumerate(fresh) if not i or fresh[i - 1][0] != f[0]]
            return unique, [], removed
        unique = []
        for f in fresh:
            at = f[0]
            if unique and unique[-1][0] == at:
                continue
            i = bisect_left(times, at)
            if i < n and times[i] == at:
                continue
            unique.append(f)
        if not unique:
            return [], [], removed
        if unique[0][0] < times[-1]:
            self._merge(unique)
            return [], unique, removed
        return unique, [], removed

    def _merge(self, fixes: list[Fix]) -> None:
        """Merge fixes older than the newest held, re-running the odometer after them."""
        start = bisect_left(self.t, fixes[0][0])
        self._replace_tail(start, sorted(self.points(start) + fixes))

    def _arrays(self) -> tuple[array[Any], ...]:
        return (self.t, self.lat, self.lon, self.speed, self.heading, self.odo)

    def _replace_tail(self, start: int, points: Sequence[Fix]) -> None:
        for arr in self._arrays():
            del arr[start:]
        if not points:
            return
        lats = [p[1] for p in points]
        lons = [p[2] for p in points]
        if start > 0:  # the segment joining the kept fixes, then the new ones: one call
            steps = segments_mm([self.lat[-1], *lats[:-1]], [self.lon[-1], *lons[:-1]], lats, lons)
            odo = self.odo[-1] + np.cumsum(steps)
        else:
            steps = segments_mm(lats[:-1], lons[:-1], lats[1:], lons[1:])
            odo = np.concatenate(([0], np.cumsum(steps))).astype(np.int64)
        self.t.extend(p[0] for p in points)
        self.lat.extend(lats)
        self.lon.extend(lons)
        self.speed.extend(_nan(p[3]) for p in points)
        self.heading.extend(_nan(p[4]) for p in points)
        self.odo.extend(odo.tolist())

    def _purge(self, shifts: Sequence[Shift], since: int) -> int | None:
        start = bisect_left(self.t, since)
        kept = [f for f in self.points(start) if covered(shifts, f[0])]
        if len(kept) == len(self.t) - start:
            return None
        self._replace_tail(start, kept)
        return since

    def prune_before(self, cutoff: int) -> bool:
        """Forget the fixes before ``cutoff`` (differences of later readings are unchanged)."""
        cut = bisect_left(self.t, cutoff)
        if cut == 0:
            return False
        for arr in self._arrays():
            del arr[:cut]
        return True

    # -- reading ------------------------------------------------------------------------------

    @property
    def start(self) -> int | None:
        """The time of the oldest fix held (readings before it are unknown)."""
        return self.t[0] if len(self.t) else None

    def odometer(self, at: int) -> int:
        """The reading (mm) at the last fix at or before ``at`` (the first reading before
        the first fix)."""
        i = bisect_right(self.t, at) - 1
        return self.odo[max(i, 0)] if len(self.odo) else 0

    def driven_mm(self, after: int, until: int, since: int | None = None) -> int:
        """Millimetres driven in ``(after, until]``. With ``since`` (the start of the shift
        ``after`` falls in), a reading taken before it does not count: the way from the last
        fix of an earlier shift to this shift's first one was not driven on duty (a van
        parked overnight at home, say), so the distance runs from this shift's first fix."""
        if not len(self.t):
            return 0
        i = bisect_right(self.t, after) - 1
        if since is not None and i >= 0 and self.t[i] < since:
            i = bisect_left(self.t, since)
            if i >= len(self.t) or self.t[i] > until:
                return 0
        return max(0, self.odometer(until) - self.odo[max(i, 0)])

    def shift_mm(self, start: int, end: int | None) -> int:
        """Millimetres driven between the first fix at or after ``start`` and the last fix
        at or before ``end`` (a whole shift's driving)."""
        i = bisect_left(self.t, start)
        j = (len(self.t) if end is None else bisect_right(self.t, end)) - 1
        if i >= len(self.t) or j < i:
            return 0
        return self.odo[j] - self.odo[i]

    @property
    def last(self) -> Fix | None:
        """The newest fix held, with its speed and heading (the live view's position)."""
        if not len(self.t):
            return None
        return (self.t[-1], self.lat[-1], self.lon[-1], _none(self.speed[-1]),
                _none(self.heading[-1]))  # fmt: skip

    def points(self, start: int = 0) -> list[Fix]:
        """The fixes held from index ``start`` on, in time order (for persisting)."""
        return [
            (self.t[i], self.lat[i], self.lon[i], _none(self.speed[i]), _none(self.heading[i]))
            for i in range(start, len(self.t))
        ]

    @classmethod
    def restore(cls, points: list[Fix], *, newest: int, quarantine: list[Fix]) -> Track:
        """Rebuild a track from its persisted fixes (the odometer is recomputed: readings
        may differ by a constant from before, differences do not)."""
        track = cls(newest=newest, quarantine=list(quarantine))
        unique: dict[int, Fix] = {}
        for f in sorted(points, key=lambda f: f[0]):
            unique.setdefault(f[0], f)
        track._replace_tail(0, list(unique.values()))
        return track


FixArrays = tuple[
    np.ndarray[Any, np.dtype[np.int64]],
    np.ndarray[Any, np.dtype[np.float64]],
    np.ndarray[Any, np.dtype[np.float64]],
    np.ndarray[Any, np.dtype[np.float64]],
    np.ndarray[Any, np.dtype[np.float64]],
]
"""Fixes a field at a time: times, lats, lons, speeds and headings (NaN where missing)."""


def fix_arrays(fixes: Sequence[Fix]) -> FixArrays:
    """The fixes (not empty) as :data:`FixArrays`, for :func:`append_batch`. Best made as
    soon as a technician's fixes are settled, while they are in the CPU's caches: a batch's
    fixes were made over the whole batch, scattered in memory, and reading them all at once
    later costs a cache miss or more each (most of the time it takes)."""
    t, lat, lon, speed, heading = zip(*fixes, strict=True)
    f64 = np.float64
    return (np.array(t, dtype=np.int64), np.array(lat, dtype=f64), np.array(lon, dtype=f64),
            np.array(speed, dtype=f64), np.array(heading, dtype=f64))  # fmt: skip


def append_batch(items: Sequence[tuple[Track, FixArrays]]) -> None:
    """Append to each track its fixes (sorted, all newer than the track's newest fix), with
    one vectorised computation of every segment of the batch; the tracks' arrays are
    extended from the fixes' arrays as bytes (no conversion value by value)."""
    if not items:
        return
    t, lat2, lon2, speed, heading = (np.concatenate([a[i] for _, a in items]) for i in range(5))
    sizes = [len(a[0]) for _, a in items]
    starts = np.cumsum([0, *sizes[:-1]])
    # each segment joins the fix before (the track's last, for the first: a zero segment
    # from the fix to itself when the track is empty)
    lat1 = np.concatenate(([0.0], lat2[:-1]))
    lon1 = np.concatenate(([0.0], lon2[:-1]))
    lat1[starts] = [track.lat[-1] if len(track.t) else a[1][0] for track, a in items]
    lon1[starts] = [track.lon[-1] if len(track.t) else a[2][0] for track, a in items]
    total = np.cumsum(segments_mm(lat1, lon1, lat2, lon2))
    k = 0
    for (track, _), n in zip(items, sizes, strict=True):
        base = (track.odo[-1] if len(track.odo) else 0) - (int(total[k - 1]) if k else 0)
        track.odo.frombytes((total[k : k + n] + base).tobytes())
        track.t.frombytes(t[k : k + n].tobytes())
        track.lat.frombytes(lat2[k : k + n].tobytes())
        track.lon.frombytes(lon2[k : k + n].tobytes())
        track.speed.frombytes(speed[k : k + n].tobytes())
        track.heading.frombytes(heading[k : k + n].tobytes())
        k += n
