"""The Kafka adapter of the log port: aiokafka against any Kafka-protocol broker.

:class:`KafkaLog` keeps the contract of :class:`streams.log.Log` (checked by
tests/streams/contract.py) on real Apache Kafka and on tansu, the Kafka-protocol broker the
test-suite starts. Where tansu deviates from Kafka the adapter works around it in a way that is
still correct (and at worst one round trip slower) on Kafka; each work-around says so where it
lives. The deviations, as of tansu 0.6.0:

* InitProducerId v0 fails with UnknownError, so an idempotent producer cannot start;
  :func:`_teach_aiokafka_init_producer_id_v3` lets aiokafka speak v3.
* ListOffsets(latest) answers "base offset of the last record batch + 1" rather than the high
  watermark, so the adapter takes end offsets from a Fetch response instead
  (:meth:`KafkaLog._refresh_ends`). That Fetch uses a 1 ms max wait, because tansu answers a
  Fetch with a max wait of 0 with no partitions at all.
* ListOffsets(timestamp) ignores the timestamp and answers offset 0, so
  :meth:`KafkaLog.offset_for_time` treats the broker's answer as a lower bound and scans.
* A Metadata request naming an unknown topic creates it (aiokafka always allows auto-creation),
  so every topic is checked against the full topic list before a producer or consumer is
  pointed at it; otherwise appending to a missing topic would silently create it.

Records appended with neither a key nor a partition go to partition 0, as in the embedded
adapter, so both modes place every record identically. A ``timestamp_ms`` of None (the
:class:`~streams.log.OutRecord` default) means "now": the producer stamps the wall clock.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
)
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.protocol import transaction as _transaction  # type: ignore[import-untyped]
from aiokafka.protocol.api import RequestStruct, Response  # type: ignore[import-untyped]
from aiokafka.protocol.fetch import FetchRequest  # type: ignore[import-untyped]
from aiokafka.protocol.types import (  # type: ignore[import-untyped]
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

from streams.log import (
    BatchMark,
    Log,
    OutRecord,
    Record,
    TopicPartition,
    TopicSpec,
    UnknownTopicError,
)
from streams.partitioner import partition_for

__all__ = ["KafkaLog"]

# Producer batches: large enough that a 5,000-record append is a handful of requests per
# partition (aiokafka's 16 KiB default makes it hundreds), small enough to stay under the
# brokers' default 1 MiB message.max.bytes.
_MAX_BATCH_BYTES: Final = 512 * 1024
_MAX_PARTITION_FETCH_BYTES: Final = 4 * 1024 * 1024
# Upper bound on a broker-side long poll. The reader pauses exhausted partitions, so long polls
# are rare; this caps the stall of a seek that has to wait behind one.
_FETCH_MAX_WAIT_MS: Final = 100
# One getmany() wait, and the total a read waits for records known to exist.
_GETMANY_TIMEOUT_MS: Final = 1_000
_READ_DEADLINE_S: Final = 30.0
_TOPIC_WAIT_S: Final = 15.0
_PROBE_ATTEMPTS: Final = 3


# -- tansu compatibility: InitProducerId v3 -------------------------------------------------------


class _InitProducerIdResponseV3(Response):  # type: ignore[misc]
    API_KEY = 22
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class _InitProducerIdRequestV3(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 22
    API_VERSION = 3
    RESPONSE_TYPE = _InitProducerIdResponseV3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("transaction_timeout_ms", Int32),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


def _teach_aiokafka_init_producer_id_v3() -> None:
    """Let aiokafka send InitProducerId v3 (flexible) as well as v0; idempotent.

    Why: aiokafka 0.14 only implements InitProducerId v0, the request an idempotent producer
    sends at start-up to obtain its producer id. tansu answers v0 with UnknownError
    ("producer=None epoch=None"), so ``enable_idempotence=True`` cannot start against it. v3 is
    the first flexible version and has the same fields plus the current producer id/epoch, which
    a new producer sends as -1/-1.

    aiokafka picks, per connection, the highest request version that both it and the broker
    support (from the ApiVersions handshake), so after this a broker that supports v3 (Kafka
    2.5+, tansu) gets v3 and an older one still gets v0. Nothing else changes: the v3 response
    carries the same producer id and epoch fields the producer reads from v0.
    """
    request_cls: Any = _transaction.InitProducerIdRequest
    if _InitProducerIdRequestV3 in request_cls._CLASSES:
        return
    build_v0 = request_cls.build

    def build(self: Any, request_struct_class: type[Any]) -> Any:
        if request_struct_class is _InitProducerIdRequestV3:
            return _InitProducerIdRequestV3(
                self._transactional_id, self._transaction_timeout_ms, -1, -1, {}
            )
        return build_v0(self, request_struct_class)

    request_cls._CLASSES = (_transaction.InitProducerIdRequest_v0, _InitProducerIdRequestV3)
    request_cls.build = build


# -- the adapter ----------------------------------------------------------------------------------


def _to_records(topic: str, partition: int, messages: Sequence[Any]) -> list[Record]:
    """aiokafka ConsumerRecords of one partition as port :class:`Record` objects.

    A null value or header value (possible only for records written by other clients) reads back
    as ``b""``, since the port's records always carry bytes. (A hot loop: one partition's topic
    and number are passed in rather than read from every message.)
    """
    records: list[Record] = []
    append = records.append
    for message in messages:
        value = message.value
        headers = message.headers
        append(
            Record(
                topic,
                partition,
                message.offset,
                message.timestamp,
                message.key,
                b"" if value is None else value,
                tuple((name, v or b"") for name, v in headers) if headers else (),
            )
        )
    return records


def _observe(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _topic_configs(spec: TopicSpec) -> dict[str, str]:
    # Only what the spec asks for; everything else keeps the broker's defaults.
    configs: dict[str, str] = {}
    if spec.compacted:
        configs["cleanup.policy"] = "compact"
    if spec.retention_ms is not None:
        configs["retention.ms"] = str(spec.retention_ms)
    return configs


class KafkaLog(Log):
    """The log port over aiokafka. Create it with :meth:`connect`; :meth:`close` it when done.

    One instance holds an idempotent producer (``acks="all"``), one group-less consumer for
    reads, an admin client, a metadata client and, lazily, one consumer per consumer group that
    commits. Like every :class:`~streams.log.Log`, it is not safe for concurrent use by several
    tasks.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        client_id: str,
        replication_factor: int,
        producer: Any,
        reader: Any,
        admin: Any,
        meta: Any,
    ) -> None:
        """Use :meth:`connect`, which starts the clients this takes."""
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._replication_factor = replication_factor
        self._producer = producer
        self._reader = reader
        self._admin = admin
        self._meta = meta
        self._cluster: Any = meta.cluster
        # topic -> partition count, refreshed from the full topic list on a miss.
        self._partitions: dict[str, int] = {}
        # Lower bounds of each partition's end offset: from our appends, from the high
        # watermarks fetches report, and from explicit refreshes. read() trusts them to decide
        # that records exist without asking the broker.
        self._ends: dict[KafkaTopicPartition, int] = {}
        # The reader's assignment, where we left each partition, and which ones are paused.
        self._assigned: set[KafkaTopicPartition] = set()
        self._positions: dict[KafkaTopicPartition, int] = {}
        self._paused: set[KafkaTopicPartition] = set()
        self._groups: dict[str, Any] = {}
        self._group_assignments: dict[str, set[KafkaTopicPartition]] = {}
        self._closed = False

    @classmethod
    async def connect(
        cls, bootstrap: str, client_id: str = "fieldstream", *, replication_factor: int = 1
    ) -> KafkaLog:
        """Connect to the cluster at ``bootstrap`` ("host:port[,host:port...]").

        ``replication_factor`` is used for the topics :meth:`create_topics` creates.
        """
        _teach_aiokafka_init_producer_id_v3()
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            max_batch_size=_MAX_BATCH_BYTES,
        )
        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
            max_partition_fetch_bytes=_MAX_PARTITION_FETCH_BYTES,
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id)
        meta = AIOKafkaClient(bootstrap_servers=bootstrap, client_id=client_id)
        starts = [producer.start(), reader.start(), admin.start(), meta.bootstrap()]
        results = await asyncio.gather(*starts, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await asyncio.gather(
                producer.stop(), reader.stop(), admin.close(), meta.close(), return_exceptions=True
            )
            raise failure
        return cls(
            bootstrap=bootstrap,
            client_id=client_id,
            replication_factor=replication_factor,
            producer=producer,
            reader=reader,
            admin=admin,
            meta=meta,
        )

    @property
    def producer_id(self) -> int | None:
        """The idempotent producer's broker-assigned id (None before the broker assigned one)."""
        manager = self._producer._txn_manager
        if manager is None or manager.producer_id < 0:
            return None
        return int(manager.producer_id)

    # -- topics -----------------------------------------------------------------------------------

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the missing topics and return once the cluster's metadata lists every one.

        A topic that already exists is left as it is, whatever its settings.
        """
        if not specs:
            return
        for spec in specs:
            if spec.partitions < 1:
                raise ValueError(f"topic {spec.name!r} needs at least one partition")
        existing = await self.topics()
        wanted = {spec.name: spec for spec in specs if spec.name not in existing}
        if wanted:
            response = await self._admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        self._replication_factor,
                        topic_configs=_topic_configs(spec),
                    )
                    for spec in wanted.values()
                ]
            )
            for topic, error_code, *rest in response.topic_errors:
                # Already existing is fine: another client may have created it meanwhile.
                if error_code in (0, TopicAlreadyExistsError.errno):
                    continue
                detail = rest[0] if rest and rest[0] else ""
                raise for_code(error_code)(f"creating topic {topic!r}: {detail}")
        await self._wait_for_topics({spec.name for spec in specs})

    async def _wait_for_topics(self, names: set[str]) -> None:
        # CreateTopics may return before every broker's metadata has the topic; the producer and
        # consumers need it there, so wait until the topic list shows all of them.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _TOPIC_WAIT_S
        while True:
            missing = names - (await self.topics()).keys()
            if not missing:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"topics not visible in metadata: {sorted(missing)}")
            await asyncio.sleep(0.05)

    async def topics(self) -> dict[str, int]:
        """Every non-internal topic with its partition count (one Metadata round trip)."""
        # An all-topics Metadata request: unlike one naming topics, it never auto-creates.
        self._cluster = await self._meta.fetch_all_metadata()
        self._partitions = {
            topic: len(self._cluster.partitions_for_topic(topic) or ())
            for topic in self._cluster.topics()
        }
        return dict(self._partitions)

    async def _partition_counts(self, names: Iterable[str]) -> dict[str, int]:
        """Partition counts of ``names``; :class:`UnknownTopicError` for one that does not exist.

        Served from the cache when possible; a miss refreshes the topic list once.
        """
        names = set(names)
        if not names <= self._partitions.keys():
            await self.topics()
            for name in names:
                if name not in self._partitions:
                    raise UnknownTopicError(name)
        return {name: self._partitions[name] for name in names}

    async def _check_partition(self, topic: str, partition: int) -> KafkaTopicPartition:
        count = (await self._partition_counts([topic]))[topic]
        if not 0 <= partition < count:
            raise ValueError(f"topic {topic!r} has no partition {partition} (it has {count})")
        return KafkaTopicPartition(topic, partition)

    # -- append -----------------------------------------------------------------------------------

    async def sync(self) -> None:
        """Nothing to wait for: every append returned once the brokers acknowledged it."""

    async def append(
        self,
        records: Sequence[OutRecord],
        *,
        durable: bool = True,
        mark: BatchMark | None = None,
    ) -> list[tuple[int, int]]:
        """Send every record through the idempotent producer and wait for every acknowledgement.

        Raises :class:`UnknownTopicError` before sending anything if a topic does not exist, and
        ``ValueError`` if an explicit partition is out of range. The returned offsets are the
        broker's; records of one partition get increasing offsets in the order given. Every
        append is as durable as the topic's replication makes it once acknowledged, so
        ``durable`` changes nothing here; no marks are kept (``mark`` is ignored).
        """
        if not records:
            return []
        counts = await self._partition_counts({record.topic for record in records})
        partitions: list[int] = []
        for record in records:
            count = counts[record.topic]
            if record.partition is not None:
                if not 0 <= record.partition < count:
                    raise ValueError(
                        f"topic {record.topic!r} has no partition {record.partition}"
                        f" (it has {count})"
                    )
                partitions.append(record.partition)
            elif record.key is not None:
                partitions.append(partition_for(record.key, count))
            else:
                partitions.append(0)

        send = self._producer.send
        futures: list[asyncio.Future[Any]] = []
        try:
            for record, partition in zip(records, partitions, strict=True):
                futures.append(
                    await send(
                        record.topic,
                        record.value,
                        record.key,
                        partition,
                        record.timestamp_ms,
                        # aiokafka's C record builder accepts only a list here.
                        list(record.headers) if record.headers else None,
                    )
                )
            acknowledged = await asyncio.gather(*futures)
        except BaseException:
            # Sends already queued still complete (or fail) in the background; observe their
            # outcome so a failure is not reported again as "exception never retrieved".
            for future in futures:
                future.add_done_callback(_observe)
            raise

        ends = self._ends
        positions: list[tuple[int, int]] = []
        for record, metadata in zip(records, acknowledged, strict=True):
            positions.append((metadata.partition, metadata.offset))
            tp = KafkaTopicPartition(record.topic, metadata.partition)
            if metadata.offset >= ends.get(tp, 0):
                ends[tp] = metadata.offset + 1
        return positions

    # -- read -------------------------------------------------------------------------------------

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 10_000
    ) -> list[Record]:
        """Up to ``max_records`` records from ``offset`` on; ``[]`` at the end, without waiting.

        Usually returns what one fetch brought (up to a few MiB), so a read may return fewer
        records than are available; keep reading from the next offset. An offset below the
        partition's first retained record reads from the first retained record.
        """
        tp = await self._check_partition(topic, partition)
        if max_records < 1:
            return []
        # Decide "end of partition" from the end offset, never by waiting for a fetch to come
        # back empty: a fetch at the end is a long poll.
        if offset >= self._ends.get(tp, 0):
            await self._refresh_ends([tp])
            if offset >= self._ends[tp]:
                return []

        reader = self._reader
        self._assign(tp)
        if tp in self._paused:
            reader.resume(tp)
            self._paused.discard(tp)
        if self._positions.get(tp) != offset:
            reader.seek(tp, offset)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + _READ_DEADLINE_S
        while True:
            fetched = await reader.getmany(
                tp, timeout_ms=_GETMANY_TIMEOUT_MS, max_records=max_records
            )
            messages = fetched.get(tp)
            if messages:
                break
            if loop.time() > deadline:
                raise TimeoutError(
                    f"no records from {topic}[{partition}] at offset {offset} although its end"
                    f" offset is {self._ends[tp]}"
                )

        highwater = reader.highwater(tp)
        if highwater is not None and highwater > self._ends[tp]:
            self._ends[tp] = highwater
        next_offset = messages[-1].offset + 1
        if next_offset >= self._ends[tp]:
            # Exhausted: pause it before yielding to the event loop, so the fetcher does not
            # start a long poll on it. A long poll in flight delays every later fetch to that
            # broker, including the one the next read() needs after a seek.
            reader.pause(tp)
            self._paused.add(tp)
        self._positions[tp] = await reader.position(tp)
        return _to_records(topic, partition, messages)

    def _assign(self, tp: KafkaTopicPartition) -> None:
        """Make sure the reader is assigned ``tp``, keeping the other partitions' positions."""
        if tp in self._assigned:
            return
        reader = self._reader
        self._assigned.add(tp)
        # assign() replaces the assignment and forgets positions and pauses; put them back, and
        # pause the partitions not being read so their prefetch does not compete with tp's.
        reader.assign(list(self._assigned))
        others = [other for other in self._assigned if other != tp]
        for other in others:
            position = self._positions.get(other)
            if position is not None:
                reader.seek(other, position)
        self._paused = set(others)
        if others:
            reader.pause(*others)
        self._positions.pop(tp, None)

    # -- offsets ----------------------------------------------------------------------------------

    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The first offset whose timestamp is >= ``timestamp_ms``, else the end offset.

        The broker's ListOffsets(timestamp) answer is used as a lower bound and the partition is
        scanned forward from it to the first record at or after ``timestamp_ms``. On Kafka the
        answer is exact and the scan stops at its first record (one fetch); tansu ignores the
        timestamp and answers 0, so there the scan reads the partition from its start up to the
        answer (or to the end when there is none).
        """
        tp = await self._check_partition(topic, partition)
        answers = await self._reader.offsets_for_times({tp: max(timestamp_ms, 0)})
        end = (await self._refresh_ends([tp]))[tp]
        answer = answers.get(tp)
        if answer is None:
            return end
        offset = min(int(answer.offset), end)
        while batch := await self.read(topic, partition, offset):
            for record in batch:
                if record.timestamp_ms >= timestamp_ms:
                    return record.offset
            offset = batch[-1].offset + 1
        return offset

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """For each partition, the offset the next record will get (the high watermark)."""
        count = (await self._partition_counts([topic]))[topic]
        ends = await self._refresh_ends([KafkaTopicPartition(topic, p) for p in range(count)])
        return {tp.partition: end for tp, end in ends.items()}

    async def _refresh_ends(
        self, tps: Sequence[KafkaTopicPartition]
    ) -> dict[KafkaTopicPartition, int]:
        """Ask the brokers for the end offsets of ``tps``, update the cache and return them.

        ListOffsets(latest) alone is not enough: tansu answers it with the last record batch's
        base offset + 1, which undercounts whenever that batch holds several records. A Fetch
        response carries the true high watermark, so fetch at the ListOffsets answer with
        min_bytes 0 and a 1 ms max_wait: it returns at once, moves at most the tail of the last
        batch on tansu, and nothing on Kafka (where the answer already is the high watermark).
        """
        listed = await self._reader.end_offsets(list(tps))
        watermarks = await self._fetch_high_watermarks({tp: int(listed[tp]) for tp in tps})
        ends: dict[KafkaTopicPartition, int] = {}
        for tp in tps:
            end = max(int(listed[tp]), watermarks[tp], self._ends.get(tp, 0))
            self._ends[tp] = ends[tp] = end
        return ends

    async def _fetch_high_watermarks(
        self, offsets: Mapping[KafkaTopicPartition, int]
    ) -> dict[KafkaTopicPartition, int]:
        """The high watermark of each partition, from a non-waiting Fetch at the given offset."""
        for attempt in range(_PROBE_ATTEMPTS):
            try:
                return await self._fetch_high_watermarks_once(offsets)
            except KafkaError as error:
                # Stale leadership or a connection blip: refresh metadata and try again.
                if not error.retriable or attempt == _PROBE_ATTEMPTS - 1:
                    raise
                self._cluster = await self._meta.fetch_all_metadata()
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _fetch_high_watermarks_once(
        self, offsets: Mapping[KafkaTopicPartition, int]
    ) -> dict[KafkaTopicPartition, int]:
        by_leader: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for tp, offset in offsets.items():
            leader = self._cluster.leader_for_partition(tp)
            if leader is None or leader < 0:
                self._cluster = await self._meta.fetch_all_metadata()
                leader = self._cluster.leader_for_partition(tp)
                if leader is None or leader < 0:
                    raise KafkaError(f"no leader known for {tp.topic}[{tp.partition}]")
            # Per-partition max_bytes of 1: the broker still returns one whole batch if one
            # starts there (it must, to make progress), but no more.
            by_leader[leader][tp.topic].append((tp.partition, offset, 1))

        async def probe(node_id: int, topics: dict[str, list[tuple[int, int, int]]]) -> Any:
            request = FetchRequest(
                # max_wait_time: 1 ms, not 0. Nothing to wait for with min_bytes 0, but tansu
                # answers a max_wait of 0 with an empty response (no partitions at all).
                1,
                0,  # min_bytes
                _MAX_PARTITION_FETCH_BYTES,
                0,  # isolation level: read_uncommitted, like the reader
                list(topics.items()),
            )
            return await self._meta.send(node_id, request)

        responses = await asyncio.gather(
            *(probe(node_id, topics) for node_id, topics in by_leader.items())
        )
        watermarks: dict[KafkaTopicPartition, int] = {}
        for response in responses:
            for topic, partitions in response.topics:
                for partition, error_code, highwater, *_ in partitions:
                    if error_code:
                        raise for_code(error_code)(
                            f"fetching the high watermark of {topic}[{partition}]"
                        )
                    watermarks[KafkaTopicPartition(topic, partition)] = int(highwater)
        missing = offsets.keys() - watermarks.keys()
        if missing:
            raise KafkaError(f"no high watermark returned for {sorted(missing)}")
        return watermarks

    # -- consumer groups --------------------------------------------------------------------------

    async def _group(self, group: str) -> Any:
        """The consumer that stores ``group``'s offsets. It never joins the group (no subscribe),
        so it commits as a stand-alone member and triggers no rebalance."""
        consumer = self._groups.get(group)
        if consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            self._groups[group] = consumer
            self._group_assignments[group] = set()
        return consumer

    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Store ``group``'s next offset to read for each partition given.

        Raises :class:`UnknownTopicError` for a topic that does not exist (on tansu, pointing a
        consumer at it would create it).
        """
        if not offsets:
            return
        for tp in offsets:
            await self._check_partition(tp.topic, tp.partition)
        consumer = await self._group(group)
        wanted = {KafkaTopicPartition(tp.topic, tp.partition): int(o) for tp, o in offsets.items()}
        assigned = self._group_assignments[group]
        if not wanted.keys() <= assigned:
            # aiokafka commits only for assigned partitions. The assignment is manual (no group
            # membership) and paused, so this consumer never fetches records.
            assigned |= wanted.keys()
            consumer.assign(list(assigned))
            consumer.pause(*assigned)
        await consumer.commit(wanted)

    async def committed(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """``group``'s stored position for each partition; ``None`` where it has none."""
        if not partitions:
            return {}
        consumer = await self._group(group)
        keys = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        values = await asyncio.gather(
            *(consumer.committed(KafkaTopicPartition(tp.topic, tp.partition)) for tp in keys)
        )
        return {
            tp: None if value is None else int(value)
            for tp, value in zip(keys, values, strict=True)
        }

    # -- lifecycle --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Flush nothing further, stop every client; idempotent."""
        if self._closed:
            return
        self._closed = True
        stops = [
            self._producer.stop(),
            self._reader.stop(),
            self._admin.close(),
            self._meta.close(),
            *(consumer.stop() for consumer in self._groups.values()),
        ]
        results = await asyncio.gather(*stops, return_exceptions=True)
        self._groups.clear()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def __aenter__(self) -> KafkaLog:
        return self
