"""``fieldstream kpi`` and ``fieldstream report`` on a processed day; the report's charts are
opened as images and checked: PNG, the expected size, not blank."""

from __future__ import annotations

import base64
import csv
import io
import re
import shutil
import struct
from pathlib import Path

import orjson
import pytest
from PIL import Image

from gateway.cli import main
from gateway.report import CHART_SIZES
from projections.kpis import HEADLINE, METRIC_NAMES
from tests.projections.conftest import ProcessedDay


def test_kpi_prints_the_fleet_table_and_json_and_csv(
    processed_day: ProcessedDay, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(processed_day.data_dir)
    assert main(["kpi", "--data-dir", data]) == 0
    out = capsys.readouterr().out
    assert "2026-11-23" in out and all(name in out for name in HEADLINE)

    assert main(["kpi", "--data-dir", data, "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["days"] == ["2026-11-23"] and doc["lag"] == 0
    (fleet,) = doc["rows"]
    assert fleet["group"] == "all" and set(METRIC_NAMES) <= set(fleet)
    assert fleet["visits"] == len(processed_day.sim.truth)

    assert main(["kpi", "--data-dir", data, "--by", "job-type", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["dimension"] for r in rows} == {"job_type"}
    assert sum(float(r["visits"]) for r in rows) == fleet["visits"]


def test_kpi_by_team_and_technician_covers_every_group(
    processed_day: ProcessedDay, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(processed_day.data_dir)
    assert main(["kpi", "--data-dir", data, "--by", "team", "--day", "all"]) == 0
    assert "heating-01" in capsys.readouterr().out
    argv = ["kpi", "--data-dir", data, "--by", "technician", "--format", "json"]
    assert main([*argv, "--metrics", "visits,utilisation"]) == 0
    rows = orjson.loads(capsys.readouterr().out)["rows"]
    assert {r["group"] for r in rows} == set(processed_day.sim.technicians.ids)
    assert set(rows[0]) == {"day", "dimension", "group", "visits", "utilisation"}


def test_kpi_refuses_what_it_cannot_show(
    processed_day: ProcessedDay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(processed_day.data_dir)
    assert main(["kpi", "--data-dir", data, "--day", "2020-01-01"]) == 2
    assert "no KPIs for 2020-01-01" in capsys.readouterr().err
    assert main(["kpi", "--data-dir", data, "--metrics", "happiness"]) == 2
    assert "unknown metric happiness" in capsys.readouterr().err
    assert main(["kpi", "--data-dir", str(tmp_path)]) == 2
    assert "fieldstream process" in capsys.readouterr().err


def test_kpi_publish_sends_the_day_to_fs_kpi(
    processed_day: ProcessedDay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "copy"
    shutil.copytree(processed_day.data_dir, data)
    assert main(["kpi", "--data-dir", str(data), "--publish", "--format", "json"]) == 0
    published = orjson.loads(capsys.readouterr().out)["published"]
    assert main(["topics", "--data-dir", str(data), "--format", "json"]) == 0
    topics = {r["topic"]: r for r in orjson.loads(capsys.readouterr().out)["rows"]}
    assert topics["fs.kpi"]["records"] == published > 20


def _pngs(html: str) -> dict[str, bytes]:
    found = re.findall(r'<img id="(\w+)"[^>]*src="data:image/png;base64,([^"]+)"', html)
    return {name: base64.b64decode(data) for name, data in found}


def test_report_is_one_html_file_with_three_real_charts(
    processed_day: ProcessedDay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    argv = ["report", "--data-dir", str(processed_day.data_dir), "--out", str(out)]
    assert main([*argv, "--format", "json"]) == 0
    summary = orjson.loads(capsys.readouterr().out)["rows"][0]
    assert summary["file"] == str(out)
    html = out.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "first_time_fix_rate" in html and "heating-01" in html
    charts = _pngs(html)
    assert set(charts) == set(CHART_SIZES) == {"trends", "calibration", "lead_times"}
    for name, png in charts.items():
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        assert (width, height) == CHART_SIZES[name], name
        image = Image.open(io.BytesIO(png)).convert("RGB")
        assert image.size == CHART_SIZES[name]
        colours = image.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, f"{name} looks blank"
        # ink on the page: a good share of the pixels is not background white
        inked = sum(n for n, rgb in colours if rgb != (255, 255, 255))
        assert inked > 0.02 * width * height, name
