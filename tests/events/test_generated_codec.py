"""The codec's functions generated per event type agree with the general ones.

The fast path of validate() accepts exactly what the general validator accepts, with the same
event; whatever it does not accept gets the general validator's rejection, word for word. The
generated encoders give the general encoder's bytes."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import orjson
import pytest

from events import codec
from events.codec import encode, to_document, validate
from tests.events.samples import SAMPLES

ODD_VALUES: list[Any] = [
    None, "", "x", "2026-11-22T08:26:40Z", "2026-11-22T08:26:40", "not a time", 0, -1, 1,
    7, 10**6, -(10**6), 2**63 - 1, 0.5, -95.5, 95.5, 1e308, -1e308, True, False, [], ["a"], [1],
    {}, {"a": 1}, {"a": -1}, {"a": "b"},
]  # fmt: skip


def _general(raw: bytes, now_ms: int | None = None) -> Any:
    try:
        return codec._validate(raw, now_ms, codec.DEFAULT_MAX_FUTURE_SKEW_MS)
    except Exception as exc:
        return codec._reject("invalid", "", f"unreadable event ({type(exc).__name__}: {exc})")


def _variants(doc: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """The document with each attribute and data field, in turn, left out or replaced by odd
    values, and a few random combinations of such changes."""
    out = []
    data = doc["data"]
    for key in list(doc):
        if key == "data":
            continue
        out.append({k: v for k, v in doc.items() if k != key})
        for odd in ODD_VALUES:
            out.append({**doc, key: odd})
    for key in list(data):
        out.append({**doc, "data": {k: v for k, v in data.items() if k != key}})
        for odd in ODD_VALUES:
            out.append({**doc, "data": {**data, key: odd}})
    for odd in ODD_VALUES:
        out.append({**doc, "data": odd})
    for _ in range(200):
        changed = dict(doc)
        changed_data = dict(data)
        for _ in range(rng.randint(1, 3)):
            target = changed_data if rng.random() < 0.7 and changed_data else changed
            key = rng.choice(list(target))
            if rng.random() < 0.2:
                del target[key]
            else:
                target[key] = rng.choice(ODD_VALUES)
        if "data" in changed:
            changed["data"] = changed_data
        out.append(changed)
    return out


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_fast_and_general_validation_agree(event: Any) -> None:
    rng = random.Random(event.type)
    doc = orjson.loads(encode(event))
    assert validate(encode(event)) == event
    assert codec._FAST[event.type](doc, None, 0) == event  # the fast path takes valid events
    checked = 0
    for variant in _variants(doc, rng):
        raw = orjson.dumps(variant)
        for now_ms in (None, event.time, event.time - 10 * 60_000):
            assert validate(raw, now_ms=now_ms) == _general(raw, now_ms), variant
            checked += 1
    assert checked > 500


def test_a_checker_is_made_for_every_event_type() -> None:
    assert set(codec._FAST) == set(codec._SPECS)


def test_defaults_and_nulls_take_the_fast_path() -> None:
    # An optional field left out takes its default; one sent as null is None: both accepted
    # by the generated checker itself, not by the fallback.
    for event in SAMPLES:
        doc = to_document(event)
        for name, _convert, required, default in codec._SPECS[event.type].data:
            if required:
                continue
            left_out = {**doc, "data": {k: v for k, v in doc["data"].items() if k != name}}
            fast = codec._FAST[event.type](orjson.loads(orjson.dumps(left_out)), None, 0)
            assert fast is not None and getattr(fast, name) == default


def _with_times_cleared(event: Any) -> list[Any]:
    """The event, and copies with each time field set to None in turn."""
    spec = codec._SPECS[event.type]
    return [event] + [
        dataclasses.replace(event, **{name: None})
        for name in spec.time_fields
        if getattr(event, name) is not None
    ]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_generated_encoders_give_the_general_bytes(event: Any) -> None:
    for variant in _with_times_cleared(event):
        general = orjson.dumps(codec._document_general(variant))
        assert encode(variant) == general
        assert orjson.dumps(to_document(variant)) == general
        spec = codec._SPECS[variant.type]
        values = [getattr(variant, name) for name in codec.data_fields(variant.type)]
        by_position = codec.values_encoder(variant.type)
        cause = getattr(variant, "causation", None)
        attributes = (variant.id, variant.source, variant.time, variant.subject, cause)
        assert by_position(*attributes, *values) == general
        # The fields with a default that end the list may be left out: they take it; a
        # required one may not.
        kept = len(values)
        while kept and not spec.data[kept - 1][2]:
            kept -= 1
            with_defaults = dataclasses.replace(
                variant, **{name: default for name, _c, _r, default in spec.data[kept:]}
            )
            expected = orjson.dumps(codec._document_general(with_defaults))
            assert by_position(*attributes, *values[:kept]) == expected
        if kept:
            with pytest.raises(TypeError):
                by_position(*attributes, *values[: kept - 1])


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_generated_trusted_decoders_agree_with_the_general_one(event: Any) -> None:
    spec = codec._SPECS[event.type]
    for variant in _with_times_cleared(event):
        raw = encode(variant)
        assert codec.decode_trusted(raw) == codec._trusted_general(orjson.loads(raw)) == variant
        doc = orjson.loads(raw)
        for name, _convert, required, _default in spec.data:
            fewer = {**doc, "data": {k: v for k, v in doc["data"].items() if k != name}}
            if required and variant is event:
                # Not what we write: the full validator says what is missing.
                rejected = codec.decode_trusted(orjson.dumps(fewer))
                assert isinstance(rejected, codec.Rejection)
                assert rejected.field == f"data.{name}"
            elif not required:
                assert codec._TRUSTED[event.type](fewer) == codec._trusted_general(fewer)


def test_generated_construction_makes_what_init_makes() -> None:
    # Every event the generated functions build is set slot by slot: equal to the one
    # __init__ makes, every slot set; a class it cannot build that way
    # (a field left out, a __post_init__, no slots) is refused when the code is generated.
    for event in SAMPLES:
        made = codec.decode_trusted(encode(event))
        assert type(made) is type(event) and made == event
        for f in dataclasses.fields(event):
            assert getattr(made, f.name) == getattr(event, f.name)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            raise AssertionError

    @dataclasses.dataclass(frozen=True)
    class Plain:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Two:
        a: int
        b: int

    bind = codec._binder({})
    for cls, fields in ((Checked, [("a", "1")]), (Plain, [("a", "1")]), (Two, [("a", "1")])):
        with pytest.raises(TypeError):
            codec._construction(cls, "o", fields, bind, "")
