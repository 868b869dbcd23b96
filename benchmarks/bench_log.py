"""Throughput of the two log adapters, with raw aiokafka as the anchor for the Kafka one.

Run by hand (not a test)::

    python benchmarks/bench_log.py [--records N] [--kafka-only | --embedded-only]

Workload: N records (default 200,000) of ~200-byte JSON values keyed by 500 technicians, appended
in batches of 5,000 and then read back partition by partition. Measured:

* EmbeddedLog append and read, against the targets (>= 200k/s append, >= 400k/s read);
* KafkaLog append and read against a tansu broker this script starts;
* raw aiokafka on the same broker in the same run: an idempotent producer's send loop with the
  futures awaited per batch, and an AIOKafkaConsumer getmany loop over all partitions. Producer
  and consumer use the same batch and fetch sizes as KafkaLog, so the ratios show the adapter's
  own overhead.

The generated records are moved out of the garbage collector's sight (``gc.freeze()``) before
anything is timed: hundreds of thousands of live fixture objects would otherwise make every
collection during the run slower, penalising whichever code allocates more, which says little
about a stage that holds a batch at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka import TopicPartition as KafkaTopicPartition

from streams import kafka as kafka_adapter
from streams.kafka import KafkaLog
from streams.log import Log, OutRecord, TopicSpec
from tests.streams.kafka_broker import start_broker

TECHNICIANS = 500
PARTITIONS = 12
BATCH = 5_000
EMBEDDED_APPEND_TARGET = 200_000
EMBEDDED_READ_TARGET = 400_000
BASE_MS = 1_700_000_000_000


def make_records(topic: str, count: int) -> list[OutRecord]:
    """``count`` location-update-like records, ~200 bytes each, over 500 technician keys."""
    records = []
    for i in range(count):
        tech = i % TECHNICIANS
        value = orjson.dumps(
            {
                "type": "technician_located",
                "technician_id": f"tech-{tech:04d}",
                "seq": i,
                "lat": 48.85 + (i % 997) * 1e-4,
                "lon": 2.35 + (i % 991) * 1e-4,
                "speed_mps": (i % 30) * 0.5,
                "heading_deg": i % 360,
                "recorded_at_ms": BASE_MS + i * 10,
                "source": "simulator",
                "accuracy_m": 5.0,
            }
        )
        records.append(
            OutRecord(topic, value, f"tech-{tech:04d}".encode(), timestamp_ms=BASE_MS + i * 10)
        )
    return records


FREEZE = True


def freeze_fixtures() -> None:
    """Exclude the objects alive now (the generated records) from later collections."""
    if FREEZE:
        gc.collect()
        gc.freeze()


def line(label: str, count: int, seconds: float, note: str = "") -> float:
    rate = count / seconds if seconds > 0 else float("inf")
    print(f"{label:<34} {count:>9,} records {seconds:>7.2f} s {rate:>12,.0f} events/s  {note}")
    return rate


async def timed(body: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    started = time.perf_counter()
    count = await body()
    return count, time.perf_counter() - started


async def append_in_batches(log: Log, records: Sequence[OutRecord]) -> int:
    for start in range(0, len(records), BATCH):
        await log.append(records[start : start + BATCH])
    return len(records)


async def read_everything(log: Log, topic: str) -> int:
    count = 0
    for partition in range(PARTITIONS):
        offset = 0
        while batch := await log.read(topic, partition, offset):
            count += len(batch)
            offset = batch[-1].offset + 1
    return count


async def bench_embedded(records_count: int) -> None:
    try:
        from streams.embedded import EmbeddedLog
    except ImportError as error:
        print(f"embedded: skipped, streams.embedded is not importable ({error})")
        return
    records = make_records("bench.embedded", records_count)
    freeze_fixtures()
    with tempfile.TemporaryDirectory(prefix="bench-log-") as directory:
        log = EmbeddedLog.open(directory)
        try:
            await log.create_topics([TopicSpec("bench.embedded", PARTITIONS)])
            count, seconds = await timed(lambda: append_in_batches(log, records))
            rate = line("EmbeddedLog append", count, seconds)
            verdict = "ok" if rate >= EMBEDDED_APPEND_TARGET else "BELOW TARGET"
            print(f"{'':<34} target >= {EMBEDDED_APPEND_TARGET:,}/s: {verdict}")
            count, seconds = await timed(lambda: read_everything(log, "bench.embedded"))
            assert count == records_count, f"read {count} of {records_count}"
            rate = line("EmbeddedLog read", count, seconds)
            verdict = "ok" if rate >= EMBEDDED_READ_TARGET else "BELOW TARGET"
            print(f"{'':<34} target >= {EMBEDDED_READ_TARGET:,}/s: {verdict}")
        finally:
            await log.close()


async def raw_append(bootstrap: str, records: Sequence[OutRecord]) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        max_batch_size=kafka_adapter._MAX_BATCH_BYTES,
    )
    await producer.start()
    try:
        for start in range(0, len(records), BATCH):
            futures = [
                await producer.send(r.topic, r.value, r.key, timestamp_ms=r.timestamp_ms)
                for r in records[start : start + BATCH]
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(records)


async def raw_read(bootstrap: str, topic: str, expected: int) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=kafka_adapter._MAX_PARTITION_FETCH_BYTES,
    )
    await consumer.start()
    try:
        consumer.assign([KafkaTopicPartition(topic, p) for p in range(PARTITIONS)])
        count = 0
        while count < expected:
            fetched = await consumer.getmany(timeout_ms=1_000, max_records=10_000)
            if not fetched:
                raise RuntimeError(f"raw consumer stalled after {count} of {expected} records")
            count += sum(len(messages) for messages in fetched.values())
    finally:
        await consumer.stop()
    return count


async def bench_kafka(records_count: int) -> None:
    broker = start_broker()
    try:
        log = await KafkaLog.connect(broker.bootstrap)
        try:
            await log.create_topics(
                [TopicSpec("bench.kafkalog", PARTITIONS), TopicSpec("bench.raw", PARTITIONS)]
            )
            via_log = make_records("bench.kafkalog", records_count)
            via_raw = make_records("bench.raw", records_count)
            freeze_fixtures()

            count, seconds = await timed(lambda: raw_append(broker.bootstrap, via_raw))
            raw_append_rate = line("raw aiokafka append", count, seconds)
            count, seconds = await timed(lambda: append_in_batches(log, via_log))
            log_append_rate = line("KafkaLog append", count, seconds)

            count, seconds = await timed(
                lambda: raw_read(broker.bootstrap, "bench.raw", records_count)
            )
            raw_read_rate = line("raw aiokafka read", count, seconds)
            count, seconds = await timed(lambda: read_everything(log, "bench.kafkalog"))
            assert count == records_count, f"read {count} of {records_count}"
            log_read_rate = line("KafkaLog read", count, seconds)

            print(f"KafkaLog/raw aiokafka append: {log_append_rate / raw_append_rate:.2f}")
            print(f"KafkaLog/raw aiokafka read:   {log_read_rate / raw_read_rate:.2f}")
        finally:
            await log.close()
    finally:
        broker.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--kafka-only", action="store_true")
    only.add_argument("--embedded-only", action="store_true")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave the generated records visible to the garbage collector (slower, noisier)",
    )
    args = parser.parse_args(argv)
    global FREEZE  # noqa: PLW0603 - a process-wide setting of this script
    FREEZE = not args.no_gc_freeze
    print(
        f"{args.records:,} records of ~{len(make_records('x', 1)[0].value)} bytes,"
        f" {TECHNICIANS} keys, {PARTITIONS} partitions, batches of {BATCH:,}"
    )
    if not args.kafka_only:
        asyncio.run(bench_embedded(args.records))
    if not args.embedded_only:
        asyncio.run(bench_kafka(args.records))


if __name__ == "__main__":
    main()
