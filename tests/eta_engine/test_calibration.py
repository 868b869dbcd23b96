"""Online calibration: with a miscalibrated base model (too narrow and biased, or too wide),
the calibrated windows' coverage converges to the nominal 80 %, bucket by bucket."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from eta_engine.calibration import CalibrationConfig, Calibrator, residual


def _feed(
    cal: Calibrator,
    rng: np.random.Generator,
    n: int,
    *,
    scale: float,
    bias: float,
    horizon_s: float = 1800.0,
) -> tuple[float, float]:
    """Stream ``n`` predictions; returns coverage and mean p(late) error of the last half."""
    hits = []
    brier_gap = []
    for i in range(n):
        mid = 3600.0
        lo, hi = mid - 600.0, mid + 600.0  # the base model says +-10 min (P10/P90)
        # The truth is normal around mid + bias with sd scale * (what the base model says).
        actual = mid + bias + scale * (600.0 / 1.2816) * rng.standard_normal()
        b = np.array([cal.bucket(horizon_s)])
        c_lo, _c_mid, c_hi = cal.calibrate(b, np.array([lo]), np.array([mid]), np.array([hi]))
        end = np.array([mid + 300.0])
        p_late = cal.prob_after(b, end, (np.array([lo]), np.array([mid]), np.array([hi])))[0]
        if i >= n // 2:
            hits.append(c_lo[0] <= actual <= c_hi[0])
            brier_gap.append(p_late - float(actual > end[0]))
        r = residual(np.array([actual]), np.array([lo]), np.array([mid]), np.array([hi]), floor=30)
        cal.record(int(b[0]), float(r[0]))
    return float(np.mean(hits)), float(np.mean(brier_gap))


@pytest.mark.parametrize(("scale", "bias"), [(2.0, 300.0), (0.5, 0.0), (1.5, -400.0)])
def test_coverage_converges_to_nominal(scale: float, bias: float) -> None:
    rng = np.random.default_rng(7)
    cal = Calibrator(CalibrationConfig(capacity=400, prior_weight=30.0))
    coverage, p_late_bias = _feed(cal, rng, 3000, scale=scale, bias=bias)
    assert coverage == pytest.approx(0.80, abs=0.03)
    assert abs(p_late_bias) < 0.04  # the late probability is honest too


def test_an_uncalibrated_base_model_would_be_wrong() -> None:
    # The control: the same truth scored against the base windows misses often.
    rng = np.random.default_rng(7)
    actual = 3600.0 + 300.0 + 2.0 * (600.0 / 1.2816) * rng.standard_normal(3000)
    assert np.mean((actual >= 3000.0) & (actual <= 4200.0)) < 0.6


def test_buckets_learn_separately() -> None:
    rng = np.random.default_rng(3)
    cal = Calibrator(CalibrationConfig(classes=2))
    # Class 0 is too narrow, class 1 too wide: each must end up at 80 %.
    for i in range(4000):
        kind = i % 2
        scale = 2.0 if kind == 0 else 0.5
        actual = scale * (1.0 / 1.2816) * rng.standard_normal()
        cal.record(cal.bucket(600.0, kind), actual)  # base lo/mid/hi = -1/0/+1
    for kind in (0, 1):
        b = np.array([cal.bucket(600.0, kind)])
        lo, _mid, hi = cal.calibrate(b, np.array([-1.0e3]), np.array([0.0]), np.array([1.0e3]))
        expected = (2.0 if kind == 0 else 0.5) * 1.0e3
        assert hi[0] == pytest.approx(expected, rel=0.15)
        assert lo[0] == pytest.approx(-expected, rel=0.15)


def test_cold_start_keeps_the_base_windows() -> None:
    cal = Calibrator()
    b = np.array([cal.bucket(900.0)])
    lo, mid, hi = cal.calibrate(b, np.array([100.0]), np.array([200.0]), np.array([400.0]))
    assert lo[0] == pytest.approx(100.0, abs=5.0)
    assert mid[0] == pytest.approx(200.0, abs=5.0)
    assert hi[0] == pytest.approx(400.0, abs=10.0)
    p = cal.prob_after(
        b, np.array([400.0]), (np.array([100.0]), np.array([200.0]), np.array([400.0]))
    )
    assert p[0] == pytest.approx(0.10, abs=0.03)


def test_snapshot_round_trip() -> None:
    cal = Calibrator(CalibrationConfig(capacity=5))
    for v in range(8):  # wraps around the ring buffer
        cal.record(0, float(v))
    other = Calibrator(CalibrationConfig(capacity=5))
    other.restore(orjson.loads(orjson.dumps(cal.snapshot())))
    assert sorted(other.buffers[0]) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert other.residual_quantile(0, 0.9) == cal.residual_quantile(0, 0.9)
    other.record(0, 8.0)
    cal.record(0, 8.0)
    assert other.buffers == cal.buffers


def test_adaptive_levels_follow_the_misses_within_their_band() -> None:
    cal = Calibrator(CalibrationConfig(adapt_rate=0.01, adapt_band=0.5))
    rng = np.random.default_rng(2)
    for value in rng.normal(0.0, 1.0 / 1.2816, 400):  # residuals of a calibrated model
        cal.record(0, float(value))
    b = np.array([0])
    base = (np.array([-600.0]), np.array([0.0]), np.array([600.0]))
    lo0, _, hi0 = cal.calibrate(b, *base)
    # Arrivals keep landing above the window (a drift the buffer has not caught up with).
    for _ in range(40):
        cal.feedback(0, below=False, above=True)
    lo1, _, hi1 = cal.calibrate(b, *base)
    assert hi1[0] > hi0[0] + 100.0  # the upper end moves out...
    assert lo1[0] > lo0[0]  # ...and the lower, never missed, in
    # However long the drift lasts, an end is read between half and 1.5 times its nominal
    # miss rate: the P90 end never folds onto the median or runs off to the maximum.
    for _ in range(10_000):
        cal.feedback(0, below=False, above=True)
    assert cal.adjusted[0] == pytest.approx([0.15, 0.95])
    # Hits and misses at the nominal rates leave the levels where they are.
    cal = Calibrator(CalibrationConfig(adapt_rate=0.01))
    for i in range(1000):
        cal.feedback(0, below=i % 10 == 0, above=i % 10 == 5)
    assert cal.adjusted[0] == pytest.approx([0.1, 0.9], abs=0.011)


def test_without_an_adapt_rate_feedback_changes_nothing() -> None:
    cal = Calibrator(CalibrationConfig(adapt_rate=0.0))
    cal.feedback(0, below=True, above=False)
    assert cal.adjusted[0] == [0.1, 0.9]


def test_adaptive_levels_survive_a_snapshot() -> None:
    cal = Calibrator(CalibrationConfig(adapt_rate=0.02))
    cal.feedback(3, below=True, above=False)
    other = Calibrator(CalibrationConfig(adapt_rate=0.02))
    other.restore(orjson.loads(orjson.dumps(cal.snapshot())))
    assert other.adjusted == cal.adjusted


def _lognormal_job(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A job on hand whose rest is lognormal; the base window is its exact P10/P50/P90, so
    it is calibrated at the moment of each prediction (what an oracle would say)."""
    mid = float(rng.uniform(10.0, 90.0)) * 60.0
    sigma = 0.6
    lo, hi = mid * np.exp(-1.2816 * sigma), mid * np.exp(1.2816 * sigma)
    return lo, mid, hi, mid * float(np.exp(sigma * rng.standard_normal()))


