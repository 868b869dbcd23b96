"""KafkaLog against a real Kafka-protocol broker (tansu, started by the ``kafka_bootstrap``
fixture): the shared log contract, plus what only the Kafka adapter promises."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
)
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)

from streams.kafka import KafkaLog
from streams.log import Log, OutRecord, TopicSpec, UnknownTopicError
from tests.streams.contract import LogContract

pytestmark = pytest.mark.kafka


class TestKafkaLog(LogContract):
    bootstrap: str

    @pytest.fixture(autouse=True)
    def _broker(self, kafka_bootstrap: str) -> None:
        self.bootstrap = kafka_bootstrap

    async def open_log(self) -> Log:
        return await KafkaLog.connect(self.bootstrap)

    def with_kafka_log(self, body: Callable[[KafkaLog], Awaitable[None]]) -> None:
        """Like ``with_log``, with the adapter typed as KafkaLog for the Kafka-only tests."""

        async def main() -> None:
            log = await KafkaLog.connect(self.bootstrap)
            try:
                await body(log)
            finally:
                await log.close()

        asyncio.run(main())

    # -- Kafka-specific -----------------------------------------------------------------------

    def test_the_producer_is_idempotent(self) -> None:
        topic = self.unique("idem")

        async def body(log: KafkaLog) -> None:
            await log.create_topics([TopicSpec(topic, 1)])
            await log.append([OutRecord(topic, b"x", b"k")])
            producer = log._producer
            assert producer._txn_manager is not None, "enable_idempotence is off"
            assert log.producer_id is not None
            assert log.producer_id >= 0

        self.with_kafka_log(body)

    def test_topic_settings_become_topic_configs(self) -> None:
        compacted, plain = self.unique("compacted"), self.unique("plain")

        async def body(log: KafkaLog) -> None:
            await log.create_topics(
                [
                    TopicSpec(compacted, 2, compacted=True, retention_ms=86_400_000),
                    TopicSpec(plain, 1),
                ]
            )
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                [response] = await admin.describe_configs(
                    [
                        ConfigResource(ConfigResourceType.TOPIC, compacted),
                        ConfigResource(ConfigResourceType.TOPIC, plain),
                    ]
                )
            finally:
                await admin.close()
            configs = {
                name: {entry[0]: entry[1] for entry in entries}
                for _code, _message, _type, name, entries in response.resources
            }
            assert configs[compacted]["cleanup.policy"] == "compact"
            assert configs[compacted]["retention.ms"] == "86400000"
            assert configs[plain].get("cleanup.policy", "delete") == "delete"

        self.with_kafka_log(body)

    def test_a_record_is_readable_by_a_plain_aiokafka_consumer(self) -> None:
        topic = self.unique("plain")

        async def body(log: KafkaLog) -> None:
            await log.create_topics([TopicSpec(topic, 3)])
            [(partition, offset)] = await log.append(
                [
                    OutRecord(
                        topic,
                        b"value",
                        b"tech-7",
                        timestamp_ms=1_700_000_123_456,
                        headers=(("kind", b"assigned"), ("v", b"1")),
                    )
                ]
            )
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await consumer.start()
            try:
                tp = KafkaTopicPartition(topic, partition)
                consumer.assign([tp])
                consumer.seek(tp, offset)
                fetched = await consumer.getmany(tp, timeout_ms=10_000)
            finally:
                await consumer.stop()
            [message] = fetched[tp]
            assert (message.offset, message.key, message.value) == (offset, b"tech-7", b"value")
            assert message.timestamp == 1_700_000_123_456
            assert list(message.headers) == [("kind", b"assigned"), ("v", b"1")]

        self.with_kafka_log(body)

    def test_a_key_lands_where_aiokafkas_default_partitioner_puts_it(self) -> None:
        topic = self.unique("partitioner")
        keys = [f"tech-{i}".encode() for i in range(40)] + [b"", b"\x00", "técnico".encode()]

        async def body(log: KafkaLog) -> None:
            await log.create_topics([TopicSpec(topic, 7)])
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
            await producer.start()
            try:
                expected = [
                    (await producer.send_and_wait(topic, b"raw", k)).partition for k in keys
                ]
            finally:
                await producer.stop()
            positions = await log.append([OutRecord(topic, b"log", k) for k in keys])
            assert [partition for partition, _ in positions] == expected

        self.with_kafka_log(body)

    def test_end_offsets_count_every_record_of_the_last_batch(self) -> None:
        # tansu's ListOffsets(latest) answers "last batch base offset + 1"; a fresh adapter (no
        # cached ends) must still see all 25 records of a single batch.
        topic = self.unique("lastbatch")

        async def write(log: KafkaLog) -> None:
            await log.create_topics([TopicSpec(topic, 1)])
            await log.append([OutRecord(topic, b"%d" % i) for i in range(25)])

        async def check(log: KafkaLog) -> None:
            assert await log.end_offsets(topic) == {0: 25}
            assert [r.offset for r in await log.read(topic, 0, 20)] == [20, 21, 22, 23, 24]
            assert await log.offset_for_time(topic, 0, 2**62) == 25

        self.with_kafka_log(write)
        self.with_kafka_log(check)

    def test_unknown_topics_are_refused_and_not_created_on_the_way(self) -> None:
        # tansu creates a topic when a Metadata request names it; the adapter must not.
        missing = self.unique("missing")

        async def body(log: KafkaLog) -> None:
            with pytest.raises(UnknownTopicError):
                await log.append([OutRecord(missing, b"x", b"k")])
            with pytest.raises(UnknownTopicError):
                await log.read(missing, 0, 0)
            with pytest.raises(UnknownTopicError):
                await log.end_offsets(missing)
            assert missing not in await log.topics()

        self.with_kafka_log(body)

    def test_reads_at_the_end_return_at_once(self) -> None:
        topic = self.unique("tail")

        async def body(log: KafkaLog) -> None:
            await log.create_topics([TopicSpec(topic, 2)])
            await log.append([OutRecord(topic, b"x", partition=p) for p in (0, 1, 1)])
            started = time.monotonic()
            for _ in range(10):
                for partition, end in (await log.end_offsets(topic)).items():
                    assert len(await log.read(topic, partition, 0)) == end
                    assert await log.read(topic, partition, end) == []
            # A read that waited for a fetch to come back empty would take >= 100 ms each.
            assert time.monotonic() - started < 2.0

        self.with_kafka_log(body)

    def test_a_reader_at_the_end_sees_what_another_writer_appends(self) -> None:
        topic = self.unique("follow")

        async def main() -> None:
            reader, writer = (
                await KafkaLog.connect(self.bootstrap),
                await KafkaLog.connect(self.bootstrap),
            )
            try:
                await writer.create_topics([TopicSpec(topic, 2)])
                await writer.append([OutRecord(topic, b"a%d" % i, partition=1) for i in range(7)])
                assert len(await reader.read(topic, 1, 0)) == 7
                assert await reader.read(topic, 1, 7) == []
                assert await reader.read(topic, 0, 0) == []
                await writer.append([OutRecord(topic, b"b%d" % i, partition=1) for i in range(5)])
                await writer.append([OutRecord(topic, b"c", partition=0)])
                assert [r.value for r in await reader.read(topic, 1, 7)] == [
                    b"b%d" % i for i in range(5)
                ]
                assert [r.value for r in await reader.read(topic, 0, 0)] == [b"c"]
                # Going back is a seek, not a problem.
                assert [r.offset for r in await reader.read(topic, 1, 3, max_records=2)] == [3, 4]
                assert await reader.end_offsets(topic) == {0: 1, 1: 12}
            finally:
                await reader.close()
                await writer.close()

        asyncio.run(main())
