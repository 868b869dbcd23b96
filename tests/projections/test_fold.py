"""The fold's fast paths read what the full decoder reads, whatever the JSON's layout."""

from __future__ import annotations

import orjson
import pytest

from projections.fold import ping_fix

AT = 1_795_417_264_007
HEAD = (
    b'"specversion":"1.0","id":"p-1","source":"app","type":"GpsPinged",'
    b'"time":"2026-11-23T07:01:04.007Z","subject":"T-0061"'
)
DATA = (
    b'{"technician_id":"T-0061","lat":42.512409,"lon":1.543264,"speed_mps":0.07,"heading_deg":null}'
)


def _full(value: bytes) -> tuple[int, float, float, float | None, float | None] | None:
    """The fix as the full decoder reads it (the definition the fast path must meet)."""
    try:
        data = orjson.loads(value)["data"]
        return (AT, float(data["lat"]), float(data["lon"]), data.get("speed_mps"),
                data.get("heading_deg"))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None


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
