"""The late-alert policy: raise on a confident risk, clear with hysteresis, never flap.

Each work order's alert is a two-state machine (quiet / raised) fed with the calibrated
probability ``p`` that the arrival comes after the promised window's end, once per evaluation:

* **raise** when ``p >= raise_threshold`` on ``confirm`` consecutive evaluations, or at once when
  ``p >= sure_threshold``; never within ``rearm_s`` of the last clear;
* **clear** when ``p <= clear_threshold`` on ``confirm`` consecutive evaluations, and not before
  ``min_hold_s`` after the raise; a *terminal* clear (arrival, cancellation, reassignment) is
  immediate and is not a flap, since the visit is over or no longer this technician's.

The gap between the thresholds absorbs noise around either of them, the confirmation absorbs
single outliers, and the two timers make a flap (raised, cleared and raised again within ten
minutes) impossible by construction as long as ``min_hold_s + rearm_s >= 600``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RAISE = "raise"
CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Thresholds and timers (see :class:`eta_engine.engine.EtaConfig`)."""

    raise_threshold: float = 0.6
    sure_threshold: float = 0.9
    clear_threshold: float = 0.25
    confirm: int = 2
    min_hold_s: float = 600.0
    rearm_s: float = 900.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.clear_threshold < self.raise_threshold <= self.sure_threshold <= 1.0:
            raise ValueError("need 0 <= clear < raise <= sure <= 1")
        if self.confirm < 1:
            raise ValueError("confirm must be >= 1")


@dataclass(slots=True)
class AlertState:
    """One work order's alert: raised or not, when, and the current confirmation streak."""

    raised: bool = False
    raised_ms: int | None = None
    cleared_ms: int | None = None
    streak: int = 0

    def to_list(self) -> list[Any]:
        return [self.raised, self.raised_ms, self.cleared_ms, self.streak]

    @classmethod
    def from_list(cls, data: list[Any]) -> AlertState:
        raised, raised_ms, cleared_ms, streak = data
        return cls(bool(raised), raised_ms, cleared_ms, int(streak))


def step(state: AlertState, p_late: float, now_ms: int, config: AlertConfig) -> str | None:
    """Feed one evaluation; returns :data:`RAISE`, :data:`CLEAR` or None (mutates ``state``).

    ``now_ms`` must not go backwards for one work order (the engine evaluates in log order
    with event times that never decrease per technician).
    """
    if not state.raised:
        if p_late >= config.raise_threshold:
            state.streak += 1
        else:
            state.streak = 0
        armed = state.cleared_ms is None or now_ms - state.cleared_ms >= config.rearm_s * 1000.0
        confident = state.streak >= config.confirm or p_late >= config.sure_threshold
        if armed and confident and p_late >= config.raise_threshold:
            state.raised = True
            state.raised_ms = now_ms
            state.streak = 0
            return RAISE
        return None
    if p_late <= config.clear_threshold:
        state.streak += 1
    else:
        state.streak = 0
    held = state.raised_ms is None or now_ms - state.raised_ms >= config.min_hold_s * 1000.0
    if held and state.streak >= config.confirm:
        state.raised = False
        state.cleared_ms = now_ms
        state.streak = 0
        return CLEAR
    return None


def terminal_clear(state: AlertState, now_ms: int) -> bool:
    """End the alert because the visit ended or left this technician; True if it was raised.

    A raised alert still starts the re-arm timer: were the order to come straight back (a
    reassignment undone), it must not flap.
    """
    was = state.raised
    state.raised = False
    state.streak = 0
    if was:
        state.cleared_ms = now_ms
    return was
