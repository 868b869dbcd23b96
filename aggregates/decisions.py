"""What an aggregate decides about an input event: a value, never an exception.

* :class:`Accept`: record the event as a fact (``effect`` says how it applies);
* :class:`Ignore`: a no-op, e.g. the second arrival of a visit already arrived (a geofence
  detection and a tap); nothing is recorded and nothing is rejected;
* :class:`Park`: not applicable *yet*: an earlier event it depends on may still arrive (events
  from different topics interleave, and devices deliver late). The stage keeps it and retries
  after every change of the aggregate; if it is still parked once stream time passes its time
  plus the allowed lateness, it is rejected with ``rule`` and ``message``;
* :class:`Reject`: refused for good; the stage sends it to fs.dlq with ``rule`` and ``message``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregates.facts import APPLIED


@dataclass(frozen=True, slots=True)
class Accept:
    effect: str = APPLIED


ACCEPT = Accept()
"""The plain acceptance, which deciders return rather than make anew for each event (a
decision is an immutable value)."""


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


@dataclass(frozen=True, slots=True)
class Park:
    rule: str
    message: str


@dataclass(frozen=True, slots=True)
class Reject:
    rule: str
    message: str


Decision = Accept | Ignore | Park | Reject
