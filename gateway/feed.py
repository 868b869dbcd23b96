"""Feeding a stream of encoded events into the log through ingest, optionally paced.

Used by ``fieldstream simulate`` and ``fieldstream demo``: the events go through the same
validation and routing as any other input (:class:`streams.ingest.Ingestor`), so a simulated
day exercises the real ingest path.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.ingest import Ingestor, IngestReport
from streams.log import Log

_SPEED = re.compile(r"^(\d+(?:\.\d+)?)x$")


@dataclass(frozen=True, slots=True)
class Clock:
    """How fast to replay: ``speed=None`` is as fast as possible, else simulated seconds per
    wall-clock second (1.0 = real time)."""

    speed: float | None

    @classmethod
    def parse(cls, text: str) -> Clock:
        """``max``, ``realtime`` or ``Nx`` (``30x`` = thirty times real time)."""
        if text == "max":
            return cls(None)
        if text == "realtime":
            return cls(1.0)
        match = _SPEED.match(text)
        if not match or float(match.group(1)) <= 0:
            raise ValueError(f"--clock takes max, realtime or Nx (e.g. 30x), not {text!r}")
        return cls(float(match.group(1)))


async def feed(
    log: Log,
    items: Iterable[tuple[int, bytes]],
    *,
    clock: Clock,
    batch_size: int = 5_000,
    source: str = "simulator",
    on_batch: Callable[[int], None] | None = None,
    max_future_skew_ms: int | None = None,
) -> IngestReport:
    """Ingest ``(delivery_ms, raw)`` pairs in delivery order.

    Each record is validated as if it arrived at its delivery time (so a simulated day from
    the past is not refused as "in the future"). With a paced clock, a record is appended no
    earlier than its delivery time scaled from the first record's; batches are cut at pacing
    points so nothing waits behind a sleep. ``on_batch`` gets the number of records appended.
    """
    now_ms = 0
    ingestor = Ingestor(
        log, clock=lambda: now_ms, source=source, max_future_skew_ms=max_future_skew_ms
    )
    report = IngestReport()
    batch: list[bytes] = []
    line = 1
    start_sim: int | None = None
    start_wall = time.monotonic()

    async def flush() -> None:
        nonlocal line
        if batch:
            report.merge(await ingestor.ingest(batch, first_line=line))
            line += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
            batch.clear()

    for delivery_ms, raw in items:
        if clock.speed is not None:
            if start_sim is None:
                start_sim = delivery_ms
            due = start_wall + (delivery_ms - start_sim) / 1000 / clock.speed
            wait = due - time.monotonic()
            if wait > 0.02:
                await flush()
                await asyncio.sleep(wait)
        now_ms = max(now_ms, delivery_ms)
        batch.append(raw)
        if len(batch) >= batch_size:
            await flush()
    await flush()
    return report
