"""The envelope every event carries, and the annotated field types the codec understands.

Events are frozen dataclasses. Their fields are the CloudEvents attributes (``id``, ``source``,
``time``, ``subject``; ``type`` is the class name and ``specversion`` is fixed) followed by the
event's own data. Derived events also carry a :class:`Causation`: the id and log position of the
input event that caused them, so an auditor can walk from any alert back to its inputs.

Times are integers: milliseconds since the Unix epoch, UTC (Kafka's timestamp unit). On the wire
they are RFC 3339 strings with millisecond precision (``2026-11-25T14:05:00.000Z``); input with
finer precision is truncated to the millisecond when decoded.

Field constraints are expressed with :data:`typing.Annotated` markers (:class:`Range`,
:class:`OneOf`, :class:`NonEmpty`), read by the validator and by the JSON Schema exporter, so
there is one statement of each rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive numeric bounds (either may be None)."""

    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True, slots=True)
class OneOf:
    """The value must be one of these strings."""

    choices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NonEmpty:
    """A string that must not be empty (identifiers)."""


class TimestampMarker:
    """Marks an ``int`` field as a time: milliseconds since the epoch, RFC 3339 on the wire."""


Timestamp = Annotated[int, TimestampMarker()]
Id = Annotated[str, NonEmpty()]
Latitude = Annotated[float, Range(-90.0, 90.0)]
Longitude = Annotated[float, Range(-180.0, 180.0)]
NonNegative = Annotated[float, Range(0.0, None)]
Count = Annotated[int, Range(0, None)]
Parts = dict[str, int]
"""A parts list: part number -> quantity (quantities are >= 0)."""


@dataclass(frozen=True, slots=True)
class Causation:
    """The input event behind a derived event, and where it sits on the log."""

    id: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event. Subclasses add their data fields.

    Class attributes: ``SCHEMA_VERSION`` (bumped on a breaking change of the data),
    ``KEY_FIELD`` (the data field whose value keys the record on its topic).
    """

    SCHEMA_VERSION: ClassVar[int] = 1
    KEY_FIELD: ClassVar[str] = "work_order_id"
    DERIVED: ClassVar[bool] = False

    id: Id
    source: Id
    time: Timestamp
    subject: Id

    @property
    def type(self) -> str:
        return type(self).__name__

    @property
    def key(self) -> str:
        value = getattr(self, self.KEY_FIELD)
        assert isinstance(value, str)
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivedEvent(Event):
    """An event computed by a stage; ``time`` is the time of its cause, never the wall clock."""

    DERIVED: ClassVar[bool] = True

    causation: Causation


ENVELOPE_FIELDS = ("id", "source", "time", "subject")
CAUSATION_ATTRIBUTES = {
    "causationid": "id",
    "causationtopic": "topic",
    "causationpartition": "partition",
    "causationoffset": "offset",
}
"""CloudEvents extension attribute -> :class:`Causation` field (extensions must be flat)."""
