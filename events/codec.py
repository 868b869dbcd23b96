"""The wire format: CloudEvents 1.0 JSON (structured mode), encoded and decoded with orjson.

One event is one JSON object::

    {"specversion": "1.0", "id": "...", "source": "...", "type": "GpsPinged",
     "time": "2026-11-25T14:05:00.000Z", "subject": "T-0001",
     "datacontenttype": "application/json", "schemaversion": 1,
     "data": {"technician_id": "T-0001", "lat": 42.5, "lon": 1.52, ...}}

Derived events add the flat extension attributes ``causationid``, ``causationtopic``,
``causationpartition`` and ``causationoffset``.

:func:`decode` validates as it decodes and raises :class:`InvalidEvent`, whose
:class:`Rejection` names the field and the rule broken; :func:`validate` returns the rejection
instead of raising. Neither lets any other exception out, whatever the bytes: that is what lets
a stage send bad input to the dead-letter topic and carry on.

``decode(encode(e)) == e`` for every event ``e`` (tests/events/test_codec.py checks each type).
Unknown attributes and data fields are ignored, so an older reader accepts a newer writer's
additive changes; a ``schemaversion`` above the reader's is refused.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Union, cast, get_args, get_origin, get_type_hints

import orjson

from events.base import (
    CAUSATION_ATTRIBUTES,
    Causation,
    Event,
    NonEmpty,
    OneOf,
    Range,
    TimestampMarker,
)
from events.kinds import EVENT_TYPES

MAX_EVENT_BYTES = 64 * 1024
"""Records larger than this are refused (rule ``too_large``)."""

DEFAULT_MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
"""How far ahead of the ingesting clock an event's ``time`` may be (device clocks drift)."""

