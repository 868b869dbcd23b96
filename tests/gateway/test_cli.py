"""The CLI end to end, in-process: ingest, topics, schemas."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pytest

from events.codec import encode, to_document
from events.kinds import INPUT_EVENTS
from gateway.cli import main
from tests.events.samples import SAMPLES


def _jsonl(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_ingest_then_topics_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [encode(s) for s in SAMPLES if type(s) in INPUT_EVENTS]
    path = _jsonl(tmp_path, [*good, b"{broken"])
    data = tmp_path / "data"
    assert main(["ingest", str(path), "--data-dir", str(data), "--format", "json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["accepted"] == len(good)
    assert report["by_rule"] == {"json": 1}

    assert main(["topics", "--data-dir", str(data), "--format", "json"]) == 0
    rows = {r["topic"]: r for r in orjson.loads(capsys.readouterr().out)["rows"]}
    assert rows["fs.dlq"]["records"] == 1
    assert rows["fs.gps"]["records"] == 1
    assert sum(r["records"] for r in rows.values()) == len(good) + 1


def test_ingest_table_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _jsonl(tmp_path, [encode(SAMPLES[0])])
    assert main(["ingest", str(path), "--data-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "fs.dispatch" in out
    assert main(["ingest", str(tmp_path / "nope.jsonl"), "--data-dir", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_data_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FIELDSTREAM_DATA_DIR", str(tmp_path / "env-data"))
    path = _jsonl(tmp_path, [encode(SAMPLES[0])])
    assert main(["ingest", str(path), "--format", "json"]) == 0
    assert (tmp_path / "env-data" / "log.sqlite3").exists()


def test_schemas_validate_every_sample_and_reject_a_bad_one(tmp_path: Path) -> None:
    assert main(["schemas", "--out", str(tmp_path), "--format", "json"]) == 0
    api = orjson.loads((tmp_path / "asyncapi.json").read_bytes())
    assert api["asyncapi"].startswith("3.")
    assert {c["address"] for c in api["channels"].values()} >= {"fs.gps", "fs.dlq", "fs.eta"}
    for sample in SAMPLES:
        schema = orjson.loads((tmp_path / "schemas" / f"{sample.type}.json").read_bytes())
        jsonschema.Draft202012Validator.check_schema(schema)
        doc = orjson.loads(orjson.dumps(to_document(sample)))
        jsonschema.validate(doc, schema)
    ping_schema = orjson.loads((tmp_path / "schemas" / "GpsPinged.json").read_bytes())
    bad = orjson.loads(encode(next(s for s in SAMPLES if s.type == "GpsPinged")))
    bad["data"]["lat"] = 123.0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, ping_schema)


def test_simulate_into_the_log_with_truth_and_a_paced_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    data = tmp_path / "data"
    truth = tmp_path / "truth.jsonl"
    began = time.monotonic()
    argv = ["simulate", "--technicians", "3", "--hours", "3", "--seed", "2", "--clock", "7200x"]
    argv += ["--data-dir", str(data), "--truth", str(truth), "--format", "json"]
    assert main(argv) == 0
    elapsed = time.monotonic() - began
    row = orjson.loads(capsys.readouterr().out)["rows"][0]
    assert row["accepted"] == row["events"] > 100
    assert row["rejected"] == 0
    assert row["truth rows"] == len(truth.read_bytes().splitlines())
    # three hours of deliveries at 7200x take a second and a half, not an instant
    assert elapsed >= 0.75


def test_simulated_days_of_one_workforce(tmp_path: Path) -> None:
    """``--workforce-seed``: two days with their own seeds, the same technicians."""

    def roster(seed: int, *extra: str) -> list[bytes]:
        out = tmp_path / f"day-{seed}-{len(extra)}.jsonl"
        argv = ["simulate", "--technicians", "3", "--hours", "2", "--seed", str(seed)]
        assert main([*argv, *extra, "--out", str(out)]) == 0
        lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        return [
            orjson.dumps(line["data"]) for line in lines if line["type"] == "TechnicianRegistered"
        ]

    monday = roster(2, "--workforce-seed", "2")
    assert len(monday) == 3
    assert roster(3, "--workforce-seed", "2") == monday
    assert roster(3) != monday
    assert main(["simulate", "--workforce-seed", "-1", "--out", str(tmp_path / "x")]) == 2


def test_clock_parsing() -> None:
    from gateway.feed import Clock

    assert Clock.parse("max").speed is None
    assert Clock.parse("realtime").speed == 1.0
    assert Clock.parse("30x").speed == 30.0
    with pytest.raises(ValueError, match="max, realtime or Nx"):
        Clock.parse("fast")


def test_bad_simulation_options_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.jsonl")
    assert main(["simulate", "--scenario", "blizzard", "--out", out]) == 2
    assert "unknown scenario 'blizzard'" in capsys.readouterr().err
    assert main(["simulate", "--set", "nonsense=1", "--out", out]) == 2
    assert "nonsense" in capsys.readouterr().err


@pytest.mark.kafka
def test_ingest_into_kafka(
    tmp_path: Path, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [encode(s) for s in SAMPLES if type(s) in INPUT_EVENTS]
    path = _jsonl(tmp_path, [*good, b"{broken"])
    assert main(["ingest", str(path), "--kafka", kafka_bootstrap, "--format", "json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["accepted"] == len(good)
    assert report["by_rule"] == {"json": 1}
    assert main(["topics", "--kafka", kafka_bootstrap, "--format", "json"]) == 0
    rows = {r["topic"]: r for r in orjson.loads(capsys.readouterr().out)["rows"]}
    assert rows["fs.dlq"]["records"] >= 1
    assert rows["fs.gps"]["records"] >= 1


def test_demo_runs_the_day_and_refuses_a_used_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "demo"
    argv = ["demo", "--technicians", "4", "--hours", "4", "--data-dir", str(data)]
    assert main([*argv, "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["rejected at ingest"] == doc["rejected by the pipeline"] == 0
    assert {r["topic"] for r in doc["rows"]} >= {"fs.gps", "fs.workorders", "fs.eta"}
    assert main(argv) == 2
    assert "already holds a log" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_serves_the_map_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """`fieldstream demo` as a user runs it: it prints the map's URL, the page is served with
    the live technicians, and Ctrl-C (SIGINT) stops everything with the day's KPI table."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    cli = Path(sys.executable).with_name("fieldstream")
    options = ["--port", "0", "--technicians", "6", "--clock", "120x"]
    proc = subprocess.Popen(
        [str(cli), "demo", "--data-dir", str(tmp_path / "demo"), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        map_url = None
        while map_url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Live map (dispatcher):"):
                map_url = line.split()[-1]
        assert map_url is not None, "".join(lines)
        with urllib.request.urlopen(map_url, timeout=10) as reply:
            assert reply.status == 200
            assert "<canvas" in reply.read().decode()
        base = map_url.split("/map?")[0]
        token = map_url.split("token=")[1]
        # The pipeline is live: technicians show up in the API while the day is played.
        request = urllib.request.Request(
            f"{base}/api/technicians", headers={"Authorization": f"Bearer {token}"}
        )
        techs: list[object] = []
        while not techs and time.monotonic() < deadline:
            with urllib.request.urlopen(request, timeout=10) as reply:
                techs = orjson.loads(reply.read())["technicians"]
            time.sleep(0.5)
        assert len(techs) == 6
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped by" in rest and "Ctrl-C" in rest
    assert "the day's KPIs" in rest and "on_time_rate" in rest
