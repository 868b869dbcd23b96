"""Replays for audits: rebuild everything from the log's inputs, somewhere else.

:func:`replay` copies the input topics of a log (optionally only records stamped up to a
time) into a fresh embedded log in another directory, keeping every record's partition and
order, and runs the whole pipeline there with a fresh state store. The live log and the live
store are only read. Because the stages are deterministic and take every derived event's time
from its input, the derived topics of the replay can be compared with the live ones record by
record, and the rebuilt state with the live state, field for field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from events.catalog import INPUT_TOPICS, TOPICS
from streams.bootstrap import build_stages, topic_spec
from streams.config import Config
from streams.embedded import EmbeddedLog
from streams.log import Log, OutRecord, Record
from streams.partitioner import partition_for
from streams.pipeline import Stage, run_until_idle
from streams.state_store import SqliteStateStore


@dataclass(frozen=True, slots=True)
class ReplayResult:
    into: Path
    copied: int
    processed: int


async def copy_inputs(
    source: Log,
    target: Log,
    *,
    until_ms: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    chunk: int = 20_000,
) -> int:
    """Copy the input topics' records (up to ``until_ms`` by record time) into ``target``,
    partition for partition, in offset order. Returns the number of records copied."""
    copied = 0
    for topic in INPUT_TOPICS:
        for partition, end in (await source.end_offsets(topic.name)).items():
            offset = 0
            while offset < end:
                records = await source.read(topic.name, partition, offset, chunk)
                if not records:
                    break
                offset = records[-1].offset + 1
                keep = [
                    OutRecord(
                        topic.name, r.value, r.key, r.timestamp_ms, r.headers, partition=partition
                    )
                    for r in records
                    if until_ms is None or r.timestamp_ms <= until_ms
                ]
                if keep:
                    await target.append(keep)
                    copied += len(keep)
                    if on_progress is not None:
                        on_progress(len(keep))
    return copied


async def replay(
    source: Log,
    into: Path,
    config: Config,
    *,
    until_ms: int | None = None,
    on_copy: Callable[[int], None] | None = None,
    on_process: Callable[[int], None] | None = None,
) -> tuple[ReplayResult, list[Stage], EmbeddedLog, SqliteStateStore]:
    """Rebuild the pipeline's state and derived topics from ``source``'s inputs, in ``into``.

    ``into`` must not hold a log already (a replay never mixes with earlier data). Returns the
    result, the stages (their processors hold the rebuilt state), and the replay's log and
    store, which the caller closes.
    """
    into = Path(into)
    if (into / "log.sqlite3").exists() or (into / "state.sqlite3").exists():
        raise FileExistsError(f"{into} already holds a log or a state store")
    target = EmbeddedLog.open(into)
    await target.create_topics([topic_spec(t) for t in TOPICS])
    copied = await copy_inputs(source, target, until_ms=until_ms, on_progress=on_copy)
    store = SqliteStateStore.in_dir(into)
    replay_config = Config(
        data_dir=into,
        batch_size=config.batch_size,
        lateness_ms=config.lateness_ms,
        geofence_m=config.geofence_m,
        roads=config.roads,
    )
    stages = build_stages(target, store, replay_config)
    processed = await run_until_idle(stages, on_progress=on_process)
    return ReplayResult(into, copied, processed), stages, target, store


async def read_records(log: Log, topic: str) -> list[Record]:
    """Every record of ``topic``, partition by partition in offset order."""
    found: list[Record] = []
    for partition, end in (await log.end_offsets(topic)).items():
        offset = 0
        while offset < end:
            records = await log.read(topic, partition, offset, 50_000)
            if not records:
                break
            found += records
            offset = records[-1].offset + 1
    return found


async def records_of_key(log: Log, topic: str, key: bytes, *, chunk: int = 20_000) -> list[Record]:
    """The records of ``topic`` with ``key``, in offset order. Only the key's partition is
    read (both log adapters put a keyed record on the partition its key picks), a column at
    a time: a record is made only for the ones that match."""
    ends = await log.end_offsets(topic)
    if not ends:
        return []
    partition = partition_for(key, len(ends))
    end = ends.get(partition, 0)
    found: list[Record] = []
    offset = 0
    while offset < end:
        columns = await log.read_columns(topic, partition, offset, chunk)
        if not len(columns):
            break
        offsets = columns.offsets.tolist()
        stamps = columns.timestamps.tolist()
        for i, k in enumerate(columns.keys):
            if k == key:
                found.append(Record(topic, partition, offsets[i], stamps[i], k, columns.values[i]))
        offset = offsets[-1] + 1
    return found


async def read_topic(log: Log, topic: str) -> list[bytes]:
    """Every record value of ``topic``, partition by partition in offset order."""
    return [r.value for r in await read_records(log, topic)]
