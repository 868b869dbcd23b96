"""The log port: what every stage needs from a partitioned, durable log.

Two adapters implement it: :class:`streams.embedded.EmbeddedLog` (a SQLite file, the default)
and :class:`streams.kafka.KafkaLog` (aiokafka against a Kafka-protocol broker). Both pass the
same contract suite (tests/streams/contract.py), so a stage written against this port runs
unchanged in either mode.

Semantics shared by both adapters, which callers may rely on:

* A topic has a fixed number of partitions, numbered from 0. Offsets within a partition start at
  0 and grow by one per record, with no gaps.
* A record appended with a key and no explicit partition lands on
  :func:`streams.partitioner.partition_for` of that key, exactly as Kafka's default partitioner
  places it, so a key lives on the same partition in both modes.
* :meth:`Log.append` is all-or-nothing for the batch in the embedded adapter; the Kafka adapter
  uses an idempotent producer, so a retried batch is never duplicated, and it returns only once
  every record is acknowledged by the broker.
* Records of one partition are read back in offset order. Nothing is promised about the order
  between partitions.
* Consumer-group positions are "the next offset to read", as in Kafka: committing offset N means
  records 0..N-1 are done.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Headers = tuple[tuple[str, bytes], ...]


class TopicPartition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """What a topic is created with. ``compacted`` maps to ``cleanup.policy=compact``."""

    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None


class OutRecord(NamedTuple):
    """A record to append. ``partition=None`` lets the key choose (murmur2, like Kafka);
    a keyless record with no partition goes to partition 0. ``timestamp_ms=None`` stamps the
    record with the time of the append (Kafka's producer does the same). A named tuple: made
    once per output record, it costs a third of a frozen dataclass."""

    topic: str
    value: bytes
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: Headers = ()
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class BatchMark:
    """Which batch of which stage an append holds the outputs of, and the input ranges that
    batch consumed (``topic/partition`` -> [first, end)). A log that keeps marks
    (:attr:`Log.keeps_marks`) writes it atomically with the records, so a stage restarted
    before it committed that batch processes it again exactly as it was cut, without
    appending its outputs a second time."""

    stage: str
    batch: int
    inputs: dict[str, tuple[int, int]]


class Record(NamedTuple):
    """A record read back from the log, with its position. (A named tuple: the pipeline makes
    one per record read, and a tuple is several times cheaper to build than a frozen
    dataclass.)"""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers = ()

    @property
    def position(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(slots=True)
class Columns:
    """Records of one partition read a column at a time, in offset order: for the hot topics
    (GPS pings, about 95% of all records), where building one :class:`Record` per record costs
    more than everything the stage then does with most of them. Headers are not read."""

    topic: str
    partition: int
    offsets: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    keys: list[bytes | None]
    values: list[bytes]

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def of(cls, topic: str, partition: int, records: Sequence[Record]) -> Columns:
        """The columns of ``records`` (all of ``topic``/``partition``, in offset order)."""
        return cls(
            topic,
            partition,
            np.fromiter((r.offset for r in records), np.int64, len(records)),
            np.fromiter((r.timestamp_ms for r in records), np.int64, len(records)),
            [r.key for r in records],
            [r.value for r in records],
        )

    @classmethod
    def concatenated(cls, parts: Sequence[Columns]) -> Columns:
        """One partition's consecutive reads (``parts``, not empty, in offset order) as one."""
        first = parts[0]
        keys: list[bytes | None] = []
        values: list[bytes] = []
        for part in parts:
            keys += part.keys
            values += part.values
        return cls(
            first.topic,
            first.partition,
            np.concatenate([part.offsets for part in parts]),
            np.concatenate([part.timestamps for part in parts]),
            keys,
            values,
        )

    def joined(self, start: int, more: Columns) -> Columns:
        """Records ``start:`` of these followed by ``more`` (the next read of the partition)."""
        return Columns(
            self.topic,
            self.partition,
            np.concatenate((self.offsets[start:], more.offsets)),
            np.concatenate((self.timestamps[start:], more.timestamps)),
            self.keys[start:] + more.keys,
            self.values[start:] + more.values,
        )

    def slice(self, start: int, end: int) -> Columns:
        return Columns(
            self.topic,
            self.partition,
            self.offsets[start:end],
            self.timestamps[start:end],
            self.keys[start:end],
            self.values[start:end],
        )


class UnknownTopicError(KeyError):
    """Raised when a topic is read or appended to before it was created."""


class Log(abc.ABC):
    """The port. All methods are coroutines; call :meth:`close` when done.

    Implementations are not safe for concurrent use by several tasks at once: each stage owns
    its own instance (they are cheap), or serialises its calls.
    """

    @abc.abstractmethod
    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the topics that do not exist yet; existing topics are left as they are."""

    @abc.abstractmethod
    async def topics(self) -> dict[str, int]:
        """Every topic with its partition count."""

    keeps_marks = False
    """Whether :meth:`append` records its ``mark`` (see :class:`BatchMark`)."""

    @abc.abstractmethod
    async def append(
        self,
        records: Sequence[OutRecord],
        *,
        durable: bool = True,
        mark: BatchMark | None = None,
    ) -> list[tuple[int, int]]:
        """Append a batch (its records may go to several topics) and return, for each record
        in order, the ``(partition, offset)`` it landed at.

        The records are visible to readers at once. With ``durable=False`` they survive a
        crash of the process but not necessarily a power cut until the next :meth:`sync`
        (one sync for many appends, while a backlog is processed); an adapter whose every
        append is durable anyway (Kafka, once the brokers acknowledged it) ignores it.
        ``mark`` is recorded in the same transaction where the log keeps marks (then even
        with no records), and ignored elsewhere."""

    async def marks(self, stage: str, after: int) -> dict[int, dict[str, tuple[int, int]]]:
        """The marks of ``stage`` numbered above ``after``: batch -> its input ranges (none
        where the log keeps no marks)."""
        return {}

    @abc.abstractmethod
    async def sync(self) -> None:
        """Make every earlier append durable (see :meth:`append`); at once where every append
        already is."""

    @abc.abstractmethod
    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 10_000
    ) -> list[Record]:
        """Up to ``max_records`` records of one partition from ``offset`` on, in offset order.

        Returns an empty list at the end of the partition (it does not wait for more).
        """

    async def read_columns(
        self, topic: str, partition: int, offset: int, max_records: int = 10_000
    ) -> Columns:
        """Like :meth:`read`, a column at a time and without headers. An adapter that can fetch
        columns directly overrides this; the default builds them from :meth:`read`."""
        return Columns.of(topic, partition, await self.read(topic, partition, offset, max_records))

    @abc.abstractmethod
    async def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The first offset whose record timestamp is >= ``timestamp_ms``, or the end offset
        when there is none (Kafka's ListOffsets semantics)."""

    @abc.abstractmethod
    async def end_offsets(self, topic: str) -> dict[int, int]:
        """For each partition of ``topic``, the offset the next appended record will get."""

    @abc.abstractmethod
    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Store the group's next-offset-to-read for each partition given."""

    @abc.abstractmethod
    async def committed(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """The group's stored position for each partition, ``None`` where it has none."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. The instance must not be used afterwards."""

    async def __aenter__(self) -> Log:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
