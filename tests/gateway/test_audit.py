"""Replay and show: the audit commands, on a processed simulated day."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from tests.support import embedded_day, gps_ping, read_all, run, simulated_day


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


def test_show_explains_a_late_alert_with_what_the_engine_had_seen(
    live: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Why was that delay notice sent: the work order's ETAs and alerts as published, each
    alert with the input event it was computed on, read back from the log."""
    alerts = [orjson.loads(value) for _, _, value in _records(live, "fs.alerts")]
    raised = [a for a in alerts if a["type"] == "LateAlertRaised"]
    assert raised, "the simulated day raised no late alert"
    first = raised[0]
    order_id = first["data"]["work_order_id"]
    mine = [a for a in alerts if a["data"]["work_order_id"] == order_id]
    etas = [
        e
        for e in (orjson.loads(value) for _, _, value in _records(live, "fs.eta"))
        if e["data"]["work_order_id"] == order_id
    ]
    assert main(["show", "work-order", order_id, "--data-dir", str(live), "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert sorted(a["id"] for a in doc["alerts"]) == sorted(a["id"] for a in mine)
    assert sorted(e["id"] for e in doc["etas"]) == sorted(e["id"] for e in etas)
    shown = next(a for a in doc["alerts"] if a["id"] == first["id"])
    assert shown["alert"] == "raised"
    assert shown["p(late)"] == first["data"]["probability_late"]
    assert shown["message"] == first["data"]["message"]
    assert shown["window end"] == first["data"]["window_end"]
    cause = first["causationid"]
    assert cause in shown["caused by"]
    if first["causationtopic"] == "fs.gps":  # the ping's own position, read back
        ping = next(
            orjson.loads(value)
            for p, o, value in _records(live, "fs.gps")
            if (p, o) == (first["causationpartition"], first["causationoffset"])
        )
        assert ping["id"] == cause
        assert f"{ping['data']['lat']:.5f}" in shown["caused by"]
    # as of just before the alert: its ETAs until then, no alert yet
    from events.codec import format_time, parse_time

    before = format_time(parse_time(first["time"]) - 1)
    args = ["show", "work-order", order_id, "--as-of", before, "--data-dir", str(live)]
    assert main([*args, "--format", "json"]) == 0
    early = orjson.loads(capsys.readouterr().out)
    assert first["id"] not in {a["id"] for a in early["alerts"]}
    assert len(early["etas"]) == sum(1 for e in etas if e["time"] <= before) < len(etas)
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "its arrival windows (ETAs) published" in text
    assert main(["show", "work-order", order_id, "--data-dir", str(live)]) == 0
    assert "late alert 1 of" in capsys.readouterr().out


def _append_ping(data: Path, technician: str, at: int) -> None:
    from events.codec import encode
    from streams.embedded import EmbeddedLog
    from streams.log import OutRecord

    ping = gps_ping(technician, at, id=f"test-off-shift-{technician}-{at}", accuracy_m=5.0)

    async def body() -> None:
        log = EmbeddedLog.open(data)
        try:
            await log.append([OutRecord("fs.gps", encode(ping), technician.encode(), at)])
        finally:
            await log.close()

    run(body())


def test_show_technician_gives_its_state_and_last_in_shift_position_as_of_a_time(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from events.codec import format_time, parse_time

    sim = simulated_day()
    row = next(r for r in sim.truth if r["visit"] == 1 and r["technician_id"])
    tid = row["technician_id"]
    dispatch = [orjson.loads(v) for _, _, v in _records(live, "fs.dispatch")]
    shifts: list[list[int | None]] = []
    for event in sorted(dispatch, key=lambda e: e["time"]):  # its shifts, from the raw events
        if event["data"].get("technician_id") != tid:
            continue
        if event["type"] == "ShiftStarted":
            shifts.append([parse_time(event["time"]), None])
        elif event["type"] == "ShiftEnded" and shifts:
            shifts[-1][1] = parse_time(event["time"])
    assert shifts
    pings = sorted(
        (parse_time(p["time"]), p["data"]["lat"], p["data"]["lon"])
        for p in (orjson.loads(v) for _, _, v in _records(live, "fs.gps"))
        if p["data"]["technician_id"] == tid
    )

    def expected(as_of: int) -> tuple[int, float, float] | None:
        inside = [
            p
            for p in pings
            if p[0] <= as_of
            and any(s is not None and s <= p[0] and (e is None or p[0] <= e) for s, e in shifts)
        ]
        return inside[-1] if inside else None

    as_of = row["en_route_ms"] + 5 * 60_000
    want = expected(as_of)
    assert want is not None
    args = ["show", "technician", tid, "--data-dir", str(live), "--as-of", format_time(as_of)]
    assert main([*args, "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["state"]["id"] == tid and doc["state"]["registered"]
    assert doc["state"]["on_shift"]
    assert all(parse_time(e["time"]) <= as_of for e in doc["rows"])
    assert (
        parse_time(doc["position"]["time"]),
        doc["position"]["lat"],
        doc["position"]["lon"],
    ) == want
    # before its first shift: no position, also with a ping then (outside a shift, a ping
    # is no position); on a copy of the data, which gets that ping
    first_start = shifts[0][0]
    assert first_start is not None
    copy = tmp_path / "copy"
    shutil.copytree(live, copy)
    _append_ping(copy, tid, first_start - 60_000)
    early = ["show", "technician", tid, "--data-dir", str(copy), "--as-of"]
    assert main([*early, format_time(first_start - 1), "--format", "json"]) == 0
    before = orjson.loads(capsys.readouterr().out)
    assert before["position"] is None and not before["state"]["on_shift"]
    assert main(args) == 0
    assert "last position" in capsys.readouterr().out
    assert main(["show", "technician", "T-nope", "--data-dir", str(live)]) == 2


@pytest.mark.kafka
@pytest.mark.postgres
def test_show_tells_the_same_history_in_scale_out_mode(
    tmp_path: Path, kafka_bootstrap: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit commands on Kafka and PostgreSQL print what they print on the embedded log,
    for the same day: the same facts, ETAs, alerts and causes, the same position."""
    from tests.streams.kafka_broker import start_broker

    day = tmp_path / "day.jsonl"
    argv = ["simulate", "--technicians", "8", "--hours", "5", "--seed", "5", "--out", str(day)]
    assert main(argv) == 0
    broker = start_broker()  # of its own: the stages use the catalog's topic names
    try:
        embedded = ["--data-dir", str(tmp_path / "embedded")]
        scale_out = ["--kafka", broker.bootstrap, "--db", postgres_url]
        for where in (embedded, scale_out):
            assert main(["ingest", str(day), *where, "--format", "json"]) == 0
            assert main(["process", *where, "--until-idle", "--format", "json"]) == 0
        capsys.readouterr()
        etas = [orjson.loads(v) for _, _, v in _records(tmp_path / "embedded", "fs.eta")]
        assert etas, "the day published no ETA"
        last = max(etas, key=lambda e: e["time"])  # (its technician on shift by then)
        order_id, technician = last["data"]["work_order_id"], last["data"]["technician_id"]
        as_of = last["time"]
        shown = []
        for where in (embedded, scale_out):
            for what, key in (("work-order", order_id), ("technician", technician)):
                argv = ["show", what, key, "--as-of", as_of, *where, "--format", "json"]
                assert main(argv) == 0
                shown.append(orjson.loads(capsys.readouterr().out))
        assert shown[0]["etas"] and shown[1]["position"] is not None
        assert shown[:2] == shown[2:]
    finally:
        broker.stop()
