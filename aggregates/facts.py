"""The aggregates' stored events: each accepted input event, recorded as a *fact*.

An aggregate's history is the sequence of input events it accepted, in the order it accepted
them, each with the effect it had. Storing the accepted input (rather than a parallel
hierarchy of internal events) keeps one definition per event kind (events/kinds.py) and makes
``fieldstream show work-order`` print exactly the events that produced a state.

:class:`Fact` satisfies the eventsourcing library's domain-event protocol
(``originator_id``, ``originator_version``, ``timestamp``), so the library's mapper, event
store, recorders and repository persist and read it. ``timestamp`` is derived from the input
event's own time: no clock is read anywhere in aggregates/.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

from events.base import Causation, Event
from events.codec import event_of_fields
from events.kinds import EVENT_TYPES

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ENVELOPE = ("id", "source", "time", "subject")

APPLIED = "applied"
"""The input changed the state as its type says."""
BACKFILLED = "backfilled"
"""A late input of an earlier step: its time was recorded, the status did not move back."""


@dataclass(frozen=True)
class Fact:
    """One accepted input event in an aggregate's history (no ``slots``: the library's mapper
    reads ``vars()``)."""

    originator_id: str
    originator_version: int
    kind: str
    """The input event's type name."""
    event_id: str
    at: int
    """The input event's time (ms since the epoch)."""
    source: str
    subject: str
    data: dict[str, Any]
    """The input event's data fields."""
    effect: str = APPLIED

    @property
    def timestamp(self) -> datetime:
        """The library's event timestamp: the input's time, never the wall clock."""
        return _EPOCH + timedelta(milliseconds=self.at)

    def event(self) -> Event:
        """The input event this fact records (sequences come back as tuples)."""
        return event_of_fields(self.kind)(
            self.event_id, self.source, self.at, self.subject, self.data
        )


def _plain(value: Any) -> Any:
    """The JSON form of a field, so a stored and reloaded fact equals the original."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Causation):
        # Spelled out: dataclasses.asdict deep-copies every field, on the hot path.
        return {
            "id": value.id,
            "topic": value.topic,
            "partition": value.partition,
            "offset": value.offset,
        }
    return value


_SCALARS = (str, int, float, bool, dict)


def _is_plain(hint: Any) -> bool:
    """Whether a field of this type holds its JSON form already (a string, number, boolean or
    object, or None), so :func:`_plain` would return it unchanged."""
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    if get_origin(hint) in (Union, types.UnionType):
        return all(_is_plain(a) for a in get_args(hint) if a is not type(None))
    return hint in _SCALARS or get_origin(hint) is dict


def _data_maker(cls: type[Event]) -> Callable[[Event], dict[str, Any]]:
    """A function of an event of ``cls`` that returns its data fields in their JSON form (as
    ``{name: _plain(value)}`` would), generated as one dictionary display."""
    hints = get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in _ENVELOPE]
    items = [
        f"{name!r}: e.{name}" if _is_plain(hints[name]) else f"{name!r}: plain(e.{name})"
        for name in names
    ]
    namespace: dict[str, Any] = {"plain": _plain}
    exec(f"def data_of(e):\n    return {{{', '.join(items)}}}", namespace)  # our own source
    maker: Callable[[Event], dict[str, Any]] = namespace["data_of"]
    return maker


_DATA_OF: dict[type[Event], Callable[[Event], dict[str, Any]]] = {
    cls: _data_maker(cls) for cls in EVENT_TYPES.values()
}


T = TypeVar("T")

_new = object.__new__
_set = object.__setattr__


def with_fields(cls: type[T], fields: dict[str, Any]) -> T:
    """An instance of the frozen dataclass ``cls`` (one without slots) whose ``__dict__`` is
    ``fields``: what ``cls(**fields)`` makes when ``fields`` lists every field in order, without
    its ``__init__`` setting them one ``object.__setattr__`` at a time. For the objects made
    once per event or fact on the hot path (:func:`fact_of`, the state store's stored facts)."""
    made = _new(cls)
    _set(made, "__dict__", fields)
    return made


def fact_of(event: Event, aggregate_id: str, version: int, effect: str = APPLIED) -> Fact:
    """Record ``event`` as the ``version``-th fact of aggregate ``aggregate_id``.

    Made as ``Fact(...)`` makes it (the same ``__dict__``, key for key and in order), but with
    its dictionary given whole: a frozen dataclass's ``__init__`` sets each of the nine fields
    through ``object.__setattr__``, twice the time, for every event any aggregate accepts."""
    return with_fields(
        Fact,
        {
            "originator_id": aggregate_id,
            "originator_version": version,
            "kind": event.type,
            "event_id": event.id,
            "at": event.time,
            "source": event.source,
            "subject": event.subject,
            "data": _DATA_OF[type(event)](event),
            "effect": effect,
        },
    )
