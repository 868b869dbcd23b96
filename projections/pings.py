"""GPS pings read into columns: the fix of each ping (time, position, speed, heading), parsed
once, with no object per ping until the fold takes them.

:class:`Pings` is what :meth:`projections.fold.Projection.apply_pings` folds. It is built from
one partition's records (:meth:`Pings.parse`), by the projection stage as it reads, or by a
process reading ahead for it (streams/readahead.py): arrays and one list of keys, cheap to
send between processes, to slice at a window's end and to join. Both build it with this
module's functions, so where a ping was parsed cannot change what is folded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from projections.tracks import Fix

_DATA = b',"data":{'
_NAN = math.nan
_UNREADABLE = (_NAN, _NAN, _NAN, _NAN)


def _reading(value: Any) -> float:
    """A speed or heading as the fold keeps it: a JSON number as a float, anything else
    (null, absent, text, true/false) as no reading (NaN here, None in a fix)."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    return _NAN


def ping_fields(value: bytes) -> tuple[float, float, float, float] | None:
    """(lat, lon, speed, heading) of a GpsPinged record's value, NaN for a missing speed or
    heading; None if it is not readable as a fix (no ``data`` object, or no numeric ``lat``
    and ``lon`` in it: "nan" as text is no position).

    The record passed ingest's validation, so it is one JSON object. When its last member is
    ``"data"`` (as every encoder writes it), only that member is parsed: the last
    ``,"data":{`` of the text, outside any string (a quote inside a string is escaped), that
    runs to the byte before the closing brace is the top-level member. Any other layout
    fails that parse and takes the full one; both give the same fields.
    """
    try:
        data = orjson.loads(value[value.rindex(_DATA) + 8 : -1])
        lat, lon = float(data["lat"]), float(data["lon"])
    except (ValueError, KeyError, TypeError):  # (orjson.JSONDecodeError is a ValueError)
        try:
            data = orjson.loads(value)["data"]
            lat, lon = float(data["lat"]), float(data["lon"])
        except (ValueError, KeyError, TypeError):
            return None
    if math.isnan(lat) or math.isnan(lon):
        return None
    speed, heading = data.get("speed_mps"), data.get("heading_deg")
    if type(speed) is not float:
        speed = _reading(speed)
    if type(heading) is not float:
        heading = _reading(heading)
    return lat, lon, speed, heading


def ping_fix(at: int, value: bytes) -> Fix | None:
    """The fix of a GpsPinged record stamped ``at`` (see :func:`ping_fields`)."""
    fields = ping_fields(value)
    if fields is None:
        return None
    lat, lon, speed, heading = fields
    return (at, lat, lon, None if math.isnan(speed) else speed,
            None if math.isnan(heading) else heading)  # fmt: skip


def event_id(value: bytes) -> str:
    """The event id of a record's value ("" if it has none): asked for a few records per
    batch (the causes), so parsed in full."""
    try:
        return str(orjson.loads(value)["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""


_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Pings:
    """One partition's GPS pings in offset order, parsed (see the module docstring). Speed
    and heading are NaN where the ping had none; ``readable[i]`` is False where the ping is
    not readable as a fix (see :func:`ping_fields`) or has no key (its fields are then NaN).
    The records' values are kept for the few whose event id is asked for
    (:meth:`event_id`), or, where the pings were parsed by another process, looked up by
    offset with ``source``."""

    topic: str
    partition: int
    offsets: _I64
    timestamps: _I64
    keys: list[bytes | None]
    lat: _F64
    lon: _F64
    speed: _F64
    heading: _F64
    readable: npt.NDArray[np.bool_]
    values: list[bytes] | None
    source: Callable[[int], bytes | None] | None = field(default=None, compare=False)
    """The value of the record at an offset, where ``values`` is None."""

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def parse(
        cls,
        topic: str,
        partition: int,
        offsets: _I64,
        timestamps: _I64,
        keys: list[bytes | None],
        values: Sequence[bytes],
        *,
        keep_values: bool = True,
    ) -> Pings:
        """Parse one partition's records, given a column at a time (without keeping their
        values: ``source`` must then be set before :meth:`event_id` is asked)."""
        fields = ping_fields
        table = np.array([fields(v) or _UNREADABLE for v in values], dtype=np.float64)
        table = table.reshape(len(values), 4)
        readable = ~np.isnan(table[:, 0])
        if None in keys or b"" in keys:
            readable &= np.array([bool(key) for key in keys], dtype=np.bool_)
        return cls(
            topic,
            partition,
            np.asarray(offsets, dtype=np.int64),
            np.asarray(timestamps, dtype=np.int64),
            list(keys),
            np.ascontiguousarray(table[:, 0]),
            np.ascontiguousarray(table[:, 1]),
            np.ascontiguousarray(table[:, 2]),
            np.ascontiguousarray(table[:, 3]),
            readable,
            list(values) if keep_values else None,
        )

    @classmethod
    def empty(cls, topic: str, partition: int) -> Pings:
        return cls.parse(topic, partition, np.empty(0, np.int64), np.empty(0, np.int64), [], [])

    def event_id(self, i: int) -> str:
        """The event id of the i-th ping (see :func:`event_id`)."""
        if self.values is not None:
            return event_id(self.values[i])
        value = None if self.source is None else self.source(int(self.offsets[i]))
        return "" if value is None else event_id(value)

    def fixes(self) -> list[Fix]:
        """Each ping's fix, as :func:`ping_fix` gives it (any tuple where not readable)."""
        speeds: list[Any] = self.speed.tolist()
        headings: list[Any] = self.heading.tolist()
        for column, values in ((self.speed, speeds), (self.heading, headings)):
            for i in np.flatnonzero(np.isnan(column)).tolist():
                values[i] = None
        return list(
            zip(
                self.timestamps.tolist(),
                self.lat.tolist(),
                self.lon.tolist(),
                speeds,
                headings,
                strict=True,
            )
        )

    def slice(self, start: int, end: int) -> Pings:
        return Pings(
            self.topic,
            self.partition,
            self.offsets[start:end],
            self.timestamps[start:end],
            self.keys[start:end],
            self.lat[start:end],
            self.lon[start:end],
            self.speed[start:end],
            self.heading[start:end],
            self.readable[start:end],
            None if self.values is None else self.values[start:end],
            self.source,
        )

    def joined(self, start: int, more: Pings) -> Pings:
        """Pings ``start:`` of these followed by ``more`` (the next read of the partition)."""
        return Pings.concatenated([self.slice(start, len(self)), more])

    @classmethod
    def concatenated(cls, parts: Sequence[Pings]) -> Pings:
        """One partition's consecutive reads (``parts``, not empty, in offset order) as one."""
        parts = [p for p in parts if len(p)] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        keys: list[bytes | None] = []
        values: list[bytes] | None = []
        source = None
        for part in parts:
            keys += part.keys
            if values is not None and part.values is not None:
                values += part.values
            else:
                values = None
            source = source or part.source
        first = parts[0]
        return cls(
            first.topic,
            first.partition,
            np.concatenate([p.offsets for p in parts]),
            np.concatenate([p.timestamps for p in parts]),
            keys,
            np.concatenate([p.lat for p in parts]),
            np.concatenate([p.lon for p in parts]),
            np.concatenate([p.speed for p in parts]),
            np.concatenate([p.heading for p in parts]),
            np.concatenate([p.readable for p in parts]),
            values,
            source,
        )
