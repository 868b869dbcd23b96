"""A projection stopped and started again between two of its flushes ends with the tables of
one that never stopped, also when a fix for a leg that ended before the stop comes late,
after the restarted stage's first flush."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from events import kinds as k
from events.catalog import GPS, INPUT_TOPICS
from events.codec import decode, encode
from streams.bootstrap import open_log
from streams.config import Config
from streams.log import OutRecord, Record
from streams.projection_stage import ProjectionStage, build_projection_stage
from streams.projection_store import SqliteProjectionStore
from tests.projections.compare import tables
from tests.projections.conftest import ProcessedDay
from tests.support import gps_ping, run

MINUTE = 60_000


def _leg(day: ProcessedDay) -> tuple[str, int, int]:
    """A technician, the start and the arrival of one of its legs of five minutes or more."""
    for record in day.records["fs.workorders"]:
        event = decode(record.value)
        assert isinstance(event, k.WorkOrderStateChanged)
        set_off, arrived = event.en_route_at, event.arrived_at
        technician = event.technician_id
        long_enough = (
            set_off is not None and arrived is not None and arrived - set_off >= 5 * MINUTE
        )
        if event.status == "arrived" and technician and long_enough:
            assert set_off is not None and arrived is not None
            return technician, set_off, arrived
    raise AssertionError("the day has no leg of five minutes")


def _copy(record: Record) -> OutRecord:
    return OutRecord(
        record.topic, record.value, record.key, record.timestamp_ms, (), record.partition
    )


def _detour(day: ProcessedDay, technician: str, at: int) -> OutRecord:
    """A fix of ``technician`` at ``at``, some two kilometres off the road it was driving."""
    pings = [
        r for r in day.records[GPS.name] if r.key == technician.encode() and r.timestamp_ms < at
    ]
    last = decode(pings[-1].value)
    assert isinstance(last, k.GpsPinged)
    fix = gps_ping(
        technician,
        at,
        last.lat + 0.02,
        last.lon,
        id=f"late-detour-{technician}-{at}",
        source="test/device",
        accuracy_m=5.0,
    )
    return OutRecord(GPS.name, encode(fix), technician.encode(), at, (), pings[-1].partition)


def test_a_late_fix_after_a_restart_measures_the_leg_as_without_the_restart(
    processed_day: ProcessedDay, tmp_path: Path
) -> None:
    technician, _set_off, arrived = _leg(processed_day)
    stop_at = arrived + 2 * MINUTE  # the stage stops two minutes after the arrival
    sources = [*(t.name for t in INPUT_TOPICS), "fs.workorders", "fs.eta", "fs.alerts"]
    before = [
        _copy(r)
        for topic in sources
        for r in processed_day.records.get(topic, [])
        if r.timestamp_ms <= stop_at
    ]
    other = next(
        r for r in processed_day.records[GPS.name]
        if r.key != technician.encode() and stop_at < r.timestamp_ms <= stop_at + MINUTE
    )  # fmt: skip
    late = _detour(processed_day, technician, arrived - 2 * MINUTE)

    async def body() -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        config = Config(data_dir=tmp_path / "log")
        log = await open_log(config)
        await log.append(before)
        first = build_projection_stage(log, config)
        await first.run_until_idle()
        first.close()  # stopped
        second = build_projection_stage(log, config)
        await log.append([_copy(other)])  # the restarted stage's first flush
        await second.run_until_idle()
        await log.append([late])  # late, for the leg that ended before the stop
        await second.run_until_idle()
        assert second.store is not None
        restarted = tables(second.store)
        second.close()
        whole = ProjectionStage(log, lambda: SqliteProjectionStore(tmp_path / "whole.sqlite3"))
        await whole.run_until_idle()
        assert whole.store is not None
        clean = tables(whole.store)
        whole.close()
        await log.close()
        return restarted, clean

    restarted, clean = run(body())
    assert restarted["kp_visits"] == clean["kp_visits"]
    assert restarted == clean
