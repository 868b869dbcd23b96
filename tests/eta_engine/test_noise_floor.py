"""The oracle of benchmarks/eta_noise_floor.py on a small simulated day (no pipeline).

The oracle reads the simulator's state, so it lives in benchmarks/, never in eta_engine/.
These checks can fail: a wrong model of the simulator's decision rules or travel times would
leave an error even when the oracle is handed every realised draw, and a wrong on-site law
would show in its coverage of the realised on-site times.
"""

from __future__ import annotations

import math
import statistics

import pytest

from benchmarks.eta_noise_floor import (
    MODES,
    Oracle,
    Recording,
    Travel,
    abs_errors_min,
    all_pairs,
    duration_check,
    record_day,
)
from eta_engine.roads import RoadGraph
from simulator import make_params, simulate


@pytest.fixture(scope="module")
def day(graph: RoadGraph) -> Recording:
    return record_day(make_params("incidents", technicians=12, seed=2, hours=8), graph)


def test_the_recorder_changes_nothing(graph: RoadGraph, day: Recording) -> None:
    plain = simulate(make_params("incidents", technicians=12, seed=2, hours=8), graph)
    assert plain.truth == day.truth
    assert len(plain) == len(day.sim)


def test_oracle_error_is_finite_and_vanishes_given_the_realised_draws(day: Recording) -> None:
    pairs = all_pairs(day.truth, day.sim.params.shift_start_ms)
    assert len(pairs) > 40
    travel = Travel(day.world, day.traffic)
    mae: dict[str, dict[int, float]] = {}
    exact: dict[str, float] = {}
    for mode, (perfect_travel, perfect_durations) in MODES.items():
        oracle = Oracle(
            day,
            perfect_travel=perfect_travel,
            perfect_durations=perfect_durations,
            samples=300,
            travel=travel,
        )
        errors = abs_errors_min(oracle, pairs)
        mae[mode] = {h: statistics.fmean(e) for h, e in errors.items()}
        far = errors[30] + errors[60]
        exact[mode] = sum(e < 0.25 for e in far) / len(far)
        assert all(math.isfinite(v) for v in mae[mode].values())
    # The honest oracle cannot foresee how long jobs take: minutes of error at 30 and 60.
    assert mae["oracle"][30] > 3.0
    assert mae["oracle"][60] > mae["oracle"][10]
    # Handed the realised durations and incidents, only queue changes after t remain: nine
    # forecasts in ten at 30 and 60 min are exact (a departure rule 5 min off gives 0.78).
    assert exact["both"] >= 0.85
    assert exact["oracle"] < 0.5
    assert mae["both"][10] < 0.5
    assert mae["both"][30] < 1.0
    assert mae["both"][60] < 2.0
    assert mae["perfect_durations"][30] < mae["oracle"][30] / 3


def test_the_on_site_law_matches_the_simulators_draws(day: Recording) -> None:
    check = duration_check(Oracle(day, samples=2000, seed=5))
    assert check["visits"] > 20
    assert 0.65 <= check["coverage"] <= 0.95
    assert 0.38 <= check["mean_pit"] <= 0.62
