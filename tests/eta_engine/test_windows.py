"""Chained arrival windows: the job on hand, waiting for a window, and how an overrun moves
every later job at once."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eta_engine.windows import (
    ARRIVED,
    EN_ROUTE,
    QUEUED,
    WORKING,
    ChainParams,
    Chains,
    conditional_lognormal,
    latin_normals,
    quantiles,
    simulate_arrivals,
)

PARAMS = ChainParams(setup=(math.log(180), 0.5), turnaround=(math.log(240), 0.5), lead=(300, 60))
Z = latin_normals(6, 256, seed=1)
LEVELS = (0.1, 0.5, 0.9)


def _job(chains: Chains, i: int, k: int, kind: int, **values: float) -> None:
    chains.kind[i, k] = kind
    chains.mu[i, k] = math.log(3600)
    chains.sigma[i, k] = 0.3
    chains.window_start_s[i, k] = -3600.0
    for name, value in values.items():
        getattr(chains, name)[i, k] = value


def test_draws_are_standard_normal_and_reproducible() -> None:
    again = latin_normals(6, 256, seed=1)
    np.testing.assert_array_equal(Z, again)
    assert abs(Z.mean()) < 0.02
    assert Z.std() == pytest.approx(1.0, abs=0.03)
    assert not np.array_equal(Z, latin_normals(6, 256, seed=2))


def test_conditional_lognormal_respects_the_time_spent() -> None:
    z = Z[0, 0]
    mu, sigma = np.array([math.log(3600.0)]), np.array([0.4])
    ends = [conditional_lognormal(mu, sigma, np.array([e]), z) for e in (0.0, 3600.0, 9000.0)]
    for e, draws in zip((0.0, 3600.0, 9000.0), ends, strict=True):
        assert np.all(draws >= e)
    medians = [float(np.median(d)) for d in ends]
    assert medians[0] < medians[1] < medians[2]
    # Far past its usual length a job still has a remaining time of its own.
    assert medians[2] - 9000.0 > 60.0


def test_en_route_arrival_is_the_remaining_drive() -> None:
    chains = Chains.empty(1, 1)
    _job(chains, 0, 0, EN_ROUTE, travel_s=600.0, free_s=500.0)
    q = quantiles(simulate_arrivals(chains, PARAMS, Z), LEVELS)[:, 0, 0]
    assert q[1] == pytest.approx(600.0, rel=0.03)
    assert q[0] < 600.0 < q[2]


def test_an_early_technician_waits_for_the_window() -> None:
    chains = Chains.empty(1, 1)
    # Free now, a 10-minute drive, the window opens in 3 hours: set off at 3h - lead - 10 min.
    _job(chains, 0, 0, QUEUED, travel_s=600.0, free_s=600.0, window_start_s=3 * 3600.0)
    q = quantiles(simulate_arrivals(chains, PARAMS, Z), LEVELS)[:, 0, 0]
    assert q[1] == pytest.approx(3 * 3600.0 - 300.0, abs=60.0)


def test_queue_is_chained_through_work_and_travel() -> None:
    chains = Chains.empty(1, 3)
    _job(chains, 0, 0, WORKING, anchor_s=-600.0)  # started 10 min ago, ~1 h job
    _job(chains, 0, 1, QUEUED, travel_s=900.0, free_s=800.0)
    _job(chains, 0, 2, QUEUED, travel_s=1200.0, free_s=1000.0)
    arrivals = simulate_arrivals(chains, PARAMS, Z)
    assert np.all(np.isnan(arrivals[0, 0]))  # the job on hand has arrived already
    q = quantiles(arrivals, LEVELS)[:, 0, :]
    # Job 1: ~50 min of work left + turnaround + 15 min drive; job 2: + setup + 1 h + ...
    assert 3600.0 < q[1, 1] < 5400.0
    assert q[1, 2] > q[1, 1] + 3600.0
    # Uncertainty accumulates down the queue.
    assert q[2, 2] - q[0, 2] > q[2, 1] - q[0, 1]


def test_an_overrun_moves_every_later_window() -> None:
    # The same job seen twice: 50 min in (about done), then 70 min later, still going.
    chains = Chains.empty(2, 4)
    later = 4200.0
    for i, started in enumerate((-3000.0, -3000.0 - later)):
        _job(chains, i, 0, WORKING, anchor_s=started)
        for k in (1, 2, 3):
            _job(chains, i, k, QUEUED, travel_s=600.0, free_s=600.0)
    q = quantiles(simulate_arrivals(chains, PARAMS, Z), LEVELS)
    on_time = q[:, 0, 1:]
    overrun = q[:, 1, 1:] + later  # back to the first look's clock
    assert np.all(overrun[1] > on_time[1] + 1800.0)  # every p50 moves, by the overrun...
    assert np.all(overrun[0] > on_time[0] + 1800.0)  # ...and every p10
    shift = overrun[1] - on_time[1]
    assert np.ptp(shift) < 600.0  # all together: the queue moves as one


def test_arrived_and_padding() -> None:
    chains = Chains.empty(2, 2)
    _job(chains, 0, 0, ARRIVED, anchor_s=-60.0)
    _job(chains, 0, 1, QUEUED, travel_s=300.0, free_s=300.0)
    arrivals = simulate_arrivals(chains, PARAMS, Z)
    assert np.all(np.isnan(arrivals[1]))  # an all-PAD row reports nothing
    q = quantiles(arrivals, LEVELS)[:, 0, 1]
    assert q[1] > 3600.0  # setup, an hour's work, turnaround, the drive


def test_before_the_shift_nobody_leaves() -> None:
    chains = Chains.empty(1, 1)
    _job(chains, 0, 0, QUEUED, travel_s=600.0, free_s=600.0, window_start_s=0.0)
    chains.start_s[0] = 1800.0  # the shift starts in half an hour
    q = quantiles(simulate_arrivals(chains, PARAMS, Z), LEVELS)[:, 0, 0]
    assert q[0] > 1800.0 + 600.0


def test_an_uncertain_level_is_shared_down_the_queue() -> None:
    # Six one-hour jobs queued. Split the same total log-sd two ways: all per job (they
    # average out down the queue), or partly a level shared by the whole chain (it does not).
    chains = Chains.empty(2, 6)
    for i in range(2):
        for k in range(6):
            _job(chains, i, k, QUEUED, travel_s=600.0, free_s=600.0)
    chains.sigma[0, :] = 0.5
    chains.sigma[1, :] = 0.4
    chains.sigma_level[1, :] = 0.3
    q = quantiles(simulate_arrivals(chains, PARAMS, Z), LEVELS)
    width = q[2] - q[0]
    # The first job comes after no work: the same window either way...
    assert width[1, 0] == pytest.approx(width[0, 0], rel=0.05)
    # ...the last one after five jobs: much wider when their level is shared.
    assert width[1, 5] > 1.3 * width[0, 5]
    assert q[1, 1, 5] == pytest.approx(q[1, 0, 5], rel=0.1)


def test_the_job_on_hand_is_timed_by_its_own_elapsed_time() -> None:
    chains = Chains.empty(1, 3)
    _job(chains, 0, 0, WORKING, anchor_s=-600.0)
    _job(chains, 0, 1, QUEUED, travel_s=900.0, free_s=800.0)
    _job(chains, 0, 2, QUEUED, travel_s=1200.0, free_s=1000.0)
    base = simulate_arrivals(chains, PARAMS, Z)
    chains.sigma_level[0, 0] = 0.5  # the job on hand is timed by its own elapsed time
    np.testing.assert_array_equal(simulate_arrivals(chains, PARAMS, Z), base)


def test_a_chain_draws_the_same_samples_whatever_shares_the_call() -> None:
    # Chains of every kind and length, simulated together and each on its own: every sample
    # must be bit for bit the same (stops are computed only for the chains that have them).
    rng = np.random.default_rng(5)
    firsts = [QUEUED, EN_ROUTE, ARRIVED, WORKING, QUEUED, EN_ROUTE, WORKING]
    lengths = [1, 3, 2, 6, 4, 1, 5]
    together = Chains.empty(len(firsts), 6)
    for i, (first, length) in enumerate(zip(firsts, lengths, strict=True)):
        for k in range(length):
            values = {
                "travel_s": float(rng.uniform(60, 1800)),
                "free_s": float(rng.uniform(60, 1500)),
                "window_start_s": float(rng.uniform(-3600, 7200)),
                "anchor_s": float(rng.uniform(-3000, 0)),
                "sigma_level": float(rng.uniform(0, 0.3)),
            }
            _job(together, i, k, first if k == 0 else QUEUED, **values)
        together.prior_ratio[i] = rng.uniform(1.0, 1.5)
    together.start_s[4] = 900.0
    arrivals = simulate_arrivals(together, PARAMS, Z)
    for i, length in enumerate(lengths):
        alone = Chains.empty(1, length)
        for name in ("kind", "travel_s", "free_s", "window_start_s", "mu", "sigma", "anchor_s"):
            getattr(alone, name)[0] = getattr(together, name)[i, :length]
        alone.sigma_level[0] = together.sigma_level[i, :length]
        alone.prior_ratio[0] = together.prior_ratio[i]
        alone.start_s[0] = together.start_s[i]
        own = simulate_arrivals(alone, PARAMS, Z)
        np.testing.assert_array_equal(own[0], arrivals[i, :length])
        assert np.all(np.isnan(arrivals[i, length:]))
        reported = np.isin(together.kind[i, :length], (QUEUED, EN_ROUTE))
        assert np.all(np.isfinite(arrivals[i, :length][reported]))
        assert np.all(np.isnan(arrivals[i, :length][~reported]))
