"""Job durations learned online: a documented prior, then the job type, repeat visits and the
technician, recent jobs weighing most, honest spreads when data are few."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from eta_engine.durations import DurationConfig, DurationModel, Overheads


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
