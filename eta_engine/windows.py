"""Arrival windows for a technician's whole queue, as quantiles of simulated chains.

A technician's day ahead is a chain of *stops*. Stop 0 may be the job they are on now; the
rest are queued jobs in order. Job ``k``'s arrival depends on everything before it::

    ready      = when the technician can leave (now, or when the previous job is done)
    depart_k   = max(ready, window_start_k - lead - free_flow_k)   # early? they wait
    arrive_k   = depart_k + travel_k
    finish_k   = arrive_k + setup + duration_k
    ready      = finish_k + turnaround

The stop on hand is started from what is known: en route (``arrive = remaining travel``),
arrived (``start = arrived + setup``) or working (``finish = started + duration``, the duration
*conditioned on exceeding the time already spent*, so an overrunning job pushes its own end
and, through ``ready``, every later window at once; once a part is fitted or found missing the
engine times the end from that moment instead, with its learned wind-down).

Uncertainty is carried by Monte Carlo over ``S`` samples with *common random numbers*: the
same standard-normal draws (a Latin hypercube, fixed by the seed) for every technician and
every call. Identical inputs give identical windows, small input changes give small window
changes (no sampling jitter to flap on), and all technicians of a batch are computed together
as ``(technicians, stops, samples)`` arrays.

Travel for a leg not yet started is forecast by letting the leg's current congestion ratio
(live / free-flow time) relax towards the time-of-day prior with time constant
``reversion_s``: congestion seen now is likely, but not certain, to be there in an hour.
Its spread grows with how far ahead the leg starts (``travel_sigma`` -> ``+ travel_sigma_growth``
over an hour), and every drive is less certain while the speed model is cold (``cold_sigma``).

A queued job's log-duration is ``mu + sigma * z_k + sigma_level * z_chain``: ``sigma`` is how
much jobs of its kind vary one from the next, ``sigma_level`` how uncertain the kind's typical
duration still is (large on a cold start, shrinking as completions come in). The first part
is drawn afresh for every job; the second once per chain, because a misjudged level (jobs
today run longer than the prior said) pushes every later job the same way: drawn
independently it would average out over a long queue and leave far-ahead windows too narrow.
Before a technician has set off for the first time in a shift, nobody leaves before the
shift's start plus a start delay (``start_s``, ``start_delay``).

These quantiles are the *base* model; :mod:`eta_engine.calibration` keeps their coverage
honest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PAD, QUEUED, EN_ROUTE, ARRIVED, WORKING = 0, 1, 2, 3, 4
"""Stop kinds. Only stop 0 can be EN_ROUTE, ARRIVED or WORKING."""

_TRAVEL, _DURATION, _SETUP, _TURNAROUND, _LEAD, _START, _LEVEL = range(7)
DRAWS = 7
"""Independent draws per stop: travel, duration, setup, turnaround, lead, start delay, and the
duration level (only stop 0's is used: it is shared by the whole chain)."""


@dataclass(frozen=True, slots=True)
class ChainParams:
    """Shared model parameters of one evaluation (see ``EtaConfig`` for the defaults)."""

    setup: tuple[float, float]
    """``(mu, sigma)`` of log seconds from arrival to start of work."""
    turnaround: tuple[float, float]
    """``(mu, sigma)`` of log seconds from completion to setting off again."""
    lead: tuple[float, float]
    """``(mean, sd)`` seconds a waiting technician plans to be at the door early."""
    start_delay: tuple[float, float] = (5.5, 0.6)
    """``(mu, sigma)`` of log seconds from the start of a shift to the first departure."""
    travel_sigma: float = 0.15
    travel_sigma_growth: float = 0.15
    en_route_sigma: float = 0.12
    reversion_s: float = 5400.0
    cold_sigma: float = 0.0
    """Extra log-sd of every leg while the speed model has little evidence (cold start)."""


@dataclass(slots=True)
class Chains:
    """Inputs for ``n`` technicians' chains padded to ``L`` stops (times relative to now, s).

    ``kind``: stop kinds (``PAD`` past the end). ``travel_s``: live seconds of the leg into the
    stop at the current factors (for EN_ROUTE the remaining drive). ``free_s``: the leg's
    free-flow seconds. ``window_start_s``: the promised window's start. ``mu``/``sigma``: the
    job's log-duration. ``anchor_s``: for ARRIVED the arrival, for WORKING the start of work
    (both <= 0). ``prior_ratio``: per technician, the congestion ratio travel relaxes to.
    """

    kind: npt.NDArray[np.int8]
    travel_s: FloatArray
    free_s: FloatArray
    window_start_s: FloatArray
    mu: FloatArray
    sigma: FloatArray
    anchor_s: FloatArray
    prior_ratio: FloatArray
    start_s: FloatArray
    sigma_level: FloatArray

    @classmethod
    def empty(cls, n: int, stops: int) -> Chains:
        """All-PAD inputs to fill in."""
        zeros = np.zeros((n, stops))
        return cls(
            kind=np.zeros((n, stops), dtype=np.int8),
            travel_s=zeros.copy(),
            free_s=zeros.copy(),
            window_start_s=zeros.copy(),
            mu=np.full((n, stops), 8.0),
            sigma=np.full((n, stops), 0.5),
            anchor_s=zeros.copy(),
            prior_ratio=np.ones(n),
            start_s=np.full(n, np.nan),
            sigma_level=np.zeros((n, stops)),
        )


def latin_normals(stops: int, samples: int, seed: int) -> FloatArray:
    """Standard-normal draws of shape ``(stops, DRAWS, samples)``: each row a shuffled stratified
    sample (one draw per equal-probability stratum), so quantiles of sums are stable with a
    few hundred samples. Deterministic for a seed."""
    rng = np.random.Generator(np.random.PCG64(seed))
    u = (np.arange(samples) + rng.random((stops, DRAWS, samples))) / samples
    order = rng.permuted(np.tile(np.arange(samples), (stops, DRAWS, 1)), axis=2)
    u = np.take_along_axis(u, order, 2)
    out: FloatArray = ndtri(np.clip(u, 1e-9, 1.0 - 1e-9))
    return out


def conditional_lognormal(
    mu: FloatArray, sigma: FloatArray, elapsed: FloatArray, z: FloatArray
) -> FloatArray:
    """Lognormal draws conditioned on exceeding ``elapsed`` (inverse-CDF on the tail).

    ``z`` are standard-normal draws; the result is ``>= elapsed`` (arrays broadcast). A job far
    past its usual length keeps a remaining time of at least the tail's own scale rather than
    collapsing onto ``elapsed``.
    """
    safe = np.maximum(elapsed, 1.0)
    floor = ndtr((np.log(safe) - mu) / sigma)
    floor = np.minimum(floor, 0.999)
    p = floor + ndtr(z) * (1.0 - floor)
    out: FloatArray = np.maximum(np.exp(mu + sigma * ndtri(p)), elapsed)
    return out


def simulate_arrivals(chains: Chains, params: ChainParams, z: FloatArray) -> FloatArray:
    """Arrival-time samples ``(n, L, S)`` in seconds from now (NaN where not reported).

    ``z`` comes from :func:`latin_normals` with at least ``L`` stops. Reported stops are the
    QUEUED and EN_ROUTE ones: the arrivals still to happen.

    Stop ``k`` is computed only for the chains that have one (chains are padded to the
    longest, and most are short), and each kind's formula only where that kind occurs (past
    stop 0 every stop is QUEUED). Every sample is the same elementwise arithmetic either way,
    so the draws do not depend on which other chains share the call.
    """
    n, stops = chains.kind.shape
    samples = z.shape[2]
    out = np.full((n, stops, samples), np.nan)
    if n == 0:
        return out
    ready = np.zeros((n, samples))
    starting = np.isfinite(chains.start_s)
    if starting.any():
        delay_mu, delay_sigma = params.start_delay
        delay = np.exp(delay_mu + delay_sigma * z[0, _START])[None, :]
        first = np.maximum(chains.start_s[:, None] + delay, 0.0)
        ready = np.where(starting[:, None], first, ready)
    setup_mu, setup_sigma = params.setup
    turn_mu, turn_sigma = params.turnaround
    lead_mean, lead_sd = params.lead
    level = z[0, _LEVEL][None, :]
    for k in range(stops):
        kinds = chains.kind[:, k]
        rows = np.flatnonzero(kinds != PAD)
        if len(rows) == 0:
            break
        whole = len(rows) == n
        kind = (kinds if whole else kinds[rows])[:, None]
        zk = z[k]
        setup = np.exp(setup_mu + setup_sigma * zk[_SETUP])[None, :]
        turnaround = np.exp(turn_mu + turn_sigma * zk[_TURNAROUND])[None, :]
        mu = chains.mu[rows, k][:, None]
        sigma = chains.sigma[rows, k][:, None]
        shared = chains.sigma_level[rows, k][:, None] * level
        duration = np.exp(mu + sigma * zk[_DURATION][None, :] + shared)
        travel = chains.travel_s[rows, k][:, None]
        start_ready = ready if whole else ready[rows]
        queued = kind == QUEUED
        en_route = kind == EN_ROUTE
        arrived = kind == ARRIVED
        working = kind == WORKING
        any_queued = bool(queued.any())
        arrival: FloatArray
        if any_queued:
            # Queued: wait if early, then drive with the forecast congestion of the departure.
            free = np.maximum(chains.free_s[rows, k][:, None], 1e-3)
            ratio0 = chains.prior_ratio[rows][:, None]
            lead = lead_mean + lead_sd * zk[_LEAD][None, :]
            depart = np.maximum(start_ready, chains.window_start_s[rows, k][:, None] - lead - free)
            ahead = np.maximum(depart, 0.0)
            ratio = travel / free
            forecast = ratio0 + (ratio - ratio0) * np.exp(-ahead / params.reversion_s)
            spread = params.travel_sigma + params.travel_sigma_growth * np.minimum(
                ahead / 3600.0, 1.0
            )
            spread = spread + params.cold_sigma
            arrival = depart + free * forecast * np.exp(spread * zk[_TRAVEL][None, :])
        if en_route.any():
            drive_sigma = params.en_route_sigma + params.cold_sigma
            en_route_arrival = travel * np.exp(drive_sigma * zk[_TRAVEL][None, :])
            arrival = (
                np.where(en_route, en_route_arrival, arrival) if any_queued else en_route_arrival
            )
        elif not any_queued:
            # Only ARRIVED and WORKING stops, which start from their anchors.
            arrival = np.full((len(rows), samples), np.nan)
        start = arrival + setup
        if arrived.any():
            anchor = chains.anchor_s[rows, k][:, None]
            start = np.where(arrived, np.maximum(anchor + setup, 0.0), start)
        finish = start + duration
        if working.any():
            anchor = chains.anchor_s[rows, k][:, None]
            worked = conditional_lognormal(mu, sigma, -anchor, zk[_DURATION][None, :])
            finish = np.where(working, anchor + worked, finish)
        reported = queued | en_route
        if reported.all():
            out[rows, k, :] = arrival
        else:
            out[rows, k, :] = np.where(reported, arrival, np.nan)
        if whole:
            ready = finish + turnaround
        else:
            ready[rows] = finish + turnaround
    return out


def quantiles(arrivals: FloatArray, levels: tuple[float, ...]) -> FloatArray:
    """Quantiles over the samples: shape ``(len(levels),) + arrivals.shape[:-1]``."""
    if arrivals.size == 0:
        return np.zeros((len(levels), *arrivals.shape[:-1]))
    out: FloatArray = np.quantile(arrivals, levels, axis=-1)
    return out
