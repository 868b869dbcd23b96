"""The fold's fast paths read what the full decoder reads, whatever the JSON's layout."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from projections.pings import Pings, event_id, ping_fix

AT = 1_795_417_264_007
HEAD = (
    b'"specversion":"1.0","id":"p-1","source":"app","type":"GpsPinged",'
    b'"time":"2026-11-23T07:01:04.007Z","subject":"T-0061"'
)
DATA = (
    b'{"technician_id":"T-0061","lat":42.512409,"lon":1.543264,"speed_mps":0.07,"heading_deg":null}'
)


def _reading(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _full(value: bytes) -> tuple[int, float, float, float | None, float | None] | None:
    """The fix as the full decoder reads it (the definition the fast path must meet): a
    position of two numbers (not NaN), a speed and a heading that are numbers or none."""
    try:
        data = orjson.loads(value)["data"]
        lat, lon = float(data["lat"]), float(data["lon"])
    except (ValueError, KeyError, TypeError):
        return None
    if math.isnan(lat) or math.isnan(lon):
        return None
    return (AT, lat, lon, _reading(data.get("speed_mps")), _reading(data.get("heading_deg")))


@pytest.mark.parametrize(
    "value",
    [
        b"{" + HEAD + b',"data":' + DATA + b"}",  # as the codec writes it
        b'{"data":' + DATA + b"," + HEAD + b"}",  # data first
        b"{" + HEAD + b', "data": ' + DATA + b" }\n",  # spaces and a newline
        b"{" + HEAD + b',"data":' + DATA + b',"extra":{"a":1,"data":{"lat":1,"lon":2}}}',
        b"{" + HEAD + b',"data":{"lat":1.0,"lon":2.0,"x":{"y":1,"data":{"lat":3,"lon":4}}}}',
        b'{"subject":"a,\\"data\\":{\\"lat\\":5,\\"lon\\":6}","data":' + DATA + b"}",
        b"{" + HEAD + b',"data":{"lat":42,"lon":"1.5","speed_mps":3}}',  # int, text
        b"{" + HEAD + b',"data":{"lat":1,"lon":2,"speed_mps":"3","heading_deg":true}}',
        b"{" + HEAD + b',"data":{"lat":"nan","lon":1.5}}',  # no position
        b"{" + HEAD + b',"data":{"lat":null,"lon":1.5}}',  # unreadable
        b"{" + HEAD + b',"data":{"lon":1.5}}',
        b"{" + HEAD + b',"data":[1,2]}',
        b"{" + HEAD + b',"data":{"lat":1,"lon":2}',  # truncated
        b"not json",
        b"",
    ],
)
def test_a_ping_reads_as_the_full_decoder_reads_it(value: bytes) -> None:
    assert ping_fix(AT, value) == _full(value)


def test_the_usual_ping_is_read() -> None:
    value = b"{" + HEAD + b',"data":' + DATA + b"}"
    assert ping_fix(AT, value) == (AT, 42.512409, 1.543264, 0.07, None)


IDS = [
    b"{" + HEAD + b',"data":' + DATA + b"}",  # as the codec writes it
    b'{"specversion":"1.0","id":"a\\"b","data":{}}',  # an escape in it
    b'{"specversion":"1.0","id":"\xc3\xa9t\xc3\xa9","data":{}}',  # UTF-8
    b'{"specversion":"1.0","id":"\xff","data":{}}',  # not UTF-8: not JSON
    b'{"specversion":"1.0","id":"a\tb","data":{}}',  # a control character: not JSON
    b'{"specversion":"1.0","id":"a","data":{},"id":"b"}',  # twice: the last one counts
    b'{"specversion":"1.0","id":"","data":{}}',
    b'{"specversion":"1.0","id":12,"data":{}}',
    b'{"id":"x","specversion":"1.0"}',  # another layout
    b'{"specversion":"1.0","id":"unterminated',
    b"[]",
    b"",
]


def _full_id(value: bytes) -> str:
    try:
        return str(orjson.loads(value)["id"])
    except (ValueError, KeyError, TypeError):
        return ""


@pytest.mark.parametrize("value", IDS)
def test_an_event_id_reads_as_the_full_decoder_reads_it(value: bytes) -> None:
    assert event_id(value) == _full_id(value)


def test_parsed_pings_hold_what_each_ping_reads_as() -> None:
    values = [
        b"{" + HEAD + b',"data":' + DATA + b"}",
        b"{" + HEAD + b',"data":{"lat":42,"lon":"1.5","speed_mps":3,"heading_deg":90.5}}',
        b"not json",
        b"{" + HEAD + b',"data":' + DATA + b"}",  # no key below
        b'{"specversion":"1.0","id":"q","data":{"lat":1.25,"lon":2.5,"speed_mps":null}}',
    ]
    keys: list[bytes | None] = [b"T-1", b"T-2", b"T-1", None, b"T-3"]
    times = np.arange(AT, AT + len(values), dtype=np.int64)
    offsets = np.arange(7, 7 + len(values), dtype=np.int64)
    pings = Pings.parse("fs.gps", 2, offsets, times, keys, values)
    expected = [
        ping_fix(int(t), v) if k else None for t, k, v in zip(times, keys, values, strict=False)
    ]
    assert pings.readable.tolist() == [f is not None for f in expected]
    fixes = pings.fixes()
    assert [f for f, e in zip(fixes, expected, strict=False) if e is not None] == [
        e for e in expected if e
    ]
    assert [pings.event_id(i) for i in range(len(values))] == [_full_id(v) for v in values]
    # slicing and joining keep every column in step
    again = Pings.concatenated([pings.slice(0, 2), pings.slice(2, 5)])
    readable = [f for f, ok in zip(fixes, pings.readable, strict=False) if ok]
    assert [f for f, ok in zip(again.fixes(), again.readable, strict=False) if ok] == readable
    assert [again.values[i] for i in range(5)] == values
    assert again.offsets.tolist() == offsets.tolist() and again.keys == keys
    joined = pings.joined(3, pings.slice(0, 1))
    assert joined.keys == [None, b"T-3", b"T-1"]
    assert [joined.values[i] for i in range(3)] == [values[3], values[4], values[0]]
