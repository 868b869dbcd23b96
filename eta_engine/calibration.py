"""Online calibration: keep the windows' empirical coverage at their nominal level.

The base model (:mod:`eta_engine.windows`) gives for each arrival a low, middle and high
quantile ``(lo, mid, hi)`` at the nominal levels (P10/P50/P90 by default). When the arrival is
observed, each prediction made for it becomes a *two-sided standardised residual*::

    r = (actual - mid) / (hi - mid)   if actual >= mid
    r = (actual - mid) / (mid - lo)   otherwise

so a perfectly calibrated base model puts 10 % of residuals below -1, half below 0 and 10 %
above +1, whatever each prediction's width and skew. Residuals are kept per *bucket* in a ring
buffer of the most recent ``capacity``. A bucket is a prediction's *class* (the engine uses:
the van is en route; the technician is free and this is their next job; the job waits behind
other work) crossed with its *horizon* (predicted minutes to arrival): each errs in its own
way, and one class's good news must not narrow another's windows.

A calibrated window end at level ``q`` is the base prediction stretched by the bucket's
empirical residual quantile ``R(q)``: ``mid + R(q) * (hi - mid)`` (or ``(mid - lo)`` when
``R(q) < 0``); the middle stays the base median (see :meth:`Calibrator.calibrate` for why).
The probability of arriving after a time ``t`` is ``1 - G(r(t))`` with ``G`` the residuals'
empirical distribution. This is quantile recalibration (Kuleshov et al., 2018) with a local
scale per prediction, done online: if the base model is too narrow, too wide or biased, the
residual quantiles move until the coverage is nominal again, and they keep following it.

The level each end is read at is itself adapted (:meth:`Calibrator.feedback`, adaptive
conformal inference): when an arrival is observed, every window kept for it says whether the
arrival fell below, inside or above it, and the level of that end moves against the miss. The
buffers give the shape of the errors; the levels correct what the buffers are slow to see,
such as errors that drift during the day. The levels stay within ``adapt_band`` of nominal.

Calibration by the *actual* time to arrival (optional, ``arrival_edges_min``). Coverage
"H minutes before the arrival" is measured on the windows in force when the arrival was in
fact H minutes away, a selection on the outcome: a technician still on a job counts there
at the moments just before the job happened to end. Windows calibrated by predicted horizon
(or by any state known when they were made) cover the nominal share of arrivals at a fixed
clock time, and not at a fixed time *before the arrival*: even forecasts from the
simulator's own laws cover about 0.75 of them 30 minutes ahead (``benchmarks/
eta_noise_floor.py``). So each prediction's score ``|r|`` is also kept per *arrival bin*:
its class crossed with the bin of the actual seconds from the prediction to the arrival
(known once the arrival is). For a bin ``h`` with threshold ``t_h``, the share ``hi - lo``
of its scores at or below ``t_h`` (the 80 % quantile by default), a new prediction's window
holds the times ``D`` of bin ``h`` with ``|r(D)| <= t_{h(D)}``: label-conditional conformal
prediction (Vovk's Mondrian taxonomy on the label; Sadinle, Lei and Wasserman, 2019), with
the binned label the time to arrival. Arrivals D minutes ahead then fall inside about the
nominal share of the windows, whatever D. The window is the run of such times around the
median (the part of the set that touches the median's bin), so one interval. A bin with
fewer than ``arrival_min_count`` scores yet uses the predicted-horizon window described
above within that bin. Late-alert probabilities (:meth:`Calibrator.prob_after`) stay with
the predicted-horizon buffers: they are about a time fixed in advance, the window's end.

Cold start: each bucket starts with ``prior_weight`` pseudo-residuals drawn from what a
calibrated normal base model would give (evenly spaced quantiles), so the first few real
residuals nudge rather than jerk the windows; their weight stays fixed, so with ``capacity``
real residuals the prior counts ``prior_weight / (prior_weight + capacity)``.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CalibrationConfig:
    """See :class:`eta_engine.engine.EtaConfig` for the meaning and defaults."""

    levels: tuple[float, float, float] = (0.1, 0.5, 0.9)
    classes: int = 1
    horizon_edges_min: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 75.0, 120.0, 180.0)
    capacity: int = 400
    prior_weight: float = 30.0
    prior_points: int = 40
    min_scale_s: float = 30.0
    adapt_rate: float = 0.0
    adapt_band: float = 0.7
    arrival_edges_min: tuple[float, ...] = ()
    """Edges of the arrival bins (actual minutes to arrival); empty: no arrival bins."""
    arrival_min_count: int = 30


def residual(
    actual: FloatArray, lo: FloatArray, mid: FloatArray, hi: FloatArray, floor: float
) -> FloatArray:
    """Two-sided standardised residuals (see the module docstring); arrays broadcast."""
    up = np.maximum(hi - mid, floor)
    down = np.maximum(mid - lo, floor)
    diff = actual - mid
    out: FloatArray = np.where(diff >= 0, diff / up, diff / down)
    return out


class Calibrator:
    """Residual buffers per horizon bucket; maps base quantiles to calibrated ones."""

    def __init__(self, config: CalibrationConfig = CalibrationConfig()) -> None:
        self.config = config
        lo, mid, hi = config.levels
        if not 0.0 < lo < mid < hi < 1.0:
            raise ValueError("levels must be 0 < lo < mid < hi < 1")
        m = config.prior_points
        z = ndtri((np.arange(m) + 0.5) / m) - float(ndtri(mid))
        # A calibrated normal base model: the nominal lo/hi quantiles sit at r = -1 / +1.
        self._prior = np.where(
            z >= 0,
            z / (float(ndtri(hi)) - float(ndtri(mid))),
            z / (float(ndtri(mid)) - float(ndtri(lo))),
        )
        self.n_horizons = len(config.horizon_edges_min) + 1
        n_buckets = self.n_horizons * config.classes
        self.buffers: list[list[float]] = [[] for _ in range(n_buckets)]
        self.heads: list[int] = [0] * n_buckets
        self.adjusted: list[list[float]] = [[lo, hi] for _ in range(n_buckets)]
        """Per bucket, the residual quantile levels the window's ends are read at (nominal
        until :meth:`feedback` moves them)."""
        self._tables: list[tuple[FloatArray, FloatArray] | None] = [None] * n_buckets
        self.n_arrival_bins = len(config.arrival_edges_min) + 1 if config.arrival_edges_min else 0
        n_arrival = self.n_arrival_bins * config.classes
        self.scores: list[list[float]] = [[] for _ in range(n_arrival)]
        """Per arrival bin (class x actual time to arrival), recent scores ``|r|``."""
        self.score_heads: list[int] = [0] * n_arrival
        self._thresholds: list[float | None] = [None] * n_arrival
        edges_s = np.asarray(config.arrival_edges_min, dtype=np.float64) * 60.0
        self._bin_edges_s = np.concatenate([[-np.inf], edges_s, [np.inf]])

    @property
    def n_buckets(self) -> int:
        return len(self.buffers)

    def bucket(self, horizon_s: float, kind: int = 0) -> int:
        """The bucket of a prediction of class ``kind`` made ``horizon_s`` seconds before its
        predicted arrival."""
        return kind * self.n_horizons + bisect_right(
            self.config.horizon_edges_min, horizon_s / 60.0
        )

    def buckets(
        self, horizon_s: FloatArray, kinds: npt.NDArray[np.int64] | None = None
    ) -> npt.NDArray[np.int64]:
        """Vectorised :meth:`bucket`."""
        edges = np.asarray(self.config.horizon_edges_min, dtype=np.float64)
        out: npt.NDArray[np.int64] = np.searchsorted(edges, horizon_s / 60.0, side="right")
        if kinds is not None:
            out = out + kinds * self.n_horizons
        return out

    def record(self, bucket: int, value: float) -> None:
        """Add one observed residual to a bucket (the oldest goes once ``capacity`` is full)."""
        if not np.isfinite(value):
            return
        buffer = self.buffers[bucket]
        if len(buffer) < self.config.capacity:
            buffer.append(float(value))
        else:
            buffer[self.heads[bucket]] = float(value)
            self.heads[bucket] = (self.heads[bucket] + 1) % self.config.capacity
        self._tables[bucket] = None

    def arrival_bins(
        self, actual_s: FloatArray, kinds: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """The arrival bin of predictions of class ``kinds`` made ``actual_s`` seconds before
        the arrival."""
        edges = np.asarray(self.config.arrival_edges_min, dtype=np.float64)
        out: npt.NDArray[np.int64] = np.searchsorted(edges, actual_s / 60.0, side="right")
        return out + kinds * self.n_arrival_bins

    def record_arrival(
        self,
        kinds: npt.NDArray[np.int64],
        actual_s: FloatArray,
        lo: FloatArray,
        mid: FloatArray,
        hi: FloatArray,
    ) -> None:
        """Keep the scores of predictions whose arrival came ``actual_s`` seconds after them
        (nothing without arrival bins)."""
        if not self.n_arrival_bins or len(actual_s) == 0:
            return
        score = np.abs(residual(actual_s, lo, mid, hi, floor=self.config.min_scale_s))
        cap = self.config.capacity
        for b, value in zip(
            self.arrival_bins(actual_s, kinds).tolist(), score.tolist(), strict=True
        ):
            if not np.isfinite(value):
                continue
            buffer = self.scores[b]
            if len(buffer) < cap:
                buffer.append(value)
            else:
                buffer[self.score_heads[b]] = value
                self.score_heads[b] = (self.score_heads[b] + 1) % cap
            self._thresholds[b] = None

    def threshold(self, arrival_bin: int) -> float:
        """The arrival bin's score threshold (``nan`` until it holds enough scores)."""
        cached = self._thresholds[arrival_bin]
        if cached is not None:
            return cached
        buffer = self.scores[arrival_bin]
        if len(buffer) < self.config.arrival_min_count:
            value = float("nan")
        else:
            lo, _, hi = self.config.levels
            value = float(np.quantile(np.asarray(buffer, dtype=np.float64), hi - lo))
        self._thresholds[arrival_bin] = value
        return value

    def feedback(self, bucket: int, below: bool, above: bool) -> None:
        """Whether a calibrated window of ``bucket`` missed its arrival below or above.

        Adaptive conformal inference (Gibbs and Candes, 2021), one end at a time: each miss
        moves that end's level outwards by ``adapt_rate * (1 - nominal share)``, each hit
        inwards by ``adapt_rate * nominal share``, so the ends settle where the realised miss
        rates equal the nominal ones whatever the residuals' drift (the buffers lag: they
        hold the last few hundred arrivals, the morning's with the afternoon's).
        """
        rate = self.config.adapt_rate
        if rate <= 0.0:
            return
        lo_target = self.config.levels[0]
        hi_target = 1.0 - self.config.levels[2]
        levels = self.adjusted[bucket]
        band = self.config.adapt_band
        lo_min, lo_max = lo_target * (1.0 - band), lo_target * (1.0 + band)
        hi_min, hi_max = 1.0 - hi_target * (1.0 + band), 1.0 - hi_target * (1.0 - band)
        levels[0] = min(max(levels[0] - rate * (float(below) - lo_target), lo_min), lo_max)
        levels[1] = max(min(levels[1] + rate * (float(above) - hi_target), hi_max), hi_min)

    def _table(self, bucket: int) -> tuple[FloatArray, FloatArray]:
        """Sorted residuals (prior and observed) and their mid-point cumulative weights."""
        table = self._tables[bucket]
        if table is not None:
            return table
        observed = np.asarray(self.buffers[bucket], dtype=np.float64)
        prior_w = self.config.prior_weight / len(self._prior)
        values = np.concatenate([self._prior, observed])
        weights = np.concatenate([np.full(len(self._prior), prior_w), np.ones(len(observed))])
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[order]
        cum = (np.cumsum(weights) - weights / 2.0) / weights.sum()
        table = (values, cum)
        self._tables[bucket] = table
        return table

    def residual_quantile(self, bucket: int, level: float) -> float:
        """The bucket's empirical residual quantile at ``level``."""
        values, cum = self._table(bucket)
        return float(np.interp(level, cum, values))

    def calibrate(
        self, buckets: npt.NDArray[np.int64], lo: FloatArray, mid: FloatArray, hi: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Calibrated window ``(lo, mid, hi)`` for base predictions.

        The window's ends move to the buckets' residual quantiles at the outer levels. The
        middle stays the base model's median (kept inside the window): a bucket's residual
        median mixes predictions of very different widths, and shifting point estimates by
        it made them worse (on simulated days the P50 error 30 minutes ahead grew by a
        third), while the ends alone already hold the window's coverage at nominal.
        """
        floor = self.config.min_scale_s
        up = np.maximum(hi - mid, floor)
        down = np.maximum(mid - lo, floor)
        outer = []
        used = np.unique(buckets).tolist()  # the quantiles of the buckets asked for only
        for end in (0, 1):
            r = np.zeros(self.n_buckets)
            for b in used:
                r[b] = self.residual_quantile(b, self.adjusted[b][end])
            rb = r[buckets]
            outer.append(mid + np.where(rb >= 0, rb * up, rb * down))
        new_lo, new_hi = outer
        # Ordered even if a bucket's residuals are degenerate.
        new_hi = np.maximum(new_hi, new_lo)
        if self.n_arrival_bins and len(mid):
            new_lo, new_hi = self._by_arrival(
                buckets // self.n_horizons, mid, down, up, new_lo, new_hi
            )
        new_mid = np.clip(mid, new_lo, new_hi)
        return new_lo, new_mid, new_hi

    def _by_arrival(
        self,
        kinds: npt.NDArray[np.int64],
        mid: FloatArray,
        down: FloatArray,
        up: FloatArray,
        fallback_lo: FloatArray,
        fallback_hi: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """The window from the arrival bins' thresholds (see the module docstring): in each
        bin the times with ``|r| <= t_bin`` (the fallback window's where the bin has too few
        scores), then the run of such pieces that holds the median."""
        nb = self.n_arrival_bins
        e = self._bin_edges_s
        t = np.array([self.threshold(b) for b in range(len(self.scores))]).reshape(-1, nb)
        thr = t[kinds]  # (n, nb)
        no_data = np.isnan(thr)
        thr = np.where(no_data, 0.0, thr)
        piece_lo = np.where(no_data, fallback_lo[:, None], mid[:, None] - thr * down[:, None])
        piece_hi = np.where(no_data, fallback_hi[:, None], mid[:, None] + thr * up[:, None])
        piece_lo = np.maximum(piece_lo, e[None, :-1])
        piece_hi = np.minimum(piece_hi, e[None, 1:])
        ok = piece_lo <= piece_hi
        rows = np.arange(len(mid))
        home = np.searchsorted(e[1:-1], mid, side="right")
        lo = np.where(ok[rows, home], piece_lo[rows, home], mid)
        hi = np.where(ok[rows, home], piece_hi[rows, home], mid)
        # Down from the median's bin while each piece reaches the bin below.
        cur = home.copy()
        going = ok[rows, home] & (lo <= e[home])
        while going.any():
            nxt = np.maximum(cur - 1, 0)
            step = going & (cur > 0) & ok[rows, nxt] & (piece_hi[rows, nxt] >= e[nxt + 1])
            lo = np.where(step, piece_lo[rows, nxt], lo)
            going = step & (piece_lo[rows, nxt] <= e[nxt])
            cur = np.where(step, nxt, cur)
        # Up likewise.
        cur = home.copy()
        going = ok[rows, home] & (hi >= e[home + 1])
        while going.any():
            nxt = np.minimum(cur + 1, nb - 1)
            step = going & (cur < nb - 1) & ok[rows, nxt] & (piece_lo[rows, nxt] <= e[nxt])
            hi = np.where(step, piece_hi[rows, nxt], hi)
            going = step & (piece_hi[rows, nxt] >= e[nxt + 1])
            cur = np.where(step, nxt, cur)
        return lo, hi

    def prob_after(
        self,
        buckets: npt.NDArray[np.int64],
        t: FloatArray,
        base: tuple[FloatArray, FloatArray, FloatArray],
    ) -> FloatArray:
        """Calibrated probability that each arrival comes after ``t``, given the base
        ``(lo, mid, hi)`` quantiles."""
        lo, mid, hi = base
        r = residual(t, lo, mid, hi, floor=self.config.min_scale_s)
        out = np.empty(len(r), dtype=np.float64)
        for b in np.unique(buckets).tolist():
            sel = buckets == b
            values, cum = self._table(b)
            out[sel] = 1.0 - np.interp(r[sel], values, cum)
        return out

    def coverage_state(self) -> list[tuple[int, float, float]]:
        """Per bucket: residuals held and the share of them inside ``[-1, 1]`` (for humans)."""
        out = []
        for buffer in self.buffers:
            arr = np.asarray(buffer, dtype=np.float64)
            inside = float(np.mean(np.abs(arr) <= 1.0)) if len(arr) else float("nan")
            median = float(np.median(arr)) if len(arr) else float("nan")
            out.append((len(arr), inside, median))
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "buffers": [list(b) for b in self.buffers],
            "heads": list(self.heads),
            "adjusted": [list(a) for a in self.adjusted],
            "scores": [list(b) for b in self.scores],
            "score_heads": list(self.score_heads),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.buffers = [[float(v) for v in b] for b in state["buffers"]]
        self.heads = [int(h) for h in state["heads"]]
        self.adjusted = [[float(lo), float(hi)] for lo, hi in state["adjusted"]]
        self._tables = [None] * len(self.buffers)
        if "scores" in state and len(state["scores"]) == len(self.scores):
            self.scores = [[float(v) for v in b] for b in state["scores"]]
            self.score_heads = [int(h) for h in state["score_heads"]]
        self._thresholds = [None] * len(self.scores)
