"""Running the pieces together in one process: the simulator's feed, the pipeline, the gateway.

``fieldstream serve --process`` and ``fieldstream demo`` use these. The feed and the pipeline
each run in a thread of their own, with their own event loop and their own log connection
(a log instance is not shared between tasks), so the gateway's loop stays free to serve
clients while a batch is being processed. All three report into one
:class:`~gateway.metrics.Metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from eta_engine.roads import RoadGraph
from gateway.feed import Clock, feed
from gateway.metrics import Metrics
from streams.bootstrap import build_stages, open_log, open_state_store
from streams.config import Config
from streams.ingest import IngestReport
from streams.pipeline import BatchStats, Stage, run_until_idle


def meter(metrics: Metrics) -> Callable[[Stage, BatchStats], None]:
    """A :func:`run_until_idle` ``on_batch`` hook counting each batch into ``metrics``:
    records per stage and input topic, and the batch's latency."""

    def on_batch(stage: Stage, stats: BatchStats) -> None:
        metrics.batch_seconds.labels(stage.name).observe(stats.seconds)
        for topic, n in stats.by_topic.items():
            metrics.events_processed.labels(stage.name, topic).inc(n)

    return on_batch


async def record_lag(stages: Iterable[Stage], log: Any, metrics: Metrics) -> int:
    """Set each stage's consumer lag per input topic; returns the total."""
    total = 0
    ends: dict[str, dict[int, int]] = {}
    for stage in stages:
        positions = stage.positions
        behind: dict[str, int] = {}
        for (topic, p), offset in positions.items():
            if topic not in ends:
                ends[topic] = await log.end_offsets(topic)
            behind[topic] = behind.get(topic, 0) + max(0, ends[topic].get(p, 0) - offset)
        for topic, n in behind.items():
            metrics.consumer_lag.labels(stage.name, topic).set(n)
            total += n
    return total


class _Worker(threading.Thread):
    """A thread running one coroutine on a loop of its own; ``stop`` asks it to finish."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self.main())
        except BaseException as exc:  # reported by the owner, which decides what to do
            self.error = exc

    async def main(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout)


class PipelineWorker(_Worker):
    """Runs every stage of the pipeline (``build_stages``) over the log until stopped: each
    pass drains what is on the log with :func:`run_until_idle`, then waits ``idle_s``."""

    def __init__(
        self, config: Config, metrics: Metrics, graph: RoadGraph | None, idle_s: float = 0.2
    ) -> None:
        super().__init__("fieldstream-pipeline")
        self.config = config
        self.metrics = metrics
        self.graph = graph
        self.idle_s = idle_s
        self.processed = 0
        self.lag = 0
        self.passes = 0
        self.totals: dict[str, int] = {}

    async def main(self) -> None:
        config = self.config
        log = await open_log(config)
        store = open_state_store(config.data_dir, config.db)
        stages = build_stages(log, store, config, self.graph)
        on_batch = meter(self.metrics)
        try:
            while True:
                stopping = self.stop_event.is_set()
                n = await run_until_idle(stages, on_batch=on_batch)
                self.processed += n
                self.passes += 1
                self.lag = await record_lag(stages, log, self.metrics)
                if stopping:
                    break  # a last pass after the stop drains what was fed before it
                if n == 0:
                    await asyncio.sleep(self.idle_s)
            for stage in stages:
                for name, count in stage.totals.items():
                    self.totals[f"{stage.name}.{name}"] = count
        finally:
            for stage in stages:
                close = getattr(stage, "close", None)
                if close is not None:
                    close()
            store.close()
            await log.close()


class FeedWorker(_Worker):
    """Ingests ``(delivery_ms, raw)`` records through the normal ingest path: everything
    before ``live_from_ms`` as fast as possible, the rest paced by ``clock``."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        items: Iterable[tuple[int, bytes]],
        *,
        clock: Clock,
        live_from_ms: int | None = None,
    ) -> None:
        super().__init__("fieldstream-feed")
        self.config = config
        self.metrics = metrics
        self.items = items
        self.clock = clock
        self.live_from_ms = live_from_ms
        self.fed = 0
        self.sim_ms: int | None = None
        self.report = IngestReport()
        self.done = False

    def _watched(self, items: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        for delivery, raw in items:
            if self.stop_event.is_set():
                return
            self.sim_ms = delivery
            yield delivery, raw

    async def main(self) -> None:
        log = await open_log(self.config)
        try:
            items = iter(self._watched(self.items))
            held: list[tuple[int, bytes]] = []
            if self.live_from_ms is not None:
                ahead: list[tuple[int, bytes]] = []
                for item in items:
                    if item[0] >= self.live_from_ms:
                        held.append(item)
                        break
                    ahead.append(item)
                await self._feed(log, ahead, Clock(None))

            def rest() -> Iterator[tuple[int, bytes]]:
                yield from held
                yield from items

            await self._feed(log, rest(), self.clock)
        finally:
            self.done = True
            await log.close()

    async def _feed(self, log: Any, items: Iterable[tuple[int, bytes]], clock: Clock) -> None:
        def counted(n: int) -> None:
            self.fed += n

        report = await feed(
            log,
            items,
            clock=clock,
            batch_size=2_000,
            on_batch=counted,
            max_future_skew_ms=self.config.max_future_skew_ms,
        )
        self.report.merge(report)
        self.metrics.ingested.labels("accepted").inc(report.accepted)
        self.metrics.ingested.labels("rejected").inc(report.rejected)


@dataclass(slots=True)
class Stopper:
    """Stops a run on the first of: ``stop()`` (Ctrl-C), a deadline, a condition."""

    event: asyncio.Event
    deadline: float | None = None

    def stop(self) -> None:
        self.event.set()

    async def wait(
        self,
        done: Callable[[], bool] = lambda: False,
        tick: Callable[[], Awaitable[None] | None] | None = None,
        every_s: float = 0.5,
    ) -> str:
        """Wait until stopped; ``tick`` is called every ``every_s``. Returns why it stopped:
        ``stopped``, ``duration`` or ``done``."""
        while True:
            if self.event.is_set():
                return "stopped"
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return "duration"
            if done():
                return "done"
            if tick is not None:
                result = tick()
                if result is not None:
                    await result
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), every_s)
