"""Job durations learned online: a documented prior, then the job type, repeat visits and the
technician, recent jobs weighing most, honest spreads when data are few."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from eta_engine.durations import (
    DurationConfig,
    DurationModel,
    Overheads,
    truncated_moments,
    truncated_moments_array,
)


def test_cold_start_is_the_documented_prior() -> None:
    model = DurationModel(DurationConfig(prior_median_s=3600.0, prior_log_sd=0.5))
    mu, sigma = model.params("boiler_service", 1, None)
    assert math.exp(mu) == pytest.approx(3600.0)
    assert sigma > 0.5  # the prior's spread plus the uncertainty of its median


def test_learns_each_job_type() -> None:
    rng = np.random.default_rng(1)
    model = DurationModel()
    for _ in range(40):
        model.observe("install", 1, None, float(9000.0 * math.exp(0.3 * rng.standard_normal())))
        model.observe("service", 1, None, float(2700.0 * math.exp(0.3 * rng.standard_normal())))
    mu_i, sd_i = model.params("install", 1, None)
    mu_s, sd_s = model.params("service", 1, None)
    assert math.exp(mu_i) == pytest.approx(9000.0, rel=0.15)
    assert math.exp(mu_s) == pytest.approx(2700.0, rel=0.15)
    assert 0.2 < sd_i < 0.45 and 0.2 < sd_s < 0.45
    # An unseen type borrows from all types seen so far.
    mu_new, sd_new = model.params("unknown", 1, None)
    assert 2700.0 < math.exp(mu_new) < 9000.0
    assert sd_new > sd_i


def test_few_observations_give_wider_ranges() -> None:
    few, many = DurationModel(), DurationModel()
    for i in range(50):
        many.observe("x", 1, None, 3000.0 + 10.0 * (i % 7))
        if i < 2:
            few.observe("x", 1, None, 3000.0 + 10.0 * (i % 7))
    assert few.params("x", 1, None)[1] > many.params("x", 1, None)[1]


def test_repeat_visits_and_technicians_shift_the_estimate() -> None:
    model = DurationModel()
    for _ in range(20):
        model.observe("repair", 1, "T-1", 3600.0)
        model.observe("repair", 1, "T-2", 5400.0)
        model.observe("repair", 2, None, 1800.0)
    base = math.exp(model.params("repair", 1, None)[0])
    fast = math.exp(model.params("repair", 1, "T-1")[0])
    slow = math.exp(model.params("repair", 1, "T-2")[0])
    again = math.exp(model.params("repair", 2, None)[0])
    assert fast < base < slow
    assert again < 0.7 * base


def test_recent_jobs_count_most() -> None:
    model = DurationModel(DurationConfig(decay=0.9))
    for _ in range(30):
        model.observe("x", 1, None, 3600.0)
    for _ in range(30):
        model.observe("x", 1, None, 1800.0)
    assert math.exp(model.params("x", 1, None)[0]) < 2200.0


def test_overheads_priors_and_learning() -> None:
    over = Overheads()
    assert math.exp(over.params("setup")[0]) == pytest.approx(180.0)
    assert over.params("lead")[0] == pytest.approx(300.0)
    for _ in range(30):
        over.observe("wind_down", 150.0)
        over.observe("lead", 420.0)
    # About 20 jobs' worth of evidence against the prior's 3 (median 10 min).
    assert math.exp(over.params("wind_down")[0]) == pytest.approx(150.0, rel=0.3)
    assert over.params("lead")[0] == pytest.approx(420.0, rel=0.1)


def test_snapshot_round_trip() -> None:
    model, over = DurationModel(), Overheads()
    model.observe("x", 1, "T-1", 4000.0)
    model.observe("x", 2, None, 2000.0)
    over.observe("setup", 100.0)
    m2, o2 = DurationModel(), Overheads()
    m2.restore(orjson.loads(orjson.dumps(model.snapshot())))
    o2.restore(orjson.loads(orjson.dumps(over.snapshot())))
    for args in (("x", 1, "T-1"), ("x", 2, None), ("y", 1, None)):
        assert m2.params(*args) == model.params(*args)
    assert o2.params("setup") == over.params("setup")


def test_truncated_moments_match_sampling() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 0.5, 2_000_000)
    for low in (-1.0, 0.8, 1.7):
        kept = x[x > low]
        m1, m2 = truncated_moments(1.0, 0.5, low)
        assert m1 == pytest.approx(float(kept.mean()), abs=0.005)
        assert m2 == pytest.approx(float(np.mean(kept**2)), abs=0.01)
    # Far in the tail (no sample would get there) the law sits just above the cut.
    assert truncated_moments(0.0, 1.0, 50.0) == (50.0, 2500.0)


def test_truncated_moments_array_is_the_scalar_one_elementwise() -> None:
    rng = np.random.default_rng(8)
    mu = rng.normal(8.0, 0.5, 500)
    sd = rng.uniform(0.1, 0.9, 500)
    low = np.concatenate([rng.normal(8.0, 2.0, 499), [60.0]])  # the last one far in the tail
    m1, m2 = truncated_moments_array(mu, sd, low)
    for i in range(len(mu)):
        e1, e2 = truncated_moments(float(mu[i]), float(sd[i]), float(low[i]))
        assert m1[i] == pytest.approx(e1, rel=1e-12)
        assert m2[i] == pytest.approx(e2, rel=1e-12)
    assert (m1[-1], m2[-1]) == (60.0, 3600.0)


def _morning(model: DurationModel, rng: np.random.Generator) -> list[tuple[str, int, float]]:
    """Twenty jobs of one type (median 90 min) started together; an hour and a quarter later
    the short ones are done and the rest still under way."""
    durations = 5400.0 * np.exp(0.4 * rng.standard_normal(20))
    elapsed = 4500.0
    for d in durations[durations <= elapsed]:
        model.observe("repair", 1, None, float(d))
    return [("repair", 1, elapsed) for d in durations if d > elapsed]


def test_work_under_way_corrects_the_bias_of_early_completions() -> None:
    rng = np.random.default_rng(11)
    model = DurationModel()
    still_open = _morning(model, rng)
    assert len(still_open) > 5
    completed_only = math.exp(model.params("repair", 1, None)[0])
    model.set_open(still_open)
    with_open = math.exp(model.params("repair", 1, None)[0])
    # Completed jobs alone say the short ones are the rule; the open ones say otherwise.
    assert completed_only < 0.75 * 5400.0
    assert with_open > completed_only + 900.0
    assert with_open == pytest.approx(5400.0, rel=0.25)
    # Passing nothing open takes it back (the set is not state).
    model.set_open([])
    assert math.exp(model.params("repair", 1, None)[0]) == pytest.approx(completed_only)


def test_a_job_just_started_says_almost_nothing() -> None:
    model = DurationModel()
    for _ in range(10):
        model.observe("x", 1, None, 2400.0)
    before = model.params("x", 1, None)[0]
    model.set_open([("x", 1, 60.0)] * 5)
    assert model.params("x", 1, None)[0] == pytest.approx(before, abs=0.02)


def test_a_completion_retires_the_old_imputation() -> None:
    # The imputation of open jobs uses the estimate of the time: after a completion it is
    # redone from the new estimate, even if the open set passed is the same.
    model, fresh = DurationModel(), DurationModel()
    open_jobs = [("x", 1, 3000.0)] * 3
    model.set_open(open_jobs)
    model.observe("x", 1, None, 7200.0)
    model.set_open(open_jobs)
    fresh.observe("x", 1, None, 7200.0)
    fresh.set_open(open_jobs)
    assert model.params("x", 1, None) == fresh.params("x", 1, None)


def test_split_separates_job_spread_from_the_level_uncertainty() -> None:
    model = DurationModel()
    mu, sigma, level = model.split("x", 1, None)
    assert (mu, math.hypot(sigma, level)) == pytest.approx(model.params("x", 1, None))
    cold = level
    for _ in range(40):
        model.observe("x", 1, None, 3000.0)
    mu, sigma, level = model.split("x", 1, None)
    assert (mu, math.hypot(sigma, level)) == pytest.approx(model.params("x", 1, None))
    assert level < cold / 2.0  # forty jobs later the kind's level is well known
