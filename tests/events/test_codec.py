from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import kinds
from events.codec import (
    MAX_EVENT_BYTES,
    InvalidEvent,
    Rejection,
    data_fields,
    decode,
    encode,
    format_time,
    parse_time,
    validate,
    values_encoder,
)
from tests.events.samples import SAMPLES, T0


def test_there_is_a_sample_of_every_event_kind() -> None:
    assert {type(s) for s in SAMPLES} == set(kinds.ALL_EVENTS)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_every_kind_round_trips_losslessly(event: kinds.Event) -> None:
    raw = encode(event)
    assert decode(raw) == event
    assert encode(decode(raw)) == raw


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_encoding_from_values_gives_the_bytes_of_the_event(event: kinds.Event) -> None:
    names = data_fields(event.type)
    values = [getattr(event, name) for name in names]
    cause = getattr(event, "causation", None)
    common = (event.id, event.source, event.time, event.subject, cause)
    assert values_encoder(event.type)(*common, *values) == encode(event)
    # The fields with a default that end the list, left out, take it, as the event's
    # constructor gives it.
    defaults = {f.name: f.default for f in dataclasses.fields(event)}
    kept = len(names)
    while kept and defaults[names[kept - 1]] is not dataclasses.MISSING:
        kept -= 1
    if kept < len(names):
        made = type(event)(
            id=event.id, source=event.source, time=event.time, subject=event.subject,
            **{name: getattr(event, name) for name in names[:kept]},
            **({"causation": cause} if cause is not None else {}),
        )  # fmt: skip
        assert values_encoder(event.type)(*common, *values[:kept]) == encode(made)


def test_wire_format_is_cloudevents() -> None:
    ping = next(s for s in SAMPLES if isinstance(s, kinds.GpsPinged))
    doc = orjson.loads(encode(ping))
    assert doc["specversion"] == "1.0"
    assert doc["type"] == "GpsPinged"
    assert doc["time"] == format_time(ping.time)
    assert doc["time"].endswith("Z")
    assert doc["data"]["lat"] == ping.lat
    derived = next(s for s in SAMPLES if isinstance(s, kinds.EtaUpdated))
    doc = orjson.loads(encode(derived))
    assert (doc["causationtopic"], doc["causationpartition"], doc["causationoffset"]) == (
        "fs.gps",
        3,
        1234,
    )


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_time_formatting_round_trips(ms: int) -> None:
    assert parse_time(format_time(ms)) == ms


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_time_formatting_is_the_isoformat_of_the_utc_time(ms: int) -> None:
    # format_time works the time of day out with integers: the same text as a datetime's.
    moment = datetime(1970, 1, 1) + timedelta(milliseconds=ms)
    assert format_time(ms) == moment.isoformat(timespec="milliseconds") + "Z"


def test_time_parsing_accepts_offsets_and_truncates_to_milliseconds() -> None:
    assert parse_time("2026-11-25T10:00:00+02:00") == parse_time("2026-11-25T08:00:00Z")
    assert parse_time("2026-11-25T08:00:00.123987Z") == parse_time("2026-11-25T08:00:00.123Z")


@given(
    lat=st.floats(-90, 90, allow_nan=False),
    lon=st.floats(-180, 180, allow_nan=False),
    speed=st.none() | st.floats(0, 80, allow_nan=False),
    t=st.integers(0, 4_102_444_800_000),
)
@settings(max_examples=300)
def test_pings_round_trip_for_any_valid_values(
    lat: float, lon: float, speed: float | None, t: int
) -> None:
    ping = kinds.GpsPinged(
        id="p",
        source="s",
        time=t,
        subject="T",
        technician_id="T",
        lat=lat,
        lon=lon,
        speed_mps=speed,
    )
    assert decode(encode(ping)) == ping


def test_decode_raises_with_the_rejection() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(b"{}")
    assert info.value.rejection.rule == "missing"
    assert info.value.rejection.field == "type"


