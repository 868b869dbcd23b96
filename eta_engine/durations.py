"""How long things take on site, learned online from completed work.

Job durations are lognormal (the usual model of repair and service times: positive, skewed,
a few long overruns). The model keeps decayed sums of ``log(seconds)`` per key and estimates
``(mu, sigma)`` of the log by shrinking each level towards its parent::

    prior (median prior_median_s, log-sd prior_log_sd)
      -> all job types          (prior_n pseudo-jobs)
        -> job type             (type_k pseudo-jobs of the level above)
          -> repeat visits of the type (revisit_k; a return visit with the part is shorter)
            -> technician x job type: a shift of mu only (tech_k), for who is faster
               (learned from first visits, applied to repeat visits too)

Each key forgets at ``decay`` per new observation of that key, so the estimate follows the
recent jobs ("use recent job times to set honest ranges") and an effective sample of about
``1 / (1 - decay)`` jobs. The predictive ``sigma`` includes the uncertainty of ``mu``, so a job
type seen twice gets a wider range than one seen fifty times.

Work still under way counts too (:meth:`DurationModel.set_open`): a job started ``e`` seconds
ago and not finished is a *right-censored* observation, ``duration > e``. Learning from
completed jobs alone is biased short whenever jobs started at about the same time (a morning):
the first to complete are the short ones, and the long ones say nothing until they end. Each
open job is imputed with the moments of its type's current estimate truncated below at
``log e`` (the E-step of EM for censored normal data, repeated ``censor_iterations`` times to
a fixed point), and counts with weight one next to the completed jobs.

Default prior: median 60 min, log-sd 0.5 (80 % of jobs between 32 and 114 min), a generic
field-service job (industry mean times to repair are typically 1-2 h). It only matters until
the first completions come in.

Besides jobs, three small quantities shape a technician's chain (:class:`Overheads`):

* ``setup``: arrival on site to work started (lognormal; prior median 3 min);
* ``turnaround``: work completed to setting off for the next job when not waiting (lognormal;
  prior median 4 min: packing up, paperwork);
* ``lead``: when a technician is early they wait and set off so as to be at the door ``lead``
  seconds before the window opens, counting the free-flow drive (normal; prior 5 +- 3 min);
* ``wind_down``: from the first part fitted on a visit (``PartUsed``) to its completion
  (lognormal; prior median 10 min, wide). Parts are usually fitted and logged towards the end
  of a job, so once one is, the job's end is near; how near is learned, and if parts turn out
  to be logged early on the learned wind-down is long and wide and the signal fades by itself;
* ``missing_wind_down``: the same from a part found missing (``PartMissing``) to completion:
  the visit ends early, unfixed (prior median 10 min);
* ``start_delay``: from the start of a shift to the first departure, when the first window
  is already due (logging in, loading the van; prior median 4 min).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import erfc

FloatArray = npt.NDArray[np.float64]

ALL = "*"
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def truncated_moments(mu: float, sd: float, low: float) -> tuple[float, float]:
    """``(E[X], E[X^2])`` of ``X ~ N(mu, sd^2)`` conditioned on ``X > low``."""
    alpha = (low - mu) / sd
    tail = 0.5 * math.erfc(alpha / _SQRT2)
    if tail < 1e-12:
        # Far in the tail the conditional law piles up just above ``low``.
        return low, low * low
    lam = math.exp(-0.5 * alpha * alpha) / _SQRT2PI / tail
    mean = mu + sd * lam
    var = sd * sd * max(1.0 + alpha * lam - lam * lam, 1e-9)
    return mean, var + mean * mean


def truncated_moments_array(
    mu: FloatArray, sd: FloatArray, low: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """:func:`truncated_moments` of many normals at once (arrays of one shape)."""
    alpha = (low - mu) / sd
    tail = 0.5 * erfc(alpha / _SQRT2)
    far = tail < 1e-12
    lam = np.exp(-0.5 * alpha * alpha) / _SQRT2PI / np.where(far, 1.0, tail)
    mean = mu + sd * lam
    var = sd * sd * np.maximum(1.0 + alpha * lam - lam * lam, 1e-9)
    m1: FloatArray = np.where(far, low, mean)
    m2: FloatArray = np.where(far, low * low, var + mean * mean)
    return m1, m2


@dataclass(frozen=True, slots=True)
class DurationConfig:
    """Priors and learning rates (documented in the module and in ``EtaConfig``)."""

    prior_median_s: float = 3600.0
    prior_log_sd: float = 0.5
    prior_n: float = 2.0
    type_k: float = 3.0
    revisit_k: float = 2.0
    tech_k: float = 12.0
    decay: float = 0.97
    setup_median_s: float = 180.0
    setup_log_sd: float = 0.6
    turnaround_median_s: float = 240.0
    turnaround_log_sd: float = 0.6
    lead_mean_s: float = 300.0
    lead_sd_s: float = 180.0
    wind_down_median_s: float = 600.0
    wind_down_log_sd: float = 1.0
    missing_wind_down_median_s: float = 600.0
    missing_wind_down_log_sd: float = 0.8
    start_delay_median_s: float = 240.0
    start_delay_log_sd: float = 0.8
    overhead_prior_n: float = 3.0
    min_seconds: float = 30.0
    censor_iterations: int = 3


class Sums:
    """Decayed ``(n, sum x, sum x^2)`` of one key."""

    __slots__ = ("n", "s1", "s2")

    def __init__(self, n: float = 0.0, s1: float = 0.0, s2: float = 0.0) -> None:
        self.n, self.s1, self.s2 = n, s1, s2

    def add(self, value: float, decay: float) -> None:
        self.n = self.n * decay + 1.0
        self.s1 = self.s1 * decay + value
        self.s2 = self.s2 * decay + value * value

    def shrunk(self, k: float, mean0: float, var0: float) -> tuple[float, float]:
        """Posterior-style ``(mean, var)``: ``k`` pseudo-observations of ``(mean0, var0)``."""
        n = self.n
        mean = (self.s1 + k * mean0) / (n + k)
        ss = max(self.s2 - 2.0 * mean * self.s1 + n * mean * mean, 0.0)
        var = (ss + k * (var0 + (mean0 - mean) ** 2)) / (n + k)
        return mean, var

    def to_list(self) -> list[float]:
        return [self.n, self.s1, self.s2]


class DurationModel:
    """Online lognormal job durations by job type, repeat visit and technician."""

    def __init__(self, config: DurationConfig = DurationConfig()) -> None:
        self.config = config
        self.sums: dict[str, Sums] = {}
        self._open: list[tuple[str, bool, float]] = []
        self._censored: dict[str, Sums] = {}
        self._cache: dict[tuple[str, bool, str | None], tuple[float, float]] = {}
        self._levels: dict[tuple[str, bool], tuple[float, float, float]] = {}
        self._splits: dict[tuple[str, bool, str | None], tuple[float, float, float]] = {}

    def _clear(self) -> None:
        self._cache.clear()
        self._levels.clear()
        self._splits.clear()

    def _get(self, key: str) -> Sums:
        found = self.sums.get(key)
        extra = self._censored.get(key)
        if extra is None:
            return found if found is not None else Sums()
        if found is None:
            return extra
        return Sums(found.n + extra.n, found.s1 + extra.s1, found.s2 + extra.s2)

    def set_open(self, jobs: Iterable[tuple[str, int, float]]) -> None:
        """The jobs under way now, as ``(job_type, visit, seconds on site so far)``.

        Replaces the previous set (it is not state: the caller passes it again, from its own
        state, before each use). Each counts as a job known to last longer than that (see the
        module docstring); estimates change accordingly until the next call.
        """
        cfg = self.config
        open_jobs = sorted(
            (job_type, visit > 1, max(seconds, cfg.min_seconds))
            for job_type, visit, seconds in jobs
        )
        if open_jobs == self._open:
            return
        self._open = open_jobs
        self._censored = {}
        self._clear()
        if not open_jobs:
            return
        # All open jobs at once: each adds its imputed moments to its keys, in job order.
        kinds = sorted({(job_type, again) for job_type, again, _ in open_jobs})
        kind_of = {kind: i for i, kind in enumerate(kinds)}
        job_kind = np.fromiter((kind_of[(t, a)] for t, a, _ in open_jobs), np.int64, len(open_jobs))
        low = np.log(np.fromiter((s for _, _, s in open_jobs), np.float64, len(open_jobs)))
        names: list[str] = []
        rows: list[int] = []
        cols: list[int] = []
        for j, (job_type, again, _) in enumerate(open_jobs):
            for key in [f"revisit:{job_type}"] if again else [ALL, f"type:{job_type}"]:
                if key not in names:
                    names.append(key)
                rows.append(j)
                cols.append(names.index(key))
        row = np.asarray(rows, dtype=np.int64)
        col = np.asarray(cols, dtype=np.int64)
        count = np.bincount(col, minlength=len(names)).astype(np.float64)
        for _ in range(cfg.censor_iterations):
            level = np.array([self._level(t, a) for t, a in kinds], dtype=np.float64)
            mu = level[job_kind, 0]
            sd = np.sqrt(level[job_kind, 1])
            m1, m2 = truncated_moments_array(mu, sd, low)
            s1 = np.bincount(col, m1[row], minlength=len(names))
            s2 = np.bincount(col, m2[row], minlength=len(names))
            self._censored = {
                key: Sums(float(count[i]), float(s1[i]), float(s2[i]))
                for i, key in enumerate(names)
            }
            self._clear()

    def observe(self, job_type: str, visit: int, technician: str | None, seconds: float) -> None:
        """A job of ``job_type`` took ``seconds`` on site (work started to completed)."""
        cfg = self.config
        value = math.log(max(seconds, cfg.min_seconds))
        self._clear()
        # The censored part was imputed with the old estimates: the next set_open redoes it.
        self._open = []
        self._censored = {}
        # A repeat visit (the part came, the specialist is here) is its own kind of job: it
        # teaches only the repeat-visit level, never the first visits' statistics.
        if visit > 1:
            keys = [f"revisit:{job_type}"]
        else:
            keys = [ALL, f"type:{job_type}"]
            if technician is not None:
                keys.append(f"tech:{technician}:{job_type}")
        for key in keys:
            sums = self.sums.get(key)
            if sums is None:
                sums = self.sums[key] = Sums()
            sums.add(value, cfg.decay)

    def split(
        self, job_type: str, visit: int, technician: str | None
    ) -> tuple[float, float, float]:
        """``(mu, sigma, sigma_level)``: the predictive law of :meth:`params` as jobs' spread
        around their kind's typical log-duration (``sigma``) and the uncertainty of that level
        itself (``sigma_level``, shrinking as jobs complete); ``params``' sigma is their
        quadratic sum. Jobs of one queue share the level (see :mod:`eta_engine.windows`)."""
        key = (job_type, visit > 1, technician)
        found = self._splits.get(key)
        if found is not None:
            return found
        mu, total = self.params(job_type, visit, technician)
        _, var, _ = self._type_level(job_type, visit > 1)
        within = min(math.sqrt(var), total)
        found = self._splits[key] = (
            mu,
            within,
            math.sqrt(max(total * total - within * within, 0.0)),
        )
        return found

    def params(self, job_type: str, visit: int, technician: str | None) -> tuple[float, float]:
        """``(mu, sigma)`` of ``log(seconds)`` for the next such job (predictive)."""
        key = (job_type, visit > 1, technician)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._params(job_type, visit, technician)
        return found

    def _level(self, job_type: str, again: bool) -> tuple[float, float]:
        """``(mu, var)`` of the job type's log-duration (no technician shift, no predictive
        inflation): the estimate a censored job of that type is imputed with."""
        mu, var, _ = self._type_level(job_type, again)
        return mu, var

    def _type_level(self, job_type: str, again: bool) -> tuple[float, float, float]:
        """``(mu, var, n_eff)`` of the job type's level (cached until the sums change)."""
        key = (job_type, again)
        found = self._levels.get(key)
        if found is None:
            found = self._levels[key] = self._compute_type_level(job_type, again)
        return found

    def _compute_type_level(self, job_type: str, again: bool) -> tuple[float, float, float]:
        cfg = self.config
        mu0 = math.log(cfg.prior_median_s)
        var0 = cfg.prior_log_sd**2
        mu, var = self._get(ALL).shrunk(cfg.prior_n, mu0, var0)
        kind = self._get(f"type:{job_type}")
        mu, var = kind.shrunk(cfg.type_k, mu, var)
        n_eff = kind.n + cfg.type_k
        if again:
            revisit = self._get(f"revisit:{job_type}")
            mu, var = revisit.shrunk(cfg.revisit_k, mu, var)
            n_eff = revisit.n + cfg.revisit_k
        return mu, var, n_eff

    def _params(self, job_type: str, visit: int, technician: str | None) -> tuple[float, float]:
        cfg = self.config
        mu, var, n_eff = self._type_level(job_type, visit > 1)
        if technician is not None:
            own = self._get(f"tech:{technician}:{job_type}")
            if own.n > 0:
                mu += (own.s1 - own.n * mu) / (own.n + cfg.tech_k)
        return mu, math.sqrt(var * (1.0 + 1.0 / n_eff))

    def snapshot(self) -> dict[str, list[float]]:
        return {key: sums.to_list() for key, sums in sorted(self.sums.items())}

    def restore(self, state: dict[str, Any]) -> None:
        self.sums = {key: Sums(*map(float, value)) for key, value in state.items()}
        self._open = []
        self._censored = {}
        self._clear()


