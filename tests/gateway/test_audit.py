"""Replay and show: the audit commands, on a processed simulated day."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from tests.support import embedded_day, read_all, run, simulated_day


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a simulated day ingested and processed."""
    data = tmp_path_factory.mktemp("live")

    async def ingest() -> None:
        log = await embedded_day(data, simulated_day())
        await log.close()

    run(ingest())
    assert main(["process", "--data-dir", str(data), "--until-idle", "--format", "json"]) == 0
    return data


def _records(data: Path, topic: str) -> list[tuple[int, int, bytes]]:
    from streams.embedded import EmbeddedLog

    async def body() -> list[tuple[int, int, bytes]]:
        log = EmbeddedLog.open(data)
        try:
            return [(r.partition, r.offset, r.value) for r in await read_all(log, topic)]
        finally:
            await log.close()

    out: list[tuple[int, int, bytes]] = run(body())
    return out


def test_replay_reproduces_the_derived_topics_and_never_touches_the_live_data(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (live / "log.sqlite3").stat().st_mtime_ns, (live / "state.sqlite3").stat().st_mtime_ns
    into = tmp_path / "replay"
    assert main(["replay", "--data-dir", str(live), "--into", str(into), "--format", "json"]) == 0
    summary = orjson.loads(capsys.readouterr().out)["rows"][0]
    assert summary["work orders"] >= len({r["work_order_id"] for r in simulated_day().truth}) > 20
    after = (live / "log.sqlite3").stat().st_mtime_ns, (live / "state.sqlite3").stat().st_mtime_ns
    assert before == after
    topics = ("fs.workorders", "fs.geofence", "fs.by-technician", "fs.eta", "fs.alerts", "fs.dlq")
    for topic in topics:
        assert sorted(_records(into, topic)) == sorted(_records(live, topic)), topic
    # a replay never reuses a directory holding data
    assert main(["replay", "--data-dir", str(live), "--into", str(into)]) == 2


def test_replay_until_a_time_knows_less(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "replay",
                "--data-dir",
                str(live),
                "--into",
                str(tmp_path / "a"),
                "--until",
                "2026-11-23T09:00:00Z",
                "--format",
                "json",
            ]
        )
        == 0
    )
    early = orjson.loads(capsys.readouterr().out)["rows"][0]
    assert (
        main(["replay", "--data-dir", str(live), "--into", str(tmp_path / "b"), "--format", "json"])
        == 0
    )
    full = orjson.loads(capsys.readouterr().out)["rows"][0]
    assert 0 < early["records copied"] < full["records copied"]


def test_show_prints_the_state_and_its_events_as_of_a_time(
    live: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = simulated_day()
    row = next(r for r in sim.truth if r["visit"] == 1)
    order_id = row["work_order_id"]
    assert main(["show", "work-order", order_id, "--data-dir", str(live), "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    kinds = [e["event"] for e in doc["rows"]]
    assert kinds[0] == "WorkOrderBooked"
    assert "TechnicianAssigned" in kinds
    assert doc["state"]["visits"][0]["arrived_at"] is not None
    assert [e["version"] for e in doc["rows"]] == list(range(1, len(kinds) + 1))
    from events.codec import format_time

    as_of = format_time(row["en_route_ms"] - 1)
    assert (
        main(
            [
                "show",
                "work-order",
                order_id,
                "--as-of",
                as_of,
                "--data-dir",
                str(live),
                "--format",
                "json",
            ]
        )
        == 0
    )
    early = orjson.loads(capsys.readouterr().out)
    assert early["state"]["status"] in ("booked", "assigned")
    assert main(["show", "work-order", order_id, "--data-dir", str(live)]) == 0
    assert "WorkOrderBooked" in capsys.readouterr().out
    assert main(["show", "work-order", "WO-nope", "--data-dir", str(live)]) == 2