def test_encoding_is_deterministic() -> None:
    assert [encode(s) for s in SAMPLES] == [encode(s) for s in SAMPLES]
    assert len(max((encode(s) for s in SAMPLES), key=len)) < MAX_EVENT_BYTES
    assert isinstance(validate(encode(SAMPLES[0])), kinds.TechnicianRegistered)
    assert not isinstance(validate(encode(SAMPLES[0])), Rejection)
    assert T0 > 0


def test_every_event_type_has_one_public_topic() -> None:
    from events.catalog import TOPIC_OF

    assert set(TOPIC_OF) == {cls.__name__ for cls in kinds.ALL_EVENTS}
    assert TOPIC_OF["TechnicianArrived"].name == "fs.status"
    assert TOPIC_OF["TechnicianDeparted"].name == "fs.status"
    assert TOPIC_OF["GpsPinged"].name == "fs.gps"
    assert not any(t.internal for t in TOPIC_OF.values())


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_trusted_decoding_equals_validating(event: kinds.Event) -> None:
    from events.codec import decode_trusted

    assert decode_trusted(encode(event)) == event == validate(encode(event))


def test_trusted_decoding_falls_back_to_the_validator() -> None:
    from events.codec import decode_trusted

    bad = orjson.loads(encode(SAMPLES[0]))
    del bad["data"]["home_lat"]
    result = decode_trusted(orjson.dumps(bad))
    assert isinstance(result, Rejection) and (result.rule, result.field) == (
        "missing",
        "data.home_lat",
    )
    assert isinstance(decode_trusted(b"\xff"), Rejection)


def test_pings_encoded_a_column_at_a_time_are_the_codecs_bytes() -> None:
    import numpy as np

    from events.codec import encode_ping_columns

    times = np.array([1_795_400_000_123, 1_795_400_001_000], dtype=np.int64)
    lat, lon = np.array([42.5, 42.51]), np.array([1.5, 1.52])
    speed, heading = np.array([3.25, np.nan]), np.array([np.nan, 270.0])
    accuracy = np.array([4.0, 12.5])
    for with_accuracy in (True, False):
        got = encode_ping_columns(
            "src/x",
            [b"p-1", b'p-\\"2'],
            times,
            [b"T-1", b"T-2"],
            lat,
            lon,
            speed,
            heading,
            accuracy if with_accuracy else None,
        )
        want = [
            encode(
                kinds.GpsPinged(
                    id=["p-1", 'p-"2'][i],
                    source="src/x",
                    time=int(times[i]),
                    subject=["T-1", "T-2"][i],
                    technician_id=["T-1", "T-2"][i],
                    lat=float(lat[i]),
                    lon=float(lon[i]),
                    speed_mps=None if np.isnan(speed[i]) else float(speed[i]),
                    heading_deg=None if np.isnan(heading[i]) else float(heading[i]),
                    accuracy_m=float(accuracy[i]) if with_accuracy else None,
                )
            )
            for i in range(2)
        ]
        assert got == want


def test_ping_columns_write_every_time_as_the_codec_does() -> None:
    # Times from 1970 to 2200 to the millisecond (the column path formats them with numpy).
    import numpy as np

    from events.codec import encode_ping_columns

    rng = np.random.default_rng(7)
    times = np.concatenate(
        [[0, 1, 999, 1000, 951_782_400_000], rng.integers(0, 7_258_118_400_000, 300)]
    ).astype(np.int64)
    n = len(times)
    lat, lon = rng.uniform(-90, 90, n), rng.uniform(-180, 180, n)
    nan = np.full(n, np.nan)
    got = encode_ping_columns("src/x", [b"p"] * n, times, [b"T"] * n, lat, lon, nan, nan)
    want = [
        encode(
            kinds.GpsPinged(
                id="p",
                source="src/x",
                time=int(times[i]),
                subject="T",
                technician_id="T",
                lat=float(lat[i]),
                lon=float(lon[i]),
            )
        )
        for i in range(n)
    ]
    assert got == want
