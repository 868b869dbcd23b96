"""Comparing projections: output tables, restored state, and a rebuild from the log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from projections.fold import Projection
from projections.state import Settings
from streams.embedded import EmbeddedLog
from streams.projection_stage import ProjectionStage
from streams.projection_store import ProjectionStore
from tests.support import run

OUTPUT_TABLES = ("kp_kpi", "kp_visits", "kp_live_technicians", "kp_live_work_orders", "kp_offsets")


def state(store: ProjectionStore) -> dict[str, Any]:
    """The projection's state as restored from a store, in comparable form (chunk numbering
    and boundaries, which depend on the batching, left out)."""
    loaded = store.load()
    projection = Projection()
    projection.restore(loaded.docs, loaded.chunks, loaded.eta_chunks, loaded.meta)
    docs = {(kind, key): orjson.loads(raw) for kind, key, raw in loaded.docs}
    return {
        "docs": docs,
        "tracks": {
            t: (track.points(), list(track.odo), track.newest, track.quarantine)
            for t, track in projection.tracks.items()
        },
        "km": {t: tech.km_cache for t, tech in projection.techs.items()},
        "etas": projection.etas.rows(),
    }


def tables(store: ProjectionStore) -> dict[str, list[tuple[Any, ...]]]:
    tables = store.tables()
    return {name: tables[name] for name in OUTPUT_TABLES}


def normalised(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """Booleans as integers (SQLite stores them so)."""
    return {
        name: [tuple(int(v) if isinstance(v, bool) else v for v in row) for row in table]
        for name, table in rows.items()
    }


def rebuild(
    data_dir: Path,
    open_store: Callable[[], ProjectionStore],
    batch: int | None,
    settings: Settings | None = None,
) -> None:
    """Project the whole log again into a fresh store: in the pipeline's event-time windows
    (``batch=None``) or in batches of ``batch`` records, each committed on its own."""

    async def body() -> None:
        log = EmbeddedLog.open(data_dir)
        stage = ProjectionStage(
            log, open_store, settings=settings, max_batch=batch or 20_000, catchup_batch=batch
        )
        if batch is None:
            await stage.run_until_idle()
        else:
            while (await stage.step(None)).records:
                pass
        stage.close()
        await log.close()

    run(body())
