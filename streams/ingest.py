"""Ingest: raw bytes in, each record either on its input topic or on fs.dlq with the reason.

Valid records are appended unchanged (the log keeps exactly what was sent, which is what an
audit wants), keyed by the event's key field and stamped with the event's own time. A record
that fails validation goes to fs.dlq with its original bytes and the reason in headers
(:data:`events.catalog.DLQ_RULE` and friends). Nothing is dropped and nothing raises: one bad
line never costs the good lines around it.

Derived event types (EtaUpdated, ...) are refused here: only the pipeline's stages write them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from events.catalog import DLQ, DLQ_FIELD, DLQ_MESSAGE, DLQ_RULE, DLQ_SOURCE, TOPIC_OF
from events.codec import Rejection, validate
from events.kinds import DERIVED_EVENTS
from streams.log import Log, OutRecord

_DERIVED_TYPES = frozenset(cls.__name__ for cls in DERIVED_EVENTS)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class IngestReport:
    """What an ingest run did. ``accepted + rejected == records``; blank lines are not records."""

    records: int = 0
    accepted: int = 0
    rejected: int = 0
    blank: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    """One example message per rule, with where it came from."""

    def merge(self, other: IngestReport) -> None:
        self.records += other.records
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.blank += other.blank
        self.by_topic.update(other.by_topic)
        self.by_rule.update(other.by_rule)
        for rule, text in other.examples.items():
            self.examples.setdefault(rule, text)


class Ingestor:
    """Validates and appends batches of raw records to a log.

    ``clock`` gives the ingesting time in ms, used only to refuse events from the future
    (see ``max_future_skew_ms``) and to stamp dead letters; pass a fixed clock in tests.
    """

    def __init__(
        self,
        log: Log,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        max_future_skew_ms: int | None = None,
        source: str = "ingest",
    ) -> None:
        self._log = log
        self._clock = clock
        self._skew = max_future_skew_ms
        self._source = source

    def _dead_letter(self, raw: bytes, rejection: Rejection, where: str, now: int) -> OutRecord:
        return OutRecord(
            DLQ.name,
            raw,
            key=None,
            timestamp_ms=now,
            headers=(
                (DLQ_RULE, rejection.rule.encode()),
                (DLQ_FIELD, rejection.field.encode()),
                (DLQ_MESSAGE, rejection.message.encode()),
                (DLQ_SOURCE, where.encode()),
            ),
        )

    async def ingest(self, raws: Sequence[bytes], *, first_line: int = 1) -> IngestReport:
        """Validate and append one batch (one log append). ``first_line`` numbers the records
        for the dead-letter source header (``source:line``)."""
        report = IngestReport()
        now = self._clock()
        skew = {} if self._skew is None else {"max_future_skew_ms": self._skew}
        out: list[OutRecord] = []
        for number, raw in enumerate(raws, first_line):
            if not raw.strip():
                report.blank += 1
                continue
            report.records += 1
            result = validate(raw, now_ms=now, **skew)
            if not isinstance(result, Rejection):
                topic = TOPIC_OF.get(result.type)
                if topic is not None and result.type not in _DERIVED_TYPES:
                    out.append(OutRecord(topic.name, raw, result.key.encode(), result.time))
                    report.accepted += 1
                    report.by_topic[topic.name] += 1
                    continue
                result = Rejection(
                    "derived_type",
                    "type",
                    f"field 'type': {result.type} is derived; only the pipeline writes it",
                )
            where = f"{self._source}:{number}"
            out.append(self._dead_letter(raw, result, where, now))
            report.rejected += 1
            report.by_rule[result.rule] += 1
            report.by_topic[DLQ.name] += 1
            report.examples.setdefault(result.rule, f"{where}: {result.message}")
        if out:
            await self._log.append(out)
        return report


def read_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a byte stream into lines without decoding it (bad UTF-8 must reach validation)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r")
    if pending:
        yield pending.removesuffix(b"\r")


def batched(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    """Group lines into lists of ``size`` (the last one may be shorter)."""
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