_EPOCH_DAY = date(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record was refused: the rule broken, the field (a dotted path) and a sentence."""

    rule: str
    field: str
    message: str

    def __str__(self) -> str:
        return self.message


class InvalidEvent(ValueError):
    """Raised by :func:`decode`; ``.rejection`` says what is wrong."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


class _Bad(Exception):
    """Internal: a field broke a rule (the path is filled in by the caller)."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        self.message = message


# -- time ----------------------------------------------------------------------------------


@lru_cache(maxsize=1 << 16)
def format_time(ms: int) -> str:
    """Milliseconds since the epoch -> ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (cached: a work order's
    snapshots repeat the same few times many times over). The time of day is worked out with
    integers, the date only once a day (each event's own time is new to the cache: half the
    cost of a datetime's isoformat)."""
    days, milli = divmod(ms, 86_400_000)
    seconds, milli = divmod(milli, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_format_day(days)}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


@lru_cache(maxsize=1 << 12)
def _format_day(days: int) -> str:
    """Days since the epoch -> ``YYYY-MM-DD``."""
    return (_EPOCH_DAY + timedelta(days=days)).isoformat()


@lru_cache(maxsize=1 << 16)
def parse_time(text: str) -> int:
    """An RFC 3339 time with an offset -> milliseconds since the epoch (truncated to the ms).

    Raises ValueError for anything else, including a time without an offset.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("no UTC offset")
    return (moment - _EPOCH_UTC) // _MS


# -- field converters, compiled once per event type ---------------------------------------

Convert = Callable[[Any], Any]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _check_range(bounds: Range | None) -> Callable[[float], None]:
    if bounds is None:
        return lambda v: None
    lo, hi = bounds.lo, bounds.hi

    def check(v: float) -> None:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            low = "-inf" if lo is None else f"{lo:g}"
            high = "inf" if hi is None else f"{hi:g}"
            raise _Bad("range", f"{_describe(v)} is out of range [{low}, {high}]")

    return check


def _split_hint(hint: Any) -> tuple[Any, tuple[Any, ...], Any]:
    """A field's type without its markers, the markers (:class:`Range`, :class:`OneOf`, ...)
    and, when null is allowed, the type of its other values with the markers (else None)."""
    markers: tuple[Any, ...] = ()
    if get_origin(hint) is Annotated:
        hint, *extra = get_args(hint)
        markers = tuple(extra)
    if get_origin(hint) in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return hint, markers, Annotated[options[0], *markers] if markers else options[0]
    return hint, markers, None


def _converter(hint: Any) -> Convert:
    """Build the function that checks and converts one decoded JSON value to ``hint``."""
    hint, markers, non_null = _split_hint(hint)
    origin = get_origin(hint)
    if non_null is not None:
        inner = _converter(non_null)

        def optional(v: Any) -> Any:
            return None if v is None else inner(v)

        return optional

    bounds = next((m for m in markers if isinstance(m, Range)), None)
    check_range = _check_range(bounds)
    if any(isinstance(m, TimestampMarker) for m in markers):

        def timestamp(v: Any) -> int:
            if type(v) is not str:
                raise _Bad("type", f"expected an RFC 3339 time string, got {_type_name(v)}")
            try:
                return parse_time(v)
            except ValueError:
                raise _Bad(
                    "time_format",
                    f"{_describe(v)} is not an RFC 3339 time with a UTC offset",
                ) from None

        return timestamp
    if hint is str:
        choices = next((m.choices for m in markers if isinstance(m, OneOf)), None)
        non_empty = any(isinstance(m, NonEmpty) for m in markers)

        def string(v: Any) -> str:
            if type(v) is not str:
                raise _Bad("type", f"expected a string, got {_type_name(v)}")
            if non_empty and not v:
                raise _Bad("empty", "must not be empty")
            if choices is not None and v not in choices:
                raise _Bad("choice", f"{_describe(v)} is not one of {', '.join(choices)}")
            return v

        return string
    if hint is bool:

        def boolean(v: Any) -> bool:
            if type(v) is not bool:
                raise _Bad("type", f"expected a boolean, got {_type_name(v)}")
            return v

        return boolean
    if hint is int:

        def integer(v: Any) -> int:
            if type(v) is not int:
                raise _Bad("type", f"expected an integer, got {_type_name(v)}")
            check_range(v)
            return v

        return integer
    if hint is float:

        def number(v: Any) -> float:
            t = type(v)
            if t is not float and t is not int:
                raise _Bad("type", f"expected a number, got {_type_name(v)}")
            f = float(v)
            if not math.isfinite(f):
                raise _Bad("range", "must be a finite number")
            check_range(f)
            return f

        return number
    if origin is tuple:
        item = _converter(get_args(hint)[0])

        def sequence(v: Any) -> tuple[Any, ...]:
            if type(v) is not list:
                raise _Bad("type", f"expected an array, got {_type_name(v)}")
            return tuple(item(x) for x in v)

        return sequence
    if origin is dict:
        value_hint = get_args(hint)[1]
        value = _converter(Annotated[int, Range(0, None)] if value_hint is int else value_hint)

        def mapping(v: Any) -> dict[str, Any]:
            if type(v) is not dict:
                raise _Bad("type", f"expected an object, got {_type_name(v)}")
            out = {}
            for key, x in v.items():
                try:
                    out[key] = value(x)
                except _Bad as bad:
                    raise _Bad(bad.rule, f"[{key!r}]: {bad.message}") from None
            return out

        return mapping
    raise TypeError(f"no converter for {hint!r}")  # a programming error in events/kinds.py


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    cls: type[Event]
    envelope: tuple[tuple[str, Convert], ...]
    data: tuple[tuple[str, Convert, bool, Any], ...]
    """(name, convert, required, default) for each data field."""
    time_fields: frozenset[str]
    names: tuple[str, ...]
    """The data fields' names, in order."""


def _is_time(hint: Any) -> bool:
    """Whether a field of this type is a time (a :class:`TimestampMarker`, null allowed)."""
    _, markers, non_null = _split_hint(hint)
    if non_null is not None:
        _, markers, _ = _split_hint(non_null)
    return any(isinstance(m, TimestampMarker) for m in markers)


def _compile(cls: type[Event]) -> _Spec:
    hints = get_type_hints(cls, include_extras=True)
    envelope = tuple((name, _converter(hints[name])) for name in ("id", "source", "subject"))
    data = []
    time_fields = set()
    for f in dataclasses.fields(cls):
        if f.name in ("id", "source", "time", "subject", "causation"):
            continue
        hint = hints[f.name]
        if _is_time(hint):
            time_fields.add(f.name)
        has_default = f.default is not dataclasses.MISSING
        default = f.default if has_default else None
        data.append((f.name, _converter(hint), not has_default, default))
    return _Spec(
        cls, envelope, tuple(data), frozenset(time_fields), tuple(name for name, *_ in data)
    )


_SPECS: dict[str, _Spec] = {name: _compile(cls) for name, cls in EVENT_TYPES.items()}
_TIME = _converter(get_type_hints(Event, include_extras=True)["time"])
_INT = _converter(int)
_STR = _converter(str)


# -- the fast path: a checker generated per event type ------------------------------------


_MISSING = object()


def _generated(lines: list[str], constants: dict[str, Any]) -> Callable[..., Any]:
    """The function whose source is ``lines`` (our own, made from the schema; its ``def`` on
    the first line), compiled with ``constants`` as its globals."""
    name = lines[0].removeprefix("def ").partition("(")[0]
    exec("\n".join(lines), constants)
    return cast(Callable[..., Any], constants[name])


def _binder(constants: dict[str, Any]) -> Callable[[Any], str]:
    """A function that adds a value to ``constants`` (the globals of generated code) under a
    fresh name, and returns the name."""

    def bind(value: Any) -> str:
        name = f"c{len(constants)}"
        constants[name] = value
        return name

    return bind


def _check_lines(hint: Any, bind: Callable[[Any], str], indent: str) -> list[str]:
    """Source lines that check the value ``v`` against ``hint`` as :func:`_converter`'s
    function does, leave the converted value in ``v``, and ``return None`` where that function
    would raise (so the caller falls back to the general validator). ``bind`` names a constant
    for the generated code."""
    hint, markers, non_null = _split_hint(hint)
    if non_null is not None:
        body = _check_lines(non_null, bind, indent + "    ")
        return [f"{indent}if v is not None:", *body]
    bounds = next((m for m in markers if isinstance(m, Range)), None)
    ranged: list[str] = []
    if bounds is not None:
        if bounds.lo is not None:
            ranged.append(f"{indent}if v < {bind(bounds.lo)}: return None")
        if bounds.hi is not None:
            ranged.append(f"{indent}if v > {bind(bounds.hi)}: return None")
    if any(isinstance(m, TimestampMarker) for m in markers):
        return [
            f"{indent}if type(v) is not str: return None",
            f"{indent}v = parse_time(v)",  # raises ValueError on a bad time: the fallback
        ]
    if hint is str:
        lines = [f"{indent}if type(v) is not str: return None"]
        if any(isinstance(m, NonEmpty) for m in markers):
            lines.append(f"{indent}if not v: return None")
        choices = next((m.choices for m in markers if isinstance(m, OneOf)), None)
        if choices is not None:
            lines.append(f"{indent}if v not in {bind(frozenset(choices))}: return None")
        return lines
    if hint is bool:
        return [f"{indent}if type(v) is not bool: return None"]
    if hint is int:
        return [f"{indent}if type(v) is not int: return None", *ranged]
    if hint is float:
        return [
            f"{indent}if type(v) is not float and type(v) is not int: return None",
            f"{indent}v = float(v)",
            f"{indent}if not isfinite(v): return None",
            *ranged,
        ]
    # Arrays and objects (a few, rare fields): the general converter, whose _Bad is caught
    # by validate() and sends the record to the general validator.
    return [f"{indent}v = {bind(_converter(Annotated[hint, *markers] if markers else hint))}(v)"]


def _construction(
    cls: type, target: str, fields: list[tuple[str, str]], bind: Callable[[Any], str], indent: str
) -> list[str]:
    """Source lines that leave in ``target`` the instance of ``cls`` (a frozen dataclass with
    slots and no ``__post_init__``) whose fields are the ``(name, expression)`` pairs: what
    ``cls(name=expression, ...)`` makes, with each slot set through its descriptor on a bare
    instance. The dataclass's ``__init__`` parses the keyword arguments and then sets every
    field through ``object.__setattr__`` (looked up and called once a field, as a frozen class
    must): about twice the time, for the events of 30 fields the stages decode most."""
    names = [f.name for f in dataclasses.fields(cls)]
    if sorted(names) != sorted(name for name, _ in fields):
        raise TypeError(f"{cls.__name__}: fields {names} are not {[n for n, _ in fields]}")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__ this would skip")
    lines = [f"{indent}{target} = new({bind(cls)})"]
    for name, expression in fields:
        slot = getattr(cls, name, None)
        if not isinstance(slot, types.MemberDescriptorType):
            raise TypeError(f"{cls.__name__}.{name} is not a slot")
        lines.append(f"{indent}{bind(slot.__set__)}({target}, {expression})")
    return lines


def _fast_checker(spec: _Spec) -> Callable[[dict[str, Any], int | None, int], Event | None]:
    """A function of a decoded JSON object that returns the event when the object is a valid
    event of ``spec``'s type, and None (or raises) when it is not: :func:`_validate`'s checks,
    in straight-line code made for this type (no converter calls, no values dictionary)."""
    cls = spec.cls
    hints = get_type_hints(cls, include_extras=True)
    constants: dict[str, Any] = {
        "parse_time": parse_time,
        "isfinite": math.isfinite,
        "MISSING": _MISSING,
        "new": object.__new__,
    }
    bind = _binder(constants)
    lines = [
        "def check(doc, now_ms, skew):",
        "    version = doc.get('schemaversion', 1)",
        f"    if type(version) is not int or not 1 <= version <= {cls.SCHEMA_VERSION}: return None",
        "    if doc.get('specversion', '1.0') != '1.0': return None",
    ]
    arguments = []
    for name in ("id", "source", "subject"):
        lines.append(f"    v = doc.get({name!r}, MISSING)")
        lines.append("    if v is MISSING: return None")
        lines += _check_lines(hints[name], bind, "    ")
        lines.append(f"    f_{name} = v")
        arguments.append((name, f"f_{name}"))
    lines += [
        "    v = doc.get('time', MISSING)",
        "    if type(v) is not str: return None",
        "    f_time = parse_time(v)",
        "    if now_ms is not None and f_time > now_ms + skew: return None",
    ]
    arguments.append(("time", "f_time"))
    if cls.DERIVED:
        parts = []
        for attribute, field in CAUSATION_ATTRIBUTES.items():
            wanted = "str" if field in ("id", "topic") else "int"
            lines.append(f"    v = doc.get({attribute!r}, MISSING)")
            lines.append(f"    if type(v) is not {wanted}: return None")
            lines.append(f"    a_{field} = v")
            parts.append((field, f"a_{field}"))
        arguments.append(("causation", "cause"))
    lines += ["    data = doc.get('data')", "    if type(data) is not dict: return None"]
    for name, _convert, required, default in spec.data:
        lines.append(f"    v = data.get({name!r}, MISSING)")
        if required:
            lines.append("    if v is MISSING: return None")
            lines += _check_lines(hints[name], bind, "    ")
        else:
            lines.append(f"    if v is MISSING: v = {bind(default)}")
            lines.append("    else:")
            lines += _check_lines(hints[name], bind, "        ")
        lines.append(f"    f_{name} = v")
        arguments.append((name, f"f_{name}"))
    if cls.DERIVED:
        lines += _construction(Causation, "cause", parts, bind, "    ")
    lines += _construction(cls, "event", arguments, bind, "    ")
    lines.append("    return event")
    return _generated(lines, constants)


_FAST = {name: _fast_checker(spec) for name, spec in _SPECS.items()}


# -- decode --------------------------------------------------------------------------------


def _reject(rule: str, field: str, message: str) -> Rejection:
    where = f"field '{field}': " if field else ""
    return Rejection(rule, field, f"{where}{message}")


def validate(
    raw: bytes,
    *,
    now_ms: int | None = None,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
) -> Event | Rejection:
    """Decode and check one record. Never raises.

    ``now_ms`` is the ingesting clock (events/ reads no clock itself); when given, an event
    whose ``time`` is more than ``max_future_skew_ms`` after it is refused (rule ``future``).

    A valid event takes the fast path (a checker generated per event type, see
    :func:`_fast_checker`); anything it does not accept is checked again by the general
    validator, which says precisely what is wrong.
    """
    try:
        if len(raw) <= MAX_EVENT_BYTES:
            doc = orjson.loads(raw)
            if type(doc) is dict:
                kind = doc.get("type")
                if type(kind) is str and (fast := _FAST.get(kind)) is not None:
                    event = fast(doc, now_ms, max_future_skew_ms)
                    if event is not None:
                        return event
    except Exception:  # not accepted as it stands: the general validator says why
        pass
    try:
        return _validate(raw, now_ms, max_future_skew_ms)
    except Exception as exc:  # a guard: no input may crash a stage, whatever it is
        return _reject("invalid", "", f"unreadable event ({type(exc).__name__}: {exc})")


def _validate(raw: bytes, now_ms: int | None, max_future_skew_ms: int) -> Event | Rejection:
    if len(raw) > MAX_EVENT_BYTES:
        return _reject(
            "too_large", "", f"event is {len(raw)} bytes, over the limit of {MAX_EVENT_BYTES}"
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            return _reject("encoding", "", f"not valid UTF-8 (byte {bad.start}: {bad.reason})")
        return _reject("json", "", f"not valid JSON ({exc})")
    if type(doc) is not dict:
        return _reject("not_object", "", f"an event must be a JSON object, got {_type_name(doc)}")
    kind = doc.get("type")
    if kind is None:
        return _reject("missing", "type", "is required")
    if type(kind) is not str:
        return _reject("type", "type", f"expected a string, got {_type_name(kind)}")
    spec = _SPECS.get(kind)
    if spec is None:
        return _reject("unknown_type", "type", f"unknown event type {_describe(kind)}")
    spec_version = doc.get("specversion", "1.0")
    if spec_version != "1.0":
        return _reject("choice", "specversion", f"{_describe(spec_version)} is not CloudEvents 1.0")
    version = doc.get("schemaversion", 1)
    if type(version) is not int or not 1 <= version <= spec.cls.SCHEMA_VERSION:
        return _reject(
            "schema_version",
            "schemaversion",
            f"{_describe(version)} is not a version this reader knows "
            f"(1..{spec.cls.SCHEMA_VERSION} for {kind})",
        )
    values: dict[str, Any] = {}
    field = ""
    try:
        for field, convert in spec.envelope:
            if field not in doc:
                return _reject("missing", field, "is required")
            values[field] = convert(doc[field])
        field = "time"
        if "time" not in doc:
            return _reject("missing", "time", "is required")
        values["time"] = _TIME(doc["time"])
        if now_ms is not None and values["time"] > now_ms + max_future_skew_ms:
            ahead = (values["time"] - now_ms) / 1000
            return _reject(
                "future",
                "time",
                f"{doc['time']} is {ahead:.0f} s in the future "
                f"(allowed skew {max_future_skew_ms / 1000:.0f} s)",
            )
        if spec.cls.DERIVED:
            parts: dict[str, Any] = {}
            for field, attr in CAUSATION_ATTRIBUTES.items():
                if field not in doc:
                    return _reject("missing", field, "is required on a derived event")
                convert = _STR if attr in ("id", "topic") else _INT
                parts[attr] = convert(doc[field])
            values["causation"] = Causation(**parts)
        field = "data"
        data = doc.get("data")
        if data is None:
            return _reject("missing", "data", "is required")
        if type(data) is not dict:
            return _reject("type", "data", f"expected an object, got {_type_name(data)}")
        for name, convert, required, default in spec.data:
            field = f"data.{name}"
            if name in data:
                values[name] = convert(data[name])
            elif required:
                return _reject("missing", field, "is required")
            else:
                values[name] = default
    except _Bad as bad:
        return _reject(bad.rule, field, bad.message)
    return spec.cls(**values)


def decode(
    raw: bytes,
    *,
    now_ms: int | None = None,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
) -> Event:
    """Like :func:`validate`, but raises :class:`InvalidEvent` on a bad record."""
    result = validate(raw, now_ms=now_ms, max_future_skew_ms=max_future_skew_ms)
    if isinstance(result, Rejection):
        raise InvalidEvent(result)
    return result


def decode_trusted(raw: bytes) -> Event | Rejection:
    """Decode a record this system wrote itself (an internal topic), skipping per-field checks.

    About three times faster than :func:`validate` for wide events: values are not range- or
    type-checked (they were when the event was first accepted). A structural surprise (not
    JSON, an unknown type, a missing field) falls back to :func:`validate`, which says
    precisely what is wrong; it never raises.
    """
    try:
        doc = orjson.loads(raw)
        return _TRUSTED[doc["type"]](doc)
    except Exception:  # not what we wrote: let the full validator say precisely why
        return validate(raw)


def _trusted_general(doc: dict[str, Any]) -> Event:
    """What the generated decoders of :func:`decode_trusted` do, the general way (the
    reference they are tested against)."""
    spec = _SPECS[doc["type"]]
    data = doc["data"]
    values: dict[str, Any] = {
        "id": doc["id"],
        "source": doc["source"],
        "subject": doc["subject"],
        "time": parse_time(doc["time"]),
    }
    if spec.cls.DERIVED:
        values["causation"] = Causation(
            doc["causationid"],
            doc["causationtopic"],
            doc["causationpartition"],
            doc["causationoffset"],
        )
    times = spec.time_fields
    for name, _convert, required, default in spec.data:
        if name in data:
            value = data[name]
            if name in times and value is not None:
                value = parse_time(value)
            elif type(value) is list:
                value = tuple(value)
            values[name] = value
        elif required:
            raise KeyError(name)
        else:
            values[name] = default
    return spec.cls(**values)


def _trusted_decoder(spec: _Spec) -> Callable[[dict[str, Any]], Event]:
    """:func:`_trusted_general` for one event type, as straight-line code."""
    cls = spec.cls
    constants: dict[str, Any] = {
        "parse_time": parse_time,
        "MISSING": _MISSING,
        "new": object.__new__,
    }
    bind = _binder(constants)
    lines = ["def trusted(doc):", "    data = doc['data']"]
    arguments = [
        ("id", "doc['id']"),
        ("source", "doc['source']"),
        ("subject", "doc['subject']"),
        ("time", "parse_time(doc['time'])"),
    ]
    if cls.DERIVED:
        parts = [
            (field, f"doc[{attribute!r}]") for attribute, field in CAUSATION_ATTRIBUTES.items()
        ]
        lines += _construction(Causation, "cause", parts, bind, "    ")
        arguments.append(("causation", "cause"))
    lines += _data_lines(spec, bind, arguments, parse_times=True)
    lines += _construction(cls, "event", arguments, bind, "    ")
    lines.append("    return event")
    return _generated(lines, constants)


def _data_lines(
    spec: _Spec, bind: Callable[[Any], str], arguments: list[tuple[str, str]], *, parse_times: bool
) -> list[str]:
    """Source lines that leave each data field of ``data`` in ``v0``, ``v1``, ... (a
    missing optional one: its default; a list: a tuple; with ``parse_times``, a time given
    as text: ms), appending each to ``arguments``."""
    lines = []
    for i, (name, _convert, required, default) in enumerate(spec.data):
        if parse_times and name in spec.time_fields:
            test, convert = f"v{i} is not None", f"v{i} = parse_time(v{i})"
        else:
            test, convert = f"type(v{i}) is list", f"v{i} = tuple(v{i})"
        if required:
            lines.append(f"    v{i} = data[{name!r}]")
            lines.append(f"    if {test}: {convert}")
        else:
            lines.append(f"    v{i} = data.get({name!r}, MISSING)")
            lines.append(f"    if v{i} is MISSING: v{i} = {bind(default)}")
            lines.append(f"    elif {test}: {convert}")
        arguments.append((name, f"v{i}"))
    return lines


_TRUSTED = {name: _trusted_decoder(spec) for name, spec in _SPECS.items()}


def _fields_decoder(spec: _Spec) -> Callable[..., Event]:
    """The event of ``spec``'s type from its attributes and its data fields in the form an
    aggregate's fact stores them (times in ms, sequences as lists, the causation as a
    dictionary): what ``cls(id=..., **fields)`` makes with the lists made tuples, as
    straight-line code."""
    cls = spec.cls
    constants: dict[str, Any] = {"MISSING": _MISSING, "new": object.__new__}
    bind = _binder(constants)
    lines = ["def of_fields(id, source, time, subject, data):"]
    arguments = [("id", "id"), ("source", "source"), ("time", "time"), ("subject", "subject")]
    if cls.DERIVED:
        lines.append("    cd = data['causation']")
        parts = [(f.name, f"cd[{f.name!r}]") for f in dataclasses.fields(Causation)]
        lines += _construction(Causation, "cause", parts, bind, "    ")
        arguments.append(("causation", "cause"))
    lines += _data_lines(spec, bind, arguments, parse_times=False)
    lines += _construction(cls, "event", arguments, bind, "    ")
    lines.append("    return event")
    return _generated(lines, constants)


_OF_FIELDS = {name: _fields_decoder(spec) for name, spec in _SPECS.items()}


def event_of_fields(kind: str) -> Callable[..., Event]:
    """The constructor of events of type ``kind`` from the form an aggregate's fact keeps
    them in: ``of_fields(id, source, time, subject, data)``, ``data`` the event's data fields
    (and its causation, for a derived event) as JSON gives them back (times in ms, sequences
    as lists, the causation as a dictionary). For restoring aggregates from their facts,
    where every stored fact is read back once."""
    return _OF_FIELDS[kind]


# -- encode --------------------------------------------------------------------------------


def _envelope(
    spec: _Spec,
    kind: str,
    id: str,
    source: str,
    time: int,
    subject: str,
    causation: Causation | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    """The CloudEvents JSON object around an event's data (times in ``data`` formatted)."""
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": kind,
        "time": format_time(time),
        "subject": subject,
        "datacontenttype": "application/json",
        "schemaversion": spec.cls.SCHEMA_VERSION,
    }
    if spec.cls.DERIVED:
        assert causation is not None, f"{kind} is derived: it needs its causation"
        doc["causationid"] = causation.id
        doc["causationtopic"] = causation.topic
        doc["causationpartition"] = causation.partition
        doc["causationoffset"] = causation.offset
    doc["data"] = data
    return doc


def to_document(event: Event) -> dict[str, Any]:
    """The CloudEvents JSON object of an event (what :func:`encode` serialises)."""
    return _DOCUMENT[event.type](event)


def _document_general(event: Event) -> dict[str, Any]:
    """:func:`to_document` the general way (what the generated functions are tested against)."""
    spec = _SPECS[event.type]
    data = {name: getattr(event, name) for name in spec.names}
    for name in spec.time_fields:
        if data[name] is not None:
            data[name] = format_time(data[name])
    cause = getattr(event, "causation", None) if spec.cls.DERIVED else None
    return _envelope(
        spec, event.type, event.id, event.source, event.time, event.subject, cause, data
    )


def _encoders(spec: _Spec) -> tuple[Callable[..., dict[str, Any]], Callable[..., bytes]]:
    """The two encoders of an event type, generated as straight-line code that makes the
    same dictionary, key for key and in the same order, as :func:`_envelope` around the data:
    one from an event, and one from its attributes and its data fields given in order (see
    :func:`values_encoder`), which returns the bytes."""
    cls = spec.cls
    constants: dict[str, Any] = {"fmt": format_time, "kind": cls.__name__, "dumps": orjson.dumps}
    head = [
        "'specversion': '1.0'",
        "'id': {id}",
        "'source': {source}",
        "'type': kind",
        "'time': fmt({time})",
        "'subject': {subject}",
        "'datacontenttype': 'application/json'",
        f"'schemaversion': {cls.SCHEMA_VERSION}",
    ]
    derived = [
        f"'{attribute}': {{cause}}.{field}" for attribute, field in CAUSATION_ATTRIBUTES.items()
    ]

    def document(names: dict[str, str], cause: str, values: list[str]) -> str:
        items = [h.format(**names) for h in head]
        if cls.DERIVED:
            items += [d.format(cause=cause) for d in derived]
        items.append("'data': {" + ", ".join(values) + "}")
        return "{" + ", ".join(items) + "}"

    from_event = ["def of_event(e):"]
    if cls.DERIVED:
        from_event.append("    c = e.causation")
    # A field takes its default only in the run of fields with one that ends the list (a
    # positional parameter cannot be skipped).
    trailing = len(spec.data)
    while trailing and not spec.data[trailing - 1][2]:
        trailing -= 1
    parameters = [f"v{i}" if i < trailing else f"v{i}=d{i}" for i in range(len(spec.data))]
    from_values = [f"def of_values(id, source, time, subject, c, {', '.join(parameters)}):"]
    if cls.DERIVED:
        from_values.append(
            f"    assert c is not None, '{cls.__name__} is derived: it needs its causation'"
        )
    event_values = []
    field_values = []
    for i, (name, _convert, _required, default) in enumerate(spec.data):
        constants[f"d{i}"] = default
        if name in spec.time_fields:
            from_event.append(f"    v{i} = e.{name}")
            from_event.append(f"    v{i} = None if v{i} is None else fmt(v{i})")
            from_values.append(f"    v{i} = None if v{i} is None else fmt(v{i})")
            event_values.append(f"{name!r}: v{i}")
        else:
            event_values.append(f"{name!r}: e.{name}")
        field_values.append(f"{name!r}: v{i}")
    attributes = {"id": "e.id", "source": "e.source", "time": "e.time", "subject": "e.subject"}
    from_event.append("    return " + document(attributes, "c", event_values))
    arguments = {"id": "id", "source": "source", "time": "time", "subject": "subject"}
    from_values.append("    return dumps(" + document(arguments, "c", field_values) + ")")
    return _generated(from_event, constants), _generated(from_values, constants)


_DOCUMENT: dict[str, Callable[[Event], dict[str, Any]]] = {}
_VALUES_ENCODER: dict[str, Callable[..., bytes]] = {}
for _kind, _spec in _SPECS.items():
    _DOCUMENT[_kind], _VALUES_ENCODER[_kind] = _encoders(_spec)


def data_fields(kind: str) -> tuple[str, ...]:
    """The names of the data fields of events of type ``kind``, in the schema's order."""
    return _SPECS[kind].names


def values_encoder(kind: str) -> Callable[..., bytes]:
    """The encoder of events of type ``kind`` from their attributes and data fields given
    in order: ``encoder(id, source, time, subject, causation, *values)``, ``values`` in the
    order of :func:`data_fields` (times as ms; the fields with a default that end the list
    may be left out), gives the bytes :func:`encode` gives. For a hot path that has the
    values at hand: neither the event object nor a dictionary of its fields is made."""
    return _VALUES_ENCODER[kind]


def encode(event: Event) -> bytes:
    """The event as compact UTF-8 JSON bytes (deterministic: same event, same bytes)."""
    return orjson.dumps(_DOCUMENT[event.type](event))


# -- pings a column at a time ----------------------------------------------------------------

_PING_MARKERS: dict[str, bytes] = {
    "id": b"@@ID@@",
    "time": b"1970-01-01T00:00:00.000",
    "subject": b"@@SUBJECT@@",
    "technician_id": b"@@TECH@@",
    "lat": b"11.125",
    "lon": b"22.125",
    "speed_mps": b"33.125",
    "heading_deg": b"44.125",
    "accuracy_m": b"55.125",
}


@lru_cache(maxsize=16)
def _ping_template(source: str, with_accuracy: bool) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
    """:func:`encode`'s own JSON of a sample fix, cut at each field that varies: the pieces
    and the fields between them (so the column path cannot drift from the codec)."""
    from events.kinds import GpsPinged

    sample = GpsPinged(
        id="@@ID@@",
        source=source,
        time=0,
        subject="@@SUBJECT@@",
        technician_id="@@TECH@@",
        lat=11.125,
        lon=22.125,
        speed_mps=33.125,
        heading_deg=44.125,
        accuracy_m=55.125 if with_accuracy else None,
    )
    raw = encode(sample)
    found = []
    for name, marker in _PING_MARKERS.items():
        if name == "accuracy_m" and not with_accuracy:
            continue
        if raw.count(marker) != 1:
            raise RuntimeError(f"GPS template: marker for {name} found {raw.count(marker)} times")
        found.append((raw.index(marker), name, marker))
    found.sort()
    pieces, fields, at = [], [], 0
    for pos, name, marker in found:
        pieces.append(raw[at:pos])
        fields.append(name)
        at = pos + len(marker)
    pieces.append(raw[at:])
    return tuple(pieces), tuple(fields)


def _float_texts(values: Any) -> list[bytes]:
    """orjson's own text of each float, as :func:`encode` writes it (NaN comes out null)."""
    return orjson.dumps(values.tolist())[1:-1].split(b",") if len(values) else []


def encode_ping_columns(
    source: str,
    ids: Sequence[bytes],
    time_ms: Any,
    technicians: Sequence[bytes],
    lat: Any,
    lon: Any,
    speed_mps: Any,
    heading_deg: Any,
    accuracy_m: Any = None,
) -> list[bytes]:
    """``GpsPinged`` events encoded byte for byte as :func:`encode` would, a column at a time
    (numpy arrays for times in ms and the floats; NaN: none, ``null``; no ``accuracy_m``
    column: none). ``ids`` and ``technicians`` are JSON string contents (escaped, without
    the quotes); the subject is the technician. For bulk producers (the simulator, the trace
    importer), several times faster than encoding one event at a time."""
    if len(time_ms) == 0:
        return []
    import numpy as np

    pieces, fields = _ping_template(source, accuracy_m is not None)
    # numpy's own ISO text of a millisecond datetime, made straight as bytes (the text of
    # np.datetime_as_string(..., unit="ms"), a quarter of the time).
    stamps = np.asarray(time_ms).astype("datetime64[ms]").astype("S")
    columns: dict[str, Sequence[bytes]] = {
        "id": ids,
        "time": stamps.tolist(),
        "subject": technicians,
        "technician_id": technicians,
        "lat": _float_texts(lat),
        "lon": _float_texts(lon),
        "speed_mps": _float_texts(speed_mps),
        "heading_deg": _float_texts(heading_deg),
    }
    if accuracy_m is not None:
        columns["accuracy_m"] = _float_texts(accuracy_m)
    parts: list[bytes] = [b""] * (2 * len(pieces) - 1)
    parts[0::2] = pieces
    join = b"".join
    out = []
    for row in zip(*(columns[name] for name in fields), strict=True):
        parts[1::2] = row
        out.append(join(parts))
    return out
