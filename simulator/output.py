"""A simulated day as records for a log, as JSON Lines, and its ground truth.

:func:`records` is what a CLI streams into a log: every event encoded in delivery order with
its topic, key and times. Encoding is byte-identical to :func:`events.codec.encode` (the tests
compare every record); GPS fixes, which are most of a day, take a vectorised path: their JSON
is assembled from a template cut out of ``encode``'s own output for a sample fix, numbers are
formatted by orjson itself and times by numpy, so the bytes cannot drift from the codec's.

This module only produces bytes; the writers below are the one place the simulator touches
files, and only the files they are given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from events.base import Event
from events.catalog import TOPIC_OF
from events.codec import encode, encode_ping_columns
from simulator.engine import APP, Simulation
from simulator.world import IntArray

GPS_TOPIC = TOPIC_OF["GpsPinged"].name
CHUNK = 65_536
"""Records encoded per batch (bounds the memory of a streamed day)."""


class SimRecord(NamedTuple):
    """One event ready for a log: append ``value`` to ``topic`` with ``key`` and timestamp
    ``time_ms``; ``delivery_ms`` is when it reached the server (pace replays by it)."""

    delivery_ms: int
    time_ms: int
    topic: str
    key: str
    type: str
    value: bytes


def encode_pings(sim: Simulation, rows: IntArray) -> list[bytes]:
    """The encoded ``GpsPinged`` of fixes ``rows`` of ``sim.pings`` (byte-identical to
    :func:`events.codec.encode` of :meth:`Simulation.ping_event`)."""
    if len(rows) == 0:
        return []
    p = sim.pings
    prefix = sim.id_prefix
    tech_text = [orjson.dumps(t)[1:-1] for t in sim.technicians.ids]
    techs = [tech_text[i] for i in p.tech[rows].tolist()]
    return encode_ping_columns(
        APP,
        [f"{prefix}{s:09d}".encode() for s in p.seq[rows].tolist()],
        p.time_ms[rows],
        techs,
        p.lat[rows],
        p.lon[rows],
        p.speed_mps[rows],
        p.heading_deg[rows],
        p.accuracy_m[rows],
    )


def records(sim: Simulation) -> Iterator[SimRecord]:
    """Every event of ``sim`` encoded, in delivery order (ties: generation order).

    Streams in batches of :data:`CHUNK`; the order and the bytes depend only on the
    simulation's parameters and graph.
    """
    order, delivery = sim.order()
    events = sim.event_list
    n_events = len(events)
    p = sim.pings
    tech_ids = sim.technicians.ids
    for start in range(0, len(order), CHUNK):
        index = order[start : start + CHUNK]
        when = delivery[start : start + CHUNK].tolist()
        rows = index[index >= n_events] - n_events
        pings = iter(encode_pings(sim, rows))
        ping_time = iter(p.time_ms[rows].tolist())
        ping_tech = iter(p.tech[rows].tolist())
        for i, at in zip(index.tolist(), when, strict=True):
            if i < n_events:
                event = events[i]
                yield SimRecord(
                    at, event.time, TOPIC_OF[event.type].name, event.key, event.type, encode(event)
                )
            else:
                yield SimRecord(
                    at,
                    next(ping_time),
                    GPS_TOPIC,
                    tech_ids[next(ping_tech)],
                    "GpsPinged",
                    next(pings),
                )


def encoded_lines(sim: Simulation) -> Iterator[tuple[int, bytes]]:
    """``(delivery_ms, encoded event)`` in delivery order (see :func:`records`)."""
    for record in records(sim):
        yield record.delivery_ms, record.value


def write_jsonl(
    events: Simulation | Iterable[tuple[int, Event]], path: str | os.PathLike[str]
) -> int:
    """Write one encoded event per line, in the given (delivery) order; returns the count.

    Given a :class:`Simulation`, uses the fast encoder; given ``(delivery_ms, event)`` pairs
    (e.g. a filtered :meth:`Simulation.iter_events`), encodes each with the codec.
    """
    lines: Iterable[bytes]
    if isinstance(events, Simulation):
        lines = (value for _, value in encoded_lines(events))
    else:
        lines = (encode(event) for _, event in events)
    count = 0
    with Path(path).open("wb") as out:
        batch: list[bytes] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= CHUNK:
                out.write(b"\n".join(batch) + b"\n")
                count += len(batch)
                batch.clear()
        if batch:
            out.write(b"\n".join(batch) + b"\n")
            count += len(batch)
    return count


def write_truth(
    truth: Simulation | Iterable[Mapping[str, Any]], path: str | os.PathLike[str]
) -> int:
    """Write the ground truth, one visit per line (keys: :data:`simulator.engine.TRUTH_FIELDS`);
    returns the count. Never mix this file into the log: it is what the pipeline must infer."""
    rows = truth.truth if isinstance(truth, Simulation) else truth
    count = 0
    with Path(path).open("wb") as out:
        for row in rows:
            out.write(orjson.dumps(dict(row)) + b"\n")
            count += 1
    return count
