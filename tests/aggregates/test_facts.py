"""A fact records its event's data fields in their JSON form, and gives the event back."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from aggregates.facts import _ENVELOPE, Fact, _plain, fact_of
from events.base import Causation, Event
from tests.events.samples import SAMPLES


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_a_fact_holds_the_json_form_of_every_data_field(event: Event) -> None:
    fact = fact_of(event, "agg-1", 3, "backfilled")
    names = [f.name for f in dataclasses.fields(event) if f.name not in _ENVELOPE]
    expected: dict[str, Any] = {name: _plain(getattr(event, name)) for name in names}
    assert fact.data == expected
    assert list(fact.data) == names  # in the schema's order
    # JSON types only: a tuple stored as a list would come back unequal otherwise.
    assert orjson.loads(orjson.dumps(fact.data)) == fact.data
    assert (fact.originator_id, fact.originator_version, fact.effect) == ("agg-1", 3, "backfilled")
    assert (fact.kind, fact.event_id, fact.at) == (event.type, event.id, event.time)
    assert fact.event() == event


@pytest.mark.parametrize("effect", ["applied", "backfilled"])
def test_fact_of_makes_what_the_dataclass_makes(effect: str) -> None:
    for event in SAMPLES:
        fact = fact_of(event, "agg-1", 3, effect)
        made = Fact("agg-1", 3, event.type, event.id, event.time, event.source, event.subject,
                    fact.data, effect)  # fmt: skip
        assert fact == made
        assert list(vars(fact).items()) == list(vars(made).items())  # what the mapper reads
        with pytest.raises(dataclasses.FrozenInstanceError):
            fact.effect = "x"  # type: ignore[misc]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_the_event_of_a_stored_fact_is_what_the_dataclass_makes(event: Event) -> None:
    stored = orjson.loads(orjson.dumps(vars(fact_of(event, "agg-1", 1))))  # as read back
    fact = Fact(**stored)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in fact.data.items()}
    if isinstance(values.get("causation"), dict):
        values["causation"] = Causation(**values["causation"])
    made = type(event)(
        id=fact.event_id, source=fact.source, time=fact.at, subject=fact.subject, **values
    )
    assert fact.event() == made == event
    assert type(fact.event()) is type(event)


def test_a_field_a_stored_fact_lacks_takes_its_default() -> None:
    """A fact stored before an optional field was added to its event gives it the default."""
    event = next(
        e for e in SAMPLES if any(f.default is not dataclasses.MISSING for f in _data_fields(e))
    )
    optional = next(f for f in _data_fields(event) if f.default is not dataclasses.MISSING)
    fact = fact_of(event, "agg-1", 1)
    older = dataclasses.replace(
        fact, data={k: v for k, v in fact.data.items() if k != optional.name}
    )
    assert getattr(older.event(), optional.name) == optional.default
    assert dataclasses.replace(older.event(), **{optional.name: getattr(event, optional.name)}) == (
        event
    )


def _data_fields(event: Event) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(event) if f.name not in _ENVELOPE]
