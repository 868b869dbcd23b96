"""The composition root: turns a :class:`Config` into connected adapters.

Nothing in the project connects to anything at import time; everything goes through here.
"""

from __future__ import annotations

from typing import cast

from eta_engine.roads import RoadGraph
from events.catalog import TOPICS, Topic
from streams.config import Config
from streams.embedded import EmbeddedLog
from streams.eta_stage import EtaProcessor
from streams.log import Log, TopicSpec
from streams.pipeline import Stage
from streams.projection_stage import build_projection_stage
from streams.stages import FleetProcessor, WorkOrderProcessor
from streams.state_store import StateStore, open_state_store

__all__ = ["build_stages", "open_log", "open_state_store", "topic_spec"]


def topic_spec(topic: Topic) -> TopicSpec:
    """The adapter-level spec of a catalog topic."""
    return TopicSpec(topic.name, topic.partitions, topic.compacted, topic.retention_ms)


async def open_log(config: Config, *, create_topics: bool = True) -> Log:
    """Connect the log the configuration names, creating the catalog's topics if needed."""
    log: Log
    if config.kafka:
        from streams.kafka import KafkaLog  # imported here: aiokafka is only needed in this mode

        log = await KafkaLog.connect(config.kafka)
    else:
        log = EmbeddedLog.open(config.data_dir)
    if create_topics:
        await log.create_topics([topic_spec(t) for t in TOPICS])
    return log


def build_stages(
    log: Log, store: StateStore, config: Config, graph: RoadGraph | None = None
) -> list[Stage]:
    """Every stage of the pipeline, in the order one round runs them: work orders, the fleet,
    then the ETA engine (which sees both the fleet's inputs and the work-order snapshots).
    ``graph`` defaults to the one ``config.roads`` names (Andorra when unset)."""
    if graph is None:
        graph = RoadGraph.default() if config.roads is None else RoadGraph.load(config.roads)
    batch = config.batch_size
    return [
        Stage(log, store, WorkOrderProcessor(lateness_ms=config.lateness_ms), max_batch=batch),
        Stage(
            log,
            store,
            FleetProcessor(lateness_ms=config.lateness_ms, geofence_m=config.geofence_m),
            max_batch=batch,
        ),
        # The projections (KPI tables, live view) have the Stage interface by shape (their
        # runner commits rows, not facts). Before the ETA stage so that stages[-1] stays
        # the ETA stage; the ETA outputs of a round are projected in the next one.
        cast(Stage, build_projection_stage(log, config)),
        Stage(log, store, EtaProcessor(graph), max_batch=batch),
    ]
