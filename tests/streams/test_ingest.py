"""Ingest: good records land on their topics, every bad one lands on fs.dlq with its reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.catalog import DLQ, DLQ_FIELD, DLQ_MESSAGE, DLQ_RULE, DLQ_SOURCE, TOPIC_OF
from events.codec import MAX_EVENT_BYTES, encode
from events.kinds import INPUT_EVENTS, GpsPinged
from streams.bootstrap import open_log
from streams.config import Config
from streams.ingest import Ingestor, IngestReport, batched, read_lines
from streams.log import Log, Record
from tests.events.samples import SAMPLES, T0

GOOD = [s for s in SAMPLES if type(s) in INPUT_EVENTS]
NOW = T0 + 3_600_000


def _bad_lines() -> list[tuple[bytes, str, str]]:
    """(raw, rule, field) for every bad-input case of the issue."""
    ping = orjson.loads(encode(next(s for s in GOOD if isinstance(s, GpsPinged))))

    def variant(**changes: Any) -> bytes:
        doc = orjson.loads(orjson.dumps(ping))
        for path, value in changes.items():
            target = doc["data"] if path.startswith("data_") else doc
            name = path.removeprefix("data_")
            if value is ...:
                del target[name]
            else:
                target[name] = value
        return orjson.dumps(doc)

    return [
        (variant(data_lat=...), "missing", "data.lat"),
        (variant(data_lon="1.5"), "type", "data.lon"),
        (variant(data_lat=95.0), "range", "data.lat"),
        (variant(data_lon=-181.0), "range", "data.lon"),
        (variant(time="25/11/2026 14:05"), "time_format", "time"),
        (variant(time="2030-01-01T00:00:00Z"), "future", "time"),
        (variant(type="TechnicianBeamedUp"), "unknown_type", "type"),
        (variant(data_address="x" * MAX_EVENT_BYTES, type="GpsPinged"), "too_large", ""),
        (encode(GOOD[0]).replace(b"N\xc3\xbaria", b"N\xfaria"), "encoding", ""),
        (b"{not json", "json", ""),
        (encode(SAMPLES[-1]), "derived_type", "type"),
    ]


async def _everything(log: Log, topic: str) -> list[Record]:
    records = []
    for partition, end in (await log.end_offsets(topic)).items():
        offset = 0
        while offset < end:
            batch = await log.read(topic, partition, offset)
            records += batch
            offset = batch[-1].offset + 1
    return records


def _ingest(tmp_path: Path, lines: list[bytes], batch: int = 7) -> tuple[Any, dict[str, Any]]:
    async def main() -> tuple[Any, dict[str, Any]]:
        log = await open_log(Config(data_dir=tmp_path))
        try:
            ingestor = Ingestor(log, clock=lambda: NOW, source="test.jsonl")
            report = IngestReport()
            first = 1
            for chunk in batched(lines, batch):
                report.merge(await ingestor.ingest(chunk, first_line=first))
                first += len(chunk)
            topics = {name: await _everything(log, name) for name in await log.topics()}
            return report, topics
        finally:
            await log.close()

    return asyncio.run(main())


def test_every_bad_case_goes_to_the_dlq_with_its_reason_and_good_ones_are_delivered(
    tmp_path: Path,
) -> None:
    bad = _bad_lines()
    lines: list[bytes] = []
    for i, event in enumerate(GOOD):  # interleave good and bad
        lines.append(encode(event))
        if i < len(bad):
            lines.append(bad[i][0])
    lines += [raw for raw, _, _ in bad[len(GOOD) :]]
    report, topics = _ingest(tmp_path, lines)

    assert report.accepted == len(GOOD)
    assert report.rejected == len(bad)
    dead = topics[DLQ.name]
    assert [r.value for r in dead] == [raw for raw, _, _ in bad]
    for record, (_, rule, field) in zip(dead, bad, strict=True):
        headers = dict(record.headers)
        assert headers[DLQ_RULE].decode() == rule
        assert headers[DLQ_FIELD].decode() == field
        assert headers[DLQ_MESSAGE]
        assert headers[DLQ_SOURCE].startswith(b"test.jsonl:")
        if field:
            assert field in headers[DLQ_MESSAGE].decode()
    for event in GOOD:
        topic = TOPIC_OF[event.type].name
        matching = [r for r in topics[topic] if r.value == encode(event)]
        assert len(matching) == 1, f"{event.type} not delivered exactly once to {topic}"
        assert matching[0].key == event.key.encode()
        assert matching[0].timestamp_ms == event.time


def test_dead_letter_source_names_the_line(tmp_path: Path) -> None:
    lines = [encode(GOOD[0]), b"", b"oops", encode(GOOD[1])]
    report, topics = _ingest(tmp_path, lines, batch=2)
    assert report.blank == 1
    assert dict(topics[DLQ.name][0].headers)[DLQ_SOURCE] == b"test.jsonl:3"


@given(garbage=st.lists(st.binary(max_size=300), min_size=1, max_size=30))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_garbage_never_costs_a_good_record(tmp_path_factory: Any, garbage: list[bytes]) -> None:
    tmp = tmp_path_factory.mktemp("g")
    lines: list[bytes] = []
    for i, junk in enumerate(garbage):
        lines.append(junk.replace(b"\n", b" "))
        lines.append(encode(GOOD[i % len(GOOD)]))
    report, topics = _ingest(tmp, lines, batch=5)
    delivered = sum(len(v) for k, v in topics.items() if k != DLQ.name)
    assert delivered == report.accepted >= len(garbage)
    assert len(topics[DLQ.name]) == report.rejected
    assert report.accepted + report.rejected + report.blank == len(lines)
    for record in topics[DLQ.name]:
        assert dict(record.headers)[DLQ_RULE]


def test_read_lines_keeps_bytes_and_handles_crlf_and_chunk_boundaries() -> None:
    chunks = [b"ab", b"c\r\nde\n\xff", b"\xfe\nlast"]
    assert list(read_lines(chunks)) == [b"abc", b"de", b"\xff\xfe", b"last"]
