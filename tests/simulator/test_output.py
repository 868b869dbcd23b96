"""Encoding, writers, and a simulated day ingested into the embedded log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson

from eta_engine.roads import RoadGraph
from events import catalog
from events.codec import Rejection, encode, validate
from simulator import make_params, simulate
from simulator.engine import Simulation
from simulator.output import encoded_lines, records, write_jsonl, write_truth
from streams.embedded import EmbeddedLog
from streams.log import OutRecord, TopicSpec

Run = Callable[..., Simulation]


def test_fast_encoding_is_byte_identical_to_the_codec_and_every_event_validates(
    day: Simulation,
) -> None:
    encoded = list(records(day))
    assert len(encoded) == len(day)
    rejected = []
    for record, (delivery, event) in zip(encoded, day.iter_events(), strict=True):
        assert record.value == encode(event)
        assert record.delivery_ms == delivery
        assert record.type == event.type
        assert record.key == event.key
        assert record.time_ms == event.time
        assert record.topic == catalog.TOPIC_OF[event.type].name
        result = validate(record.value)
        if isinstance(result, Rejection):
            rejected.append(result)
        else:
            assert result == event
    assert rejected == []


def test_writers(day: Simulation, tmp_path: Path) -> None:
    events_path, truth_path = tmp_path / "day.jsonl", tmp_path / "truth.jsonl"
    assert write_jsonl(day, events_path) == len(day)
    lines = events_path.read_bytes().splitlines()
    assert lines == [value for _, value in encoded_lines(day)]
    again = tmp_path / "again.jsonl"
    assert write_jsonl(day.iter_events(), again) == len(day)
    assert again.read_bytes() == events_path.read_bytes()
    assert write_truth(day, truth_path) == len(day.truth)
    rows = [orjson.loads(line) for line in truth_path.read_bytes().splitlines()]
    assert rows == day.truth


def test_a_simulated_day_ingests_into_the_embedded_log(run: Run, tmp_path: Path) -> None:
    sim = run("sparse-gps", technicians=8, seed=2, hours=3.0)

    async def main() -> int:
        log = EmbeddedLog.open(tmp_path)
        try:
            await log.create_topics(
                [
                    TopicSpec(t.name, t.partitions, t.compacted, t.retention_ms)
                    for t in catalog.TOPICS
                ]
            )
            batch = [
                OutRecord(topic=r.topic, value=r.value, key=r.key.encode(), timestamp_ms=r.time_ms)
                for r in records(sim)
            ]
            await log.append(batch)
            total = 0
            for topic in catalog.TOPICS:
                total += sum((await log.end_offsets(topic.name)).values())
            gps = sum((await log.end_offsets(catalog.GPS.name)).values())
            assert gps == sim.n_pings
            return total
        finally:
            await log.close()

    assert asyncio.run(main()) == len(sim)


def test_every_event_is_delivered_at_or_after_its_time(day: Simulation) -> None:
    # An ingest clocked by delivery time therefore never sees an event from the future.
    assert all(r.delivery_ms >= r.time_ms for r in records(day))
    first = next(records(day))
    assert first.type == "TechnicianRegistered"
    assert first.time_ms == day.params.log_start_ms


def test_progress_is_reported_monotonically_up_to_one(run: Run, graph: RoadGraph) -> None:
    seen: list[float] = []
    sim = simulate(make_params("normal", technicians=30, seed=3, hours=6.0), graph, seen.append)
    assert seen and seen[-1] == 1.0
    assert seen == sorted(seen) and all(0.0 <= s <= 1.0 for s in seen)
    again = run("normal", technicians=30, seed=3, hours=6.0)
    assert [r.value for r in records(sim)] == [r.value for r in records(again)]