def _coverage_by_actual(edges: tuple[float, ...], n: int = 6000) -> list[float]:
    """Coverage of the calibrated windows per 10-minute band of the *actual* time to the
    arrival (the evaluation's horizons), on the second half of a stream."""
    rng = np.random.default_rng(3)
    cal = Calibrator(CalibrationConfig(classes=1, arrival_edges_min=edges))
    hits: dict[int, list[bool]] = {}
    kind = np.zeros(1, dtype=np.int64)
    for i in range(n):
        lo, mid, hi, actual = _lognormal_job(rng)
        base = (np.array([lo]), np.array([mid]), np.array([hi]))
        c_lo, _c_mid, c_hi = cal.calibrate(cal.buckets(base[1]), *base)
        if i >= n // 2:
            hits.setdefault(int(actual // 600), []).append(bool(c_lo[0] <= actual <= c_hi[0]))
        cal.record_arrival(kind, np.array([actual]), *base)
    return [float(np.mean(v)) for _, v in sorted(hits.items()) if len(v) >= 150]


def test_arrival_bins_hold_coverage_at_each_actual_time_to_arrival() -> None:
    # Windows right at each prediction's moment cover far more than 80 % of the arrivals
    # that came 40-60 minutes later (and less of those 10-20 minutes later): the horizon
    # is chosen on the outcome. Calibrated by arrival bins they cover about 80 % of each.
    edges = tuple(round(2.0 * 1.25**i, 2) for i in range(22))
    without = _coverage_by_actual(())
    with_bins = _coverage_by_actual(edges)
    assert len(without) == len(with_bins) >= 5
    assert max(abs(c - 0.8) for c in without) > 0.12
    assert max(abs(c - 0.8) for c in with_bins) < 0.07
    assert float(np.mean([abs(c - 0.8) for c in with_bins])) < 0.045


def test_an_arrival_bin_sets_the_window_from_its_threshold() -> None:
    cal = Calibrator(CalibrationConfig(classes=2, arrival_edges_min=(10.0, 20.0, 40.0)))
    kinds = np.ones(1, dtype=np.int64)
    lo, mid, hi = np.array([1200.0]), np.array([1500.0]), np.array([2100.0])
    base = cal.calibrate(cal.buckets(mid, kinds), lo, mid, hi)
    # Class 1's bins of 10-20 and 20-40 min learn scores |r| of 0.5: threshold 0.5.
    for actual in (1500.0 - 150.0, 1500.0 + 300.0) * 20:  # r = -0.5 and +0.5
        cal.record_arrival(kinds, np.array([actual]), lo, mid, hi)
    for actual in (900.0,) * 30:  # 15 min: r = -2, in the 10-20 min bin
        cal.record_arrival(kinds, np.array([actual]), lo, mid, hi)
    assert cal.threshold(1 * 4 + 2) == pytest.approx(0.5)
    assert np.isnan(cal.threshold(0 * 4 + 2))  # class 0 learned nothing
    c_lo, c_mid, c_hi = cal.calibrate(cal.buckets(mid, kinds), lo, mid, hi)
    assert c_hi[0] == pytest.approx(1500.0 + 0.5 * 600.0)  # inside the 20-40 min bin
    assert c_mid[0] == 1500.0
    # The 10-20 min bin's threshold is 2: it would take 900-1200 s, but that piece does not
    # touch the median's (1350-1800 s), so the window is the run around the median only.
    assert cal.threshold(1 * 4 + 1) == pytest.approx(2.0)
    assert c_lo[0] == pytest.approx(1500.0 - 0.5 * 300.0)
    # A wider base window reaches down to 1200 s: then the 10-20 min bin's piece joins it
    # (1500 - 2 * 900 s is below the bin, so all of it: down to 600 s and on).
    wide = cal.calibrate(cal.buckets(mid, kinds), np.array([600.0]), mid, hi)
    assert wide[0][0] <= 600.0
    # Class 0 has no scores: the predicted-horizon window stands.
    other = cal.calibrate(cal.buckets(mid, np.zeros(1, np.int64)), lo, mid, hi)
    assert (other[0][0], other[2][0]) == pytest.approx((base[0][0], base[2][0]))


def test_arrival_scores_survive_a_snapshot() -> None:
    cfg = CalibrationConfig(classes=1, arrival_edges_min=(10.0, 30.0), arrival_min_count=2)
    cal = Calibrator(cfg)
    kinds = np.zeros(3, dtype=np.int64)
    cal.record_arrival(
        kinds, np.array([700.0, 800.0, 2000.0]), *(np.full(3, v) for v in (600.0, 900.0, 1500.0))
    )
    other = Calibrator(cfg)
    other.restore(orjson.loads(orjson.dumps(cal.snapshot())))
    assert other.scores == cal.scores
    assert other.threshold(1) == pytest.approx(cal.threshold(1))
