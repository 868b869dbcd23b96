"""A technician's shifts looked up by bisection answer as a walk over all of them would:
random shift histories, with shifts left open, starts at equal times and ends out of order."""

from __future__ import annotations

import random

import pytest

from projections.model import Technician


def _history(rng: random.Random) -> Technician:
    tech = Technician("T-1")
    t = 0
    for i in range(rng.randint(0, 12)):
        t += rng.randint(0, 5) * 1_000  # equal start times happen
        tech.starts[f"s{i}"] = (t, {"filter": rng.randint(0, 3)})
        if rng.random() < 0.7:  # some shifts never end
            tech.ends[f"e{i}"] = t + rng.randint(0, 4) * 1_000
    if rng.random() < 0.3 and tech.starts:
        tech.ends["stray"] = rng.randint(0, t + 5_000)  # an end of no shift in particular
    return tech


def _stock_by_walking(tech: Technician, at: int) -> tuple[int, dict[str, int]] | None:
    best: tuple[int, dict[str, int]] | None = None
    for start, stock in tech.starts.values():
        if start <= at and (best is None or start > best[0]):
            best = (start, stock)
    if best is None:
        return None
    for start, end in tech.shifts():
        if start == best[0]:
            if end is not None and at > end:
                return None
            break
    return best


@pytest.mark.parametrize("seed", range(300))
def test_lookups_equal_a_walk_over_every_shift(seed: int) -> None:
    rng = random.Random(seed)
    tech = _history(rng)
    shifts = tech.shifts()
    horizon = (shifts[-1][0] if shifts else 0) + 8_000
    for _ in range(40):
        lo = rng.randint(-2_000, horizon)
        hi = lo + rng.randint(0, 10_000)
        assert tech.shifts_started(lo, hi) == [s for s in shifts if lo <= s[0] < hi]
        reaching = [s for s in shifts if (s[1] is None or s[1] >= lo) and s[0] <= hi]
        assert sorted(tech.shifts_reaching(lo, hi)) == reaching
        assert tech.shift_started_by(lo) == next((s for s, _ in reversed(shifts) if s <= lo), None)
        assert tech.van_stock_at(lo) == _stock_by_walking(tech, lo)


def test_a_change_of_shifts_is_seen_once_marked() -> None:
    tech = Technician("T-1")
    tech.starts["a"] = (1_000, {})
    assert tech.shifts_started(0, 5_000) == [(1_000, None)]
    tech.ends["b"] = 2_000
    tech.starts["c"] = (3_000, {"filter": 1})
    tech.shifts_changed()
    assert tech.shifts_started(0, 5_000) == [(1_000, 2_000), (3_000, None)]
    assert tech.shifts_reaching(2_500, 2_600) == []
    assert tech.van_stock_at(3_500) == (3_000, {"filter": 1})
