"""The ETA points kept for the accuracy KPIs, and the timestamp parser they use."""

from __future__ import annotations

import random

from events.codec import format_time, parse_time
from projections.etas import Etas, quantiles, time_ms


def test_the_eta_in_force_is_the_latest_published_by_then_for_that_technician() -> None:
    etas = Etas()
    t = 1_800_000_000_000
    text = format_time
    for i, (at, tech) in enumerate([(t, "A"), (t + 60_000, "A"), (t + 60_000, "B"), (t + 5, "A")]):
        assert etas.add("WO", tech, (at, f"e{i}", text(at), text(at + 1), text(at + 2)))
    assert not etas.add("WO", "A", (t, "e0", "x", "y", "z"))  # a repeated id is ignored
    assert etas.in_force("WO", "A", None, t + 59_999)[1] == "e3"  # type: ignore[index]
    assert etas.in_force("WO", "A", None, t + 60_000)[1] == "e1"  # type: ignore[index]
    assert etas.in_force("WO", "A", t + 1, t + 4) is None  # nothing since the assignment
    assert etas.in_force("WO", "C", None, t + 99_000) is None
    assert etas.newest("WO")[1] in ("e1", "e2")  # type: ignore[index]
    assert quantiles(etas.in_force("WO", "B", None, 2**62)) == (  # type: ignore[arg-type]
        t + 60_000,
        t + 60_001,
        t + 60_002,
    )
    assert etas.prune("WO", {("A", "e3")}) == 3
    assert etas.rows() == [("WO", "A", (t + 5, "e3", text(t + 5), text(t + 6), text(t + 7)))]


def test_the_fast_time_parser_agrees_with_the_codec() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        ms = rng.randrange(1_500_000_000_000, 2_000_000_000_000)
        assert time_ms(format_time(ms)) == ms
    for text in ("2026-11-23T14:05:00Z", "2026-11-23T15:05:00.123+01:00"):
        assert time_ms(text) == parse_time(text)
