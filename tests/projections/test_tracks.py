"""The GPS track and its odometer: order-independent, late fixes, jitter, privacy."""

from __future__ import annotations

import math
import random

from projections.tracks import MIN_MOVE_M, Fix, Track, append_batch, fix_arrays

LATE = 15 * 60_000


def _route(n: int, seed: int = 3) -> list[Fix]:
    """A drive with stops: fixes 10 s apart, moving ~100 m or standing with 3 m jitter."""
    rng = random.Random(seed)
    lat, lon = 42.5, 1.5
    out: list[Fix] = []
    for i in range(n):
        if (i // 20) % 2 == 0:
            lat += 0.0009 * rng.random()
            lon += 0.0009 * rng.random()
            out.append((1_000_000 + i * 10_000, lat, lon, 10.0, 45.0))
        else:
            jitter = 0.00003
            out.append(
                (
                    1_000_000 + i * 10_000,
                    lat + jitter * rng.gauss(0, 1),
                    lon + jitter * rng.gauss(0, 1),
                    0.0,
                    None,
                )
            )
    return out


def _haversine(a: Fix, b: Fix) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (a[1], a[2], b[1], b[2]))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def _expected(fixes: list[Fix]) -> list[int]:
    total, out = 0, []
    ordered = sorted(fixes)
    for i, f in enumerate(ordered):
        if i:
            d = _haversine(ordered[i - 1], f)
            total += round(d * 1000) if d >= MIN_MOVE_M else 0
        out.append(total)
    return out


