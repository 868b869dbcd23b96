"""The contract every log adapter keeps, as one abstract test case.

An adapter's test module subclasses :class:`LogContract` and implements :meth:`open_log`; the
tests then run against that adapter unchanged. Every test uses topics and groups with a unique
prefix, so they need no clean-up and do not see each other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from streams.log import Log, OutRecord, TopicPartition, TopicSpec, UnknownTopicError
from streams.partitioner import partition_for

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class LogContract:
    """Subclass and implement :meth:`open_log` (a fresh, connected adapter)."""

    async def open_log(self) -> Log:
        raise NotImplementedError

    def unique(self, name: str) -> str:
        return f"t{uuid.uuid4().hex[:10]}.{name}"

    def with_log(self, body: Callable[[Log], Awaitable[T]]) -> T:
        async def main() -> T:
            log = await self.open_log()
            try:
                return await body(log)
            finally:
                await log.close()

        return asyncio.run(main())

    # -- topics -------------------------------------------------------------------------------

    def test_create_topics_is_idempotent_and_listed(self) -> None:
        a, b = self.unique("a"), self.unique("b")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(a, 3), TopicSpec(b, 1, compacted=True)])
            await log.create_topics([TopicSpec(a, 3)])
            topics = await log.topics()
            assert topics[a] == 3
            assert topics[b] == 1
            assert await log.end_offsets(a) == {0: 0, 1: 0, 2: 0}

        self.with_log(body)

    def test_append_to_unknown_topic_is_refused(self) -> None:
        async def body(log: Log) -> None:
            with pytest.raises(UnknownTopicError):
                await log.append([OutRecord(self.unique("missing"), b"x", b"k")])

        self.with_log(body)

    # -- append and read ----------------------------------------------------------------------

    def test_records_round_trip_in_order_with_key_timestamp_and_headers(self) -> None:
        topic = self.unique("rt")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 1)])
            out = [
                OutRecord(
                    topic,
                    value=b"v%d" % i,
                    key=b"k%d" % (i % 3),
                    timestamp_ms=1_700_000_000_000 + i,
                    headers=(("h", b"%d" % i),),
                )
                for i in range(50)
            ]
            out.append(OutRecord(topic, value=b"", key=None, timestamp_ms=1_700_000_001_000))
            out.append(OutRecord(topic, value=bytes(range(256)), key=b"\x00\xff"))
            positions = await log.append(out)
            assert positions == [(0, i) for i in range(52)]
            got = await log.read(topic, 0, 0)
            assert [r.offset for r in got] == list(range(52))
            assert [r.value for r in got] == [r.value for r in out]
            assert [r.key for r in got] == [r.key for r in out]
            assert [r.timestamp_ms for r in got[:51]] == [r.timestamp_ms for r in out[:51]]
            assert [r.headers for r in got[:50]] == [r.headers for r in out[:50]]
            assert all(r.topic == topic and r.partition == 0 for r in got)

        self.with_log(body)

    def test_keyed_records_land_where_kafkas_partitioner_puts_them(self) -> None:
        topic = self.unique("keyed")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 6)])
            keys = [f"tech-{i}".encode() for i in range(60)]
            positions = await log.append([OutRecord(topic, b"v", k) for k in keys])
            for key, (partition, _) in zip(keys, positions, strict=True):
                assert partition == partition_for(key, 6)
            ends = await log.end_offsets(topic)
            assert sum(ends.values()) == 60
            for key in keys:
                records = await log.read(topic, partition_for(key, 6), 0)
                assert key in {r.key for r in records}

        self.with_log(body)

    def test_explicit_partition_is_honoured(self) -> None:
        topic = self.unique("explicit")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 4)])
            positions = await log.append(
                [OutRecord(topic, b"x", b"same", partition=p) for p in (3, 1, 3)]
            )
            assert positions == [(3, 0), (1, 0), (3, 1)]
            assert await log.end_offsets(topic) == {0: 0, 1: 1, 2: 0, 3: 2}

        self.with_log(body)

    def test_a_batch_may_span_topics_and_offsets_continue(self) -> None:
        a, b = self.unique("a"), self.unique("b")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(a, 1), TopicSpec(b, 1)])
            first = await log.append([OutRecord(a, b"1"), OutRecord(b, b"2"), OutRecord(a, b"3")])
            assert first == [(0, 0), (0, 0), (0, 1)]
            second = await log.append([OutRecord(a, b"4")])
            assert second == [(0, 2)]
            assert [r.value for r in await log.read(a, 0, 0)] == [b"1", b"3", b"4"]
            assert [r.value for r in await log.read(b, 0, 0)] == [b"2"]

        self.with_log(body)

    def test_read_from_an_offset_with_a_limit_and_at_the_end(self) -> None:
        topic = self.unique("paged")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 1)])
            await log.append([OutRecord(topic, b"%d" % i) for i in range(100)])
            page = await log.read(topic, 0, 40, max_records=25)
            assert [r.offset for r in page] == list(range(40, 65))
            assert [r.value for r in page] == [b"%d" % i for i in range(40, 65)]
            assert await log.read(topic, 0, 100) == []
            everything: list[int] = []
            offset = 0
            while batch := await log.read(topic, 0, offset, max_records=30):
                everything += [r.offset for r in batch]
                offset = batch[-1].offset + 1
            assert everything == list(range(100))

        self.with_log(body)

    def test_columns_read_what_records_read(self) -> None:
        topic = self.unique("columns")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 2)])
            await log.append(
                [
                    OutRecord(topic, b"v%d" % i, None if i % 7 == 0 else b"k%d" % i, 1_000 + i)
                    for i in range(60)
                ]
            )
            for partition in (0, 1):
                rows = await log.read(topic, partition, 3, max_records=20)
                columns = await log.read_columns(topic, partition, 3, max_records=20)
                assert len(columns) == len(rows) > 0
                assert (columns.topic, columns.partition) == (topic, partition)
                assert columns.offsets.tolist() == [r.offset for r in rows]
                assert columns.timestamps.tolist() == [r.timestamp_ms for r in rows]
                assert columns.keys == [r.key for r in rows]
                assert columns.values == [r.value for r in rows]
            end = (await log.end_offsets(topic))[0]
            assert len(await log.read_columns(topic, 0, end)) == 0

        self.with_log(body)

    def test_a_large_batch_round_trips(self) -> None:
        topic = self.unique("large")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 2)])
            out = [OutRecord(topic, b"%08d" % i, b"k%d" % (i % 97)) for i in range(20_000)]
            await log.append(out)
            ends = await log.end_offsets(topic)
            assert sum(ends.values()) == 20_000
            seen: list[bytes] = []
            for partition, end in ends.items():
                offset = 0
                while offset < end:
                    batch = await log.read(topic, partition, offset)
                    assert batch, "read stalled before the end offset"
                    seen += [r.value for r in batch]
                    offset = batch[-1].offset + 1
            assert sorted(seen) == sorted(r.value for r in out)

        self.with_log(body)

    # -- time ---------------------------------------------------------------------------------

    def test_offset_for_time_finds_the_first_record_at_or_after(self) -> None:
        topic = self.unique("time")
        base = 1_700_000_000_000

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 1)])
            # Out of order on purpose: the answer is the first *offset* whose time is >= t.
            stamps = [base + s * 1000 for s in (0, 10, 5, 20, 15, 30)]
            await log.append([OutRecord(topic, b"x", timestamp_ms=t) for t in stamps])
            assert await log.offset_for_time(topic, 0, base - 1) == 0
            assert await log.offset_for_time(topic, 0, base) == 0
            assert await log.offset_for_time(topic, 0, base + 1) == 1
            assert await log.offset_for_time(topic, 0, base + 12_000) == 3
            assert await log.offset_for_time(topic, 0, base + 30_000) == 5
            assert await log.offset_for_time(topic, 0, base + 31_000) == 6

        self.with_log(body)

    # -- consumer groups ----------------------------------------------------------------------

    def test_group_positions_commit_and_are_independent(self) -> None:
        topic = self.unique("groups")
        g1, g2 = self.unique("g1"), self.unique("g2")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 2)])
            await log.append([OutRecord(topic, b"x", partition=p) for p in (0, 0, 1)])
            tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
            assert await log.committed(g1, [tp0, tp1]) == {tp0: None, tp1: None}
            await log.commit(g1, {tp0: 2})
            await log.commit(g2, {tp1: 1})
            assert await log.committed(g1, [tp0, tp1]) == {tp0: 2, tp1: None}
            assert await log.committed(g2, [tp0, tp1]) == {tp0: None, tp1: 1}
            await log.commit(g1, {tp0: 1, tp1: 1})
            assert await log.committed(g1, [tp0, tp1]) == {tp0: 1, tp1: 1}

        self.with_log(body)

    def test_positions_survive_reopening(self) -> None:
        topic = self.unique("reopen")
        group = self.unique("g")
        tp = TopicPartition(topic, 0)

        async def write(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 1)])
            await log.append([OutRecord(topic, b"%d" % i) for i in range(10)])
            await log.commit(group, {tp: 7})

        async def check(log: Log) -> None:
            assert (await log.committed(group, [tp]))[tp] == 7
            assert [r.value for r in await log.read(topic, 0, 7)] == [b"7", b"8", b"9"]

        self.with_log(write)
        self.with_log(check)

    def test_a_record_without_a_timestamp_gets_the_append_time(self) -> None:
        import time

        topic = self.unique("stamp")

        async def body(log: Log) -> None:
            await log.create_topics([TopicSpec(topic, 1)])
            before = time.time_ns() // 1_000_000
            await log.append([OutRecord(topic, b"x")])
            after = time.time_ns() // 1_000_000
            (record,) = await log.read(topic, 0, 0)
            assert before - 1000 <= record.timestamp_ms <= after + 1000

        self.with_log(body)
