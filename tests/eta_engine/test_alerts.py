"""The late-alert policy: hysteresis and timers make flapping impossible, even on a noisy
probability that wanders around the threshold all day."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from eta_engine.alerts import CLEAR, RAISE, AlertConfig, AlertState, step, terminal_clear

MIN = 60_000
CONFIG = AlertConfig(
    raise_threshold=0.6,
    sure_threshold=0.9,
    clear_threshold=0.25,
    confirm=2,
    min_hold_s=600,
    rearm_s=900,
)


def _run(series: np.ndarray, every_ms: int = 30_000) -> list[tuple[int, str]]:
    state = AlertState()
    actions = []
    for i, p in enumerate(series.tolist()):
        action = step(state, p, i * every_ms, CONFIG)
        if action is not None:
            actions.append((i * every_ms, action))
    return actions


def _flaps(actions: list[tuple[int, str]]) -> int:
    """Raised, cleared and raised again within ten minutes."""
    raises = [t for t, a in actions if a == RAISE]
    return sum(1 for a, b in pairwise(raises) if b - a < 10 * MIN)


@pytest.mark.parametrize("seed", range(5))
def test_no_flapping_on_a_noisy_series_around_the_threshold(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Eight hours every 30 s: a random walk around the raise threshold plus fast noise.
    walk = np.cumsum(rng.normal(0, 0.03, 960))
    series = np.clip(0.5 + 0.3 * np.sin(walk) + rng.normal(0, 0.15, 960), 0.0, 1.0)
    actions = _run(series)
    assert any(a == RAISE for _, a in actions)  # it does alert...
    assert _flaps(actions) == 0  # ...and never flaps
    kinds = [a for _, a in actions]
    assert all(x != y for x, y in pairwise(kinds))  # alternates


def test_a_single_spike_does_not_raise() -> None:
    series = np.array([0.1, 0.1, 0.7, 0.1, 0.1, 0.7, 0.2])
    assert _run(series) == []


def test_confirmed_risk_raises_and_certainty_raises_at_once() -> None:
    assert _run(np.array([0.1, 0.65, 0.7])) == [(60_000, RAISE)]
    assert _run(np.array([0.1, 0.95])) == [(30_000, RAISE)]


def test_clear_waits_for_the_hold_then_for_confirmation() -> None:
    series = np.concatenate([[0.95], np.full(40, 0.1)])
    actions = _run(series)
    assert actions[0] == (0, RAISE)
    clear_at = actions[1][0]
    assert actions[1][1] == CLEAR
    assert clear_at >= 600_000


def test_no_raise_within_the_rearm_time() -> None:
    state = AlertState()
    assert step(state, 0.95, 0, CONFIG) == RAISE
    assert step(state, 0.1, 11 * MIN, CONFIG) is None
    assert step(state, 0.1, 12 * MIN, CONFIG) == CLEAR
    assert step(state, 0.99, 13 * MIN, CONFIG) is None  # too soon
    assert step(state, 0.99, 12 * MIN + 900_000, CONFIG) == RAISE


def test_terminal_clear() -> None:
    state = AlertState()
    assert not terminal_clear(state, 0)
    step(state, 0.95, 0, CONFIG)
    assert terminal_clear(state, MIN)
    assert not state.raised
    assert AlertState.from_list(state.to_list()) == state


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError):
        AlertConfig(raise_threshold=0.3, clear_threshold=0.4)
    with pytest.raises(ValueError):
        AlertConfig(confirm=0)
