"""JSON Schema (draft 2020-12) of every event type, and an AsyncAPI 3.0 document of the topics.

Both are derived from the same annotations the validator uses (events/base.py), so the
documented schema and the enforced one cannot drift apart. ``fieldstream schemas --out DIR``
writes them to files for downstream analytics teams.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from events.base import CAUSATION_ATTRIBUTES, Event, NonEmpty, OneOf, Range, TimestampMarker
from events.catalog import TOPICS, Topic
from events.codec import MAX_EVENT_BYTES
from events.kinds import ALL_EVENTS

SCHEMA_BASE = "https://fieldstream.dev/schemas"
_ENVELOPE_DOCS = {
    "id": "Unique id of the event; consumers treat a repeated id as a no-op.",
    "source": "Who emitted the event (an app, an importer, a stage).",
    "subject": "The entity the event is about (a work order or technician id).",
    "time": "When it happened (RFC 3339, UTC, millisecond precision).",
}


def _schema_of(hint: Any) -> dict[str, Any]:
    markers: tuple[Any, ...] = ()
    if get_origin(hint) is Annotated:
        hint, *extra = get_args(hint)
        markers = tuple(extra)
    if get_origin(hint) in (Union, types.UnionType):
        inner = next(a for a in get_args(hint) if a is not type(None))
        base = _schema_of(Annotated[inner, *markers] if markers else inner)
        return {"anyOf": [base, {"type": "null"}]}
    if any(isinstance(m, TimestampMarker) for m in markers):
        return {"type": "string", "format": "date-time"}
    schema: dict[str, Any]
    if hint is str:
        schema = {"type": "string"}
    elif hint is bool:
        schema = {"type": "boolean"}
    elif hint is int:
        schema = {"type": "integer"}
    elif hint is float:
        schema = {"type": "number"}
    elif get_origin(hint) is tuple:
        schema = {"type": "array", "items": _schema_of(get_args(hint)[0])}
    elif get_origin(hint) is dict:
        value_hint = get_args(hint)[1]
        values = _schema_of(value_hint)
        if value_hint is int:
            values["minimum"] = 0
        schema = {"type": "object", "additionalProperties": values}
    else:
        raise TypeError(f"no schema for {hint!r}")
    for marker in markers:
        if isinstance(marker, Range):
            if marker.lo is not None:
                schema["minimum"] = marker.lo
            if marker.hi is not None:
                schema["maximum"] = marker.hi
        elif isinstance(marker, OneOf):
            schema["enum"] = list(marker.choices)
        elif isinstance(marker, NonEmpty):
            schema["minLength"] = 1
    return schema


def event_schema(cls: type[Event]) -> dict[str, Any]:
    """The JSON Schema of one event type's CloudEvents document."""
    hints = get_type_hints(cls, include_extras=True)
    data_props: dict[str, Any] = {}
    required_data: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in ("id", "source", "time", "subject", "causation"):
            continue
        data_props[f.name] = _schema_of(hints[f.name])
        if f.default is dataclasses.MISSING:
            required_data.append(f.name)
    properties: dict[str, Any] = {
        "specversion": {"const": "1.0"},
        "type": {"const": cls.__name__},
        "datacontenttype": {"const": "application/json"},
        "schemaversion": {"type": "integer", "minimum": 1, "maximum": cls.SCHEMA_VERSION},
    }
    for name, doc in _ENVELOPE_DOCS.items():
        properties[name] = {**_schema_of(hints[name]), "description": doc}
    required = ["id", "source", "type", "time", "subject", "data"]
    if cls.DERIVED:
        for attr, part in CAUSATION_ATTRIBUTES.items():
            kind = "string" if part in ("id", "topic") else "integer"
            properties[attr] = {
                "type": kind,
                "description": f"The {part} of the input event that caused this one.",
            }
            required.append(attr)
    properties["data"] = {
        "type": "object",
        "properties": data_props,
        "required": required_data,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}/{cls.__name__}/v{cls.SCHEMA_VERSION}.json",
        "title": cls.__name__,
        "description": " ".join((cls.__doc__ or "").split()),
        "type": "object",
        "properties": properties,
        "required": required,
        "x-key": cls.KEY_FIELD,
        "x-max-bytes": MAX_EVENT_BYTES,
    }


def all_event_schemas() -> dict[str, dict[str, Any]]:
    """Event type name -> JSON Schema, for every event type."""
    return {cls.__name__: event_schema(cls) for cls in ALL_EVENTS}


def _channel(topic: Topic) -> dict[str, Any]:
    return {
        "address": topic.name,
        "description": topic.description,
        "messages": {
            cls.__name__: {"$ref": f"#/components/messages/{cls.__name__}"} for cls in topic.events
        },
        "bindings": {
            "kafka": {
                "topic": topic.name,
                "partitions": topic.partitions,
                "topicConfiguration": {
                    "cleanup.policy": ["compact"] if topic.compacted else ["delete"],
                    "retention.ms": -1 if topic.retention_ms is None else topic.retention_ms,
                },
                "bindingVersion": "0.5.0",
            }
        },
        "x-key": topic.key,
    }


def asyncapi_document(version: str) -> dict[str, Any]:
    """An AsyncAPI 3.0 document: one channel per topic, one message per event type."""
    messages = {
        cls.__name__: {
            "name": cls.__name__,
            "contentType": "application/cloudevents+json",
            "payload": {"$ref": f"schemas/{cls.__name__}.json"},
        }
        for cls in ALL_EVENTS
    }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "contentType": "application/octet-stream",
        "summary": "The original bytes of a rejected record; the reason is in the headers.",
        "headers": {
            "type": "object",
            "properties": {
                name: {"type": "string"}
                for name in (
                    "fs.error.rule",
                    "fs.error.field",
                    "fs.error.message",
                    "fs.error.source",
                )
            },
        },
        "payload": {"type": "string", "contentEncoding": "binary"},
    }
    channels = {
        topic.name.replace(".", "_"): _channel(topic) for topic in TOPICS if not topic.internal
    }
    channels["fs_dlq"]["messages"] = {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}}
    operations = {
        f"receive_{name}": {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{name}"},
        }
        for name in channels
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "fieldstream topics",
            "version": version,
            "description": "Events of an event-sourced field-service dispatch engine. Every "
            "message is a CloudEvents 1.0 JSON document (structured mode).",
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
