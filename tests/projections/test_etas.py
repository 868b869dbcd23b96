"""The ETA points kept for the accuracy KPIs, and the timestamp parser they use."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from events.codec import format_time, parse_time
from projections.etas import Etas, quantiles, time_ms
from projections.fold import Projection
from streams.embedded import EmbeddedLog
from streams.projection_stage import ProjectionStage
from streams.projection_store import SqliteProjectionStore
from tests.projections.conftest import ProcessedDay
from tests.support import run


def test_the_eta_in_force_is_the_latest_published_by_then_for_that_technician() -> None:
    etas = Etas()
    t = 1_800_000_000_000
    text = format_time
    for i, (at, tech) in enumerate([(t, "A"), (t + 60_000, "A"), (t + 60_000, "B"), (t + 5, "A")]):
        assert etas.add("WO", tech, (at, f"e{i}", text(at), text(at + 1), text(at + 2)))
    assert not etas.add("WO", "A", (t, "e0", "x", "y", "z"))  # a repeated id is ignored
    assert etas.count == 4
    assert etas.in_force("WO", "A", None, t + 59_999)[1] == "e3"  # type: ignore[index]
    assert etas.in_force("WO", "A", None, t + 60_000)[1] == "e1"  # type: ignore[index]
    assert etas.in_force("WO", "A", t + 1, t + 4) is None  # nothing since the assignment
    assert etas.in_force("WO", "C", None, t + 99_000) is None
    assert etas.newest("WO")[1] in ("e1", "e2")  # type: ignore[index]
    assert quantiles(etas.in_force("WO", "B", None, 2**62)) == (  # type: ignore[arg-type]
        t + 60_000,
        t + 60_001,
        t + 60_002,
    )
    assert etas.prune("WO", {("A", "e3")}) == 3
    assert etas.rows() == [("WO", "A", (t + 5, "e3", text(t + 5), text(t + 6), text(t + 7)))]
    assert etas.count == 1


def test_the_fast_time_parser_agrees_with_the_codec() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        ms = rng.randrange(1_500_000_000_000, 2_000_000_000_000)
        assert time_ms(format_time(ms)) == ms
    for text in ("2026-11-23T14:05:00Z", "2026-11-23T15:05:00.123+01:00"):
        assert time_ms(text) == parse_time(text)


def test_stored_eta_chunks_stay_in_proportion_to_the_points_kept(
    processed_day: ProcessedDay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live (a flush per window), the chunks of ETA points are compacted once they hold more
    than twice the points kept (no slack here): what a restart loads stays in proportion."""
    monkeypatch.setattr(Projection, "ETA_SLACK", 0)

    async def body() -> None:
        log = EmbeddedLog.open(processed_day.data_dir)
        store = SqliteProjectionStore(tmp_path / "p.sqlite3")
        stage = ProjectionStage(log, lambda: store)
        try:
            await stage.run_until_idle()
            projection = stage.projection
            stored = sum(len(orjson.loads(blob)) for blob in store.load().eta_chunks)
            assert stored == projection.eta_stored
            assert projection.etas.count == len(projection.etas.rows()) > 0
            assert stored <= 2 * projection.etas.count
            assert len(processed_day.records["fs.eta"]) > 2 * stored  # most were pruned
        finally:
            stage.close()
            await log.close()

    run(body())