class Overheads:
    """The small quantities around a job, learned from status timestamps (see the module).

    Each has a prior from :class:`DurationConfig` worth ``overhead_prior_n`` observations;
    all but ``lead`` are lognormal (``params`` returns ``(mu, sigma)`` of log seconds), ``lead``
    is normal (``(mean, sd)`` seconds).
    """

    NAMES = ("setup", "turnaround", "lead", "wind_down", "missing_wind_down", "start_delay")

    def __init__(self, config: DurationConfig = DurationConfig()) -> None:
        self.config = config
        self.sums: dict[str, Sums] = {name: Sums() for name in self.NAMES}

    def _prior(self, name: str) -> tuple[float, float]:
        cfg = self.config
        priors = {
            "setup": (cfg.setup_median_s, cfg.setup_log_sd),
            "turnaround": (cfg.turnaround_median_s, cfg.turnaround_log_sd),
            "wind_down": (cfg.wind_down_median_s, cfg.wind_down_log_sd),
            "missing_wind_down": (cfg.missing_wind_down_median_s, cfg.missing_wind_down_log_sd),
            "start_delay": (cfg.start_delay_median_s, cfg.start_delay_log_sd),
        }
        median, log_sd = priors[name]
        return math.log(median), log_sd

    def observe(self, name: str, seconds: float) -> None:
        """One observation of ``name`` (seconds; lognormal ones are floored at 1 s)."""
        value = seconds if name == "lead" else math.log(max(seconds, 1.0))
        self.sums[name].add(value, self.config.decay)

    def params(self, name: str) -> tuple[float, float]:
        """``(mu, sigma)`` of log seconds, or ``(mean, sd)`` seconds for ``lead``."""
        cfg = self.config
        if name == "lead":
            mean, var = self.sums[name].shrunk(
                cfg.overhead_prior_n, cfg.lead_mean_s, cfg.lead_sd_s**2
            )
        else:
            mu0, sd0 = self._prior(name)
            mean, var = self.sums[name].shrunk(cfg.overhead_prior_n, mu0, sd0**2)
        return mean, math.sqrt(var)

    def snapshot(self) -> dict[str, list[float]]:
        return {name: self.sums[name].to_list() for name in self.NAMES}

    def restore(self, state: dict[str, Any]) -> None:
        self.sums = {name: Sums(*map(float, state[name])) for name in self.NAMES}