def _feed(fixes: list[Fix], batches: int, shifts: list[tuple[int, int | None]]) -> Track:
    track = Track()
    size = max(1, len(fixes) // batches)
    for start in range(0, len(fixes), size):
        for f in fixes[start : start + size]:
            track.offer(f, LATE)
        fresh, _merged, _removed = track.settle(shifts, LATE)
        append_batch([(track, fix_arrays(fresh))] if fresh else [])
    return track


def test_the_odometer_does_not_depend_on_arrival_order_or_batches() -> None:
    fixes = _route(300)
    expected = _expected(fixes)
    shuffled = list(fixes)
    rng = random.Random(7)
    for i in range(0, len(shuffled) - 30, 30):  # late by up to 5 minutes
        window = shuffled[i : i + 30]
        rng.shuffle(window)
        shuffled[i : i + 30] = window
    for order, batches in ((fixes, 1), (fixes, 37), (shuffled, 1), (shuffled, 50)):
        track = _feed(order, batches, [(0, None)])
        assert list(track.t) == sorted(f[0] for f in fixes)
        assert [r - track.odo[0] for r in track.odo] == expected
    # parked stretches add nothing: the total is the moving stretches' only
    moving = [f for i, f in enumerate(fixes) if (i // 20) % 2 == 0]
    assert expected[-1] > 0.9 * sum(_expected(moving[j : j + 20])[-1] for j in range(0, 160, 20))


def test_a_fix_older_than_the_lateness_is_ignored_and_repeats_count_once() -> None:
    track = Track()
    assert track.offer((10_000_000, 42.5, 1.5, None, None), LATE)
    assert not track.offer((10_000_000 - LATE - 1, 42.6, 1.6, None, None), LATE)
    assert track.offer((10_000_000 - LATE, 42.6, 1.6, None, None), LATE)
    assert track.offer((10_000_000, 42.7, 1.7, None, None), LATE)  # the same time again
    fresh, _, _ = track.settle([(0, None)], LATE)
    append_batch([(track, fix_arrays(fresh))])
    assert list(track.t) == [10_000_000 - LATE, 10_000_000]


def test_fixes_outside_a_shift_are_never_kept() -> None:
    track = Track()
    fixes = _route(60)
    start, end = fixes[10][0], fixes[40][0]
    for f in fixes[:30]:
        track.offer(f, LATE)
    # the shift start is not known yet: the fixes wait (not in the track, not shown)
    fresh, _, _ = track.settle([], LATE)
    assert fresh == [] and len(track.quarantine) == 30
    fresh, _, _ = track.settle([(start, None)], LATE)  # ShiftStarted read: promoted
    append_batch([(track, fix_arrays(fresh))])
    assert list(track.t) == [f[0] for f in fixes[10:30]]
    for f in fixes[30:]:
        track.offer(f, LATE)
    fresh, _, _ = track.settle([(start, None)], LATE)
    append_batch([(track, fix_arrays(fresh))])
    # ShiftEnded read after fixes past it: those are removed, the last position goes
    _, _, removed = track.settle([(start, end)], LATE, shifts_changed_from=end)
    assert removed == end
    assert list(track.t) == [f[0] for f in fixes[10:41]]
    assert track.last is not None and track.last[0] == end
    assert track.odo[-1] - track.odo[0] == _expected(fixes[10:41])[-1]
    # quarantined fixes that no shift covers (the 10 before the shift, one after it) are
    # dropped once 15 minutes stale
    track.offer((end + 60_000, 42.0, 1.0, None, None), LATE)
    track.settle([(start, end)], LATE)
    assert [f[0] for f in track.quarantine] == [f[0] for f in fixes[:10]] + [end + 60_000]
    track.offer((end + LATE + 120_000, 42.0, 1.0, None, None), LATE)
    track.settle([(start, end)], LATE)
    assert [f[0] for f in track.quarantine] == [end + LATE + 120_000]


def test_restore_and_prune_keep_every_distance() -> None:
    fixes = _route(200)
    track = _feed(fixes, 10, [(0, None)])
    a, b = fixes[50][0], fixes[150][0]
    driven = track.driven_mm(a, b)
    restored = Track.restore(track.points(), newest=track.newest, quarantine=[])
    assert restored.driven_mm(a, b) == driven
    assert track.prune_before(fixes[40][0])
    assert track.driven_mm(a, b) == driven
    assert track.shift_mm(0, None) == _expected(fixes[40:])[-1]


def test_fixes_at_one_time_differing_only_by_a_missing_speed_or_heading() -> None:
    # A repeated ping may come back with or without its speed or heading: sorting such fixes
    # as tuples compares None with a number (a TypeError). Whichever arrives first, the one
    # with the values is kept, in the track as in the quarantine.
    bare = (5_000_000, 42.5, 1.5, None, None)
    speed = (5_000_000, 42.5, 1.5, 3.0, None)
    heading = (5_000_000, 42.5, 1.5, None, 90.0)
    later = (5_010_000, 42.6, 1.6, None, None)
    for order in ([bare, speed, later], [later, speed, bare], [heading, bare, later]):
        track = Track()
        for f in order:
            track.offer(f, LATE)
        fresh, _, _ = track.settle([(0, None)], LATE)
        append_batch([(track, fix_arrays(fresh))])
        assert track.points() == [speed if speed in order else heading, later]
        waiting = Track()
        for f in order:
            waiting.offer(f, LATE)
        waiting.settle([], LATE)
        waiting.offer((5_020_000, 42.7, 1.7, None, None), LATE)
        waiting.settle([], LATE)
        assert waiting.quarantine[0] == (speed if speed in order else heading)
        fresh, _, _ = waiting.settle([(0, None)], LATE)
        append_batch([(waiting, fix_arrays(fresh))])
        assert waiting.points()[0] == track.points()[0]


def test_a_shift_kept_whole_by_a_prune_is_measured_on_its_fixes() -> None:
    """A prune cuts a track between two shifts. The second shift's first fix comes a few
    seconds after the shift started, so the track now begins after the shift's start: the
    shift is still whole on the track and its distance must come from the fixes, not from
    the cache of pruned days (which never held it: it was not pruned)."""
    from projections.fold import Projection
    from projections.state import DAY_MS

    proj = Projection()
    tech = proj._tech("T-1")
    day1, day2 = 1_795_392_000_000, 1_795_392_000_000 + DAY_MS  # two midnights (UTC)
    first = [(day1 + 8 * 3_600_000 + i * 10_000, f[1], f[2], f[3], f[4])
             for i, f in enumerate(_route(120, seed=5))]  # fmt: skip
    second = [(day2 + 9 * 3_600_000 + 5_000 + i * 10_000, f[1], f[2], f[3], f[4])
              for i, f in enumerate(_route(120, seed=6))]  # fmt: skip
    tech.starts = {"s1": (day1 + 8 * 3_600_000, {}), "s2": (day2 + 9 * 3_600_000, {})}
    tech.ends = {"e1": first[-1][0] + 1_000, "e2": second[-1][0] + 1_000}
    tech.shifts_changed()
    track = proj.tracks["T-1"] = _feed(first + second, 5, tech.shifts())
    whole = {proj.day(s): proj._shift_mm("T-1", proj.day(s)) for s, _ in tech.shifts()}
    assert all(whole.values())
    # What _persist_tracks does to a track reaching back further than it must keep: cache
    # the days whose shifts started before the cut, then forget the fixes before it.
    cut = day2 + 6 * 3_600_000  # between the two shifts
    for s, e in tech.shifts():
        if s < cut:
            tech.km_cache[proj.day(s)] = track.shift_mm(s, e)
    track.prune_before(cut)
    tech.track_pruned, tech.track_cut = True, cut
    assert track.start is not None and track.start > tech.shifts()[1][0]
    assert {d: proj._shift_mm("T-1", d) for d in whole} == whole


def test_a_leg_starting_before_its_shift_first_fix_is_not_charged_the_night() -> None:
    """A van parked at home overnight: the last fix of one shift and the first of the next
    are kilometres apart. A leg set off before the new shift's first fix is measured from
    that fix, not from the evening before, whether or not the old fixes are still held."""
    evening = [(1_000_000 + i * 10_000, 42.50 + i * 0.0005, 1.50, 10.0, None) for i in range(30)]
    morning_at = 1_000_000 + 15 * 3_600_000
    morning = [(morning_at + 5_000 + i * 10_000, 42.60 + i * 0.0005, 1.60, 10.0, None)
               for i in range(30)]  # fmt: skip
    shifts = [(1_000_000, evening[-1][0] + 1), (morning_at, None)]
    track = _feed(evening + morning, 3, shifts)
    set_off, arrive = morning_at + 1_000, morning[9][0]
    leg = track.driven_mm(set_off, arrive, since=morning_at)
    assert leg == _expected(morning[:10])[-1] > 0
    assert track.driven_mm(set_off, arrive) > 10_000_000  # without: the night's 14 km
    track.prune_before(morning_at)  # the same once the evening is forgotten
    assert track.driven_mm(set_off, arrive, since=morning_at) == leg


def test_a_batch_settles_sorted_with_each_time_once() -> None:
    # fixes in one shift come back as they are when sorted and unique (the usual case); out
    # of order, with a time twice, or with quarantined fixes promoted, they are sorted first
    fixes = _route(30)
    track = Track()
    for f in [fixes[3], *fixes[:3], *fixes[4:10], fixes[6]]:
        track.offer(f, LATE)
    fresh, merged, _ = track.settle([(0, None)], LATE)
    assert fresh == fixes[:10] and merged == []
    waiting = Track()
    for f in fixes[10:15]:
        waiting.offer(f, LATE)
    waiting.settle([], LATE)
    for f in fixes[15:20]:
        waiting.offer(f, LATE)
    fresh, _, _ = waiting.settle([(0, None)], LATE)
    assert fresh == fixes[10:20]


def test_tracks_appended_together_equal_each_built_alone() -> None:
    # append_batch joins the arrays of several tracks' fixes: each track must
    # hold what the general path (Track.restore) builds from its fixes alone, missing and
    # integer speeds included, and the same odometer
    routes = [_route(50, seed) for seed in (1, 2, 3)]
    routes[1] = [(f[0], f[1], f[2], None if i % 3 else 7, f[4]) for i, f in enumerate(routes[1])]
    tracks = [Track() for _ in routes]
    first = ((tracks[0], routes[0][:25]), (tracks[1], routes[1][:20]))
    append_batch([(track, fix_arrays(fixes)) for track, fixes in first])
    second = ((tracks[0], routes[0][25:]), (tracks[1], routes[1][20:]), (tracks[2], routes[2]))
    append_batch([(track, fix_arrays(fixes)) for track, fixes in second])
    for track, route in zip(tracks, routes, strict=True):
        alone = Track.restore(route, newest=route[-1][0], quarantine=[])
        assert track.points() == alone.points()
        assert list(track.odo) == list(alone.odo)
        assert track.odo[-1] > 0
