"""Each bad-input rule of the issue, with the field and rule named; and garbage never raises."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import kinds
from events.codec import MAX_EVENT_BYTES, Rejection, encode, validate
from tests.events.samples import SAMPLES, T0

PING = next(s for s in SAMPLES if isinstance(s, kinds.GpsPinged))
BOOKING = next(s for s in SAMPLES if isinstance(s, kinds.WorkOrderBooked))


def doc_of(event: kinds.Event) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(encode(event))
    return doc


def rejected(raw: bytes, **kw: Any) -> Rejection:
    result = validate(raw, **kw)
    assert isinstance(result, Rejection), f"accepted: {result!r}"
    return result


def test_missing_data_field() -> None:
    doc = doc_of(BOOKING)
    del doc["data"]["site_lat"]
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("missing", "data.site_lat")
    assert "data.site_lat" in r.message and "required" in r.message


def test_missing_envelope_attribute() -> None:
    doc = doc_of(PING)
    del doc["id"]
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("missing", "id")


def test_optional_fields_may_be_absent() -> None:
    doc = doc_of(PING)
    for name in ("speed_mps", "heading_deg", "accuracy_m"):
        del doc["data"][name]
    result = validate(orjson.dumps(doc))
    assert isinstance(result, kinds.GpsPinged)
    assert result.speed_mps is None


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("lat", "42.5", "string"),
        ("lat", True, "boolean"),
        ("lon", None, "null"),
        ("technician_id", 7, "integer"),
    ],
)
def test_wrong_type(field: str, value: Any, expected: str) -> None:
    doc = doc_of(PING)
    doc["data"][field] = value
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("type", f"data.{field}")
    assert expected in r.message


def test_wrong_type_inside_a_parts_list_names_the_part() -> None:
    doc = doc_of(BOOKING)
    doc["data"]["parts_kit"] = {"valve": "one"}
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("type", "data.parts_kit")
    assert "'valve'" in r.message


@pytest.mark.parametrize(
    ("field", "value"), [("lat", 90.0001), ("lat", -91), ("lon", 180.5), ("lon", -400.0)]
)
def test_latitude_longitude_out_of_range(field: str, value: float) -> None:
    doc = doc_of(PING)
    doc["data"][field] = value
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("range", f"data.{field}")
    assert "out of range" in r.message


def test_site_coordinates_are_checked_too() -> None:
    doc = doc_of(BOOKING)
    doc["data"]["site_lon"] = 181
    assert rejected(orjson.dumps(doc)).field == "data.site_lon"


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "2026-11-25T08:00:00", ""])
def test_unparseable_envelope_time(value: str) -> None:
    doc = doc_of(PING)
    doc["time"] = value
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("time_format", "time")


def test_unparseable_data_time() -> None:
    doc = doc_of(BOOKING)
    doc["data"]["window_end"] = "soon"
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("time_format", "data.window_end")


def test_time_too_far_in_the_future_with_a_configurable_skew() -> None:
    raw = encode(PING)
    now = PING.time - 10 * 60_000  # the event claims to be 10 minutes ahead of our clock
    r = rejected(raw, now_ms=now)
    assert (r.rule, r.field) == ("future", "time")
    assert isinstance(validate(raw, now_ms=now, max_future_skew_ms=11 * 60_000), kinds.GpsPinged)
    assert isinstance(validate(raw, now_ms=PING.time), kinds.GpsPinged)


def test_unknown_type() -> None:
    doc = doc_of(PING)
    doc["type"] = "TechnicianTeleported"
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("unknown_type", "type")
    assert "TechnicianTeleported" in r.message


def test_payload_over_64_kib() -> None:
    doc = doc_of(BOOKING)
    doc["data"]["address"] = "x" * MAX_EVENT_BYTES
    r = rejected(orjson.dumps(doc))
    assert r.rule == "too_large"
    assert str(MAX_EVENT_BYTES) in r.message


def test_non_utf8_bytes() -> None:
    raw = encode(BOOKING).replace("Plaça".encode(), b"Pla\xe7a")
    r = rejected(raw)
    assert r.rule == "encoding"
    assert "UTF-8" in r.message


def test_not_json_and_not_an_object() -> None:
    assert rejected(b'{"type": ').rule == "json"
    assert rejected(b"[1, 2]").rule == "not_object"
    assert rejected(b"").rule == "json"


def test_choice_and_range_rules() -> None:
    doc = doc_of(BOOKING)
    doc["data"]["priority"] = "whenever"
    assert (rejected(orjson.dumps(doc)).rule, rejected(orjson.dumps(doc)).field) == (
        "choice",
        "data.priority",
    )
    rating = doc_of(next(s for s in SAMPLES if isinstance(s, kinds.CustomerRated)))
    rating["data"]["score"] = 11
    assert rejected(orjson.dumps(rating)).rule == "range"


def test_empty_identifier() -> None:
    doc = doc_of(PING)
    doc["data"]["technician_id"] = ""
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("empty", "data.technician_id")


def test_newer_schema_version_is_refused() -> None:
    doc = doc_of(PING)
    doc["schemaversion"] = 99
    assert rejected(orjson.dumps(doc)).rule == "schema_version"


def test_derived_event_needs_its_causation() -> None:
    doc = doc_of(next(s for s in SAMPLES if isinstance(s, kinds.EtaUpdated)))
    del doc["causationoffset"]
    r = rejected(orjson.dumps(doc))
    assert (r.rule, r.field) == ("missing", "causationoffset")


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    doc = doc_of(PING)
    doc["data"]["battery"] = 0.5
    doc["traceparent"] = "00-abc"
    assert validate(orjson.dumps(doc)) == PING


@given(st.binary(max_size=2048))
@settings(max_examples=2000)
def test_garbage_bytes_never_raise(raw: bytes) -> None:
    result = validate(raw, now_ms=T0)
    assert isinstance(result, (Rejection, kinds.Event))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.sampled_from(SAMPLES), st.data())
@settings(max_examples=1000)
def test_mutated_events_never_raise_and_name_a_field(
    event: kinds.Event, data: st.DataObject
) -> None:
    doc = doc_of(event)
    target = doc["data"] if data.draw(st.booleans()) else doc
    name = data.draw(st.sampled_from(sorted(target)))
    target[name] = data.draw(json_values)
    result = validate(orjson.dumps(doc), now_ms=T0 + 10**9)
    if isinstance(result, Rejection):
        assert result.rule and result.message
        assert result.rule in {
            "missing",
            "type",
            "range",
            "time_format",
            "future",
            "unknown_type",
            "choice",
            "empty",
            "schema_version",
            "invalid",
        }
