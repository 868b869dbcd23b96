"""The gateway's HTTP routes on a running gateway: health, metrics, the API and its access
rules, the pages and the street geometry."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

from gateway import tokens
from streams.bootstrap import open_state_store
from streams.config import Config
from tests.gateway.livekit import (
    KEY,
    T0,
    Running,
    eta,
    http_get,
    late,
    next_of,
    order,
    ping,
    registered,
    seed,
    shift,
    start_gateway,
)
from tests.support import embedded_day, process, simulated_day


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Running]:
    events = [
        registered("T-1", "Anna Puig", "Canillo"),
        registered("T-2", "Pere Mas", "Ordino"),
        shift("T-1"),
        ping("T-1", T0 + 1000),
        order("WO-1", "assigned", T0 + 500, "T-1", "Canillo"),
        eta("WO-1", T0 + 600, T0 + 3_600_000, T0 + 4_000_000, T0 + 4_400_000),
        order("WO-1", "en_route", T0 + 700, "T-1", "Canillo", en_route_at=T0 + 700),
        late("WO-1", T0 + 800, "New ETA 11:00-11:30"),
        order("WO-2", "booked", T0 + 500, None, "Ordino"),
    ]
    asyncio.run(seed(tmp_path, events))
    running = start_gateway(tmp_path)
    yield running
    running.stop()


def test_health_and_readiness(gw: Running) -> None:
    assert http_get(f"{gw.http}/healthz")[0] == 200
    status, _, body = http_get(f"{gw.http}/readyz")
    assert status == 200 and orjson.loads(body)["status"] == "ready"


def test_metrics_in_the_prometheus_format(gw: Running) -> None:
    async def watch() -> None:
        async with connect(f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}") as ws:
            await next_of(ws, "snapshot")
            status, headers, body = http_get(f"{gw.http}/metrics")
            assert status == 200 and headers["Content-Type"].startswith("text/plain")
            text = body.decode()
            assert 'fieldstream_ws_clients{feed="dispatch"} 1.0' in text
            assert 'fieldstream_ws_frames_sent_total{feed="dispatch",type="snapshot"} 1.0' in text

    asyncio.run(watch())
    text = http_get(f"{gw.http}/metrics")[2].decode()
    assert 'fieldstream_events_processed_total{stage="gateway",topic="fs.workorders"} 3.0' in text
    assert 'fieldstream_consumer_lag_records{consumer="gateway",topic="fs.gps"} 0.0' in text
    assert "fieldstream_alerts_raised_total 1.0" in text
    assert 'fieldstream_ws_clients{feed="dispatch"} 0.0' in text
    for family in ("fieldstream_batch_seconds", "fieldstream_eta_abs_error_seconds"):
        assert f"# TYPE {family} histogram" in text


def test_eta_error_is_observed_at_arrival(gw: Running) -> None:
    arrived = T0 + 4_000_000 + 120_000  # two minutes after the P50
    asyncio.run(
        seed(gw.data_dir, [order("WO-1", "arrived", arrived, "T-1", "Canillo", arrived_at=arrived)])
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = http_get(f"{gw.http}/metrics")[2].decode()
        if 'fieldstream_eta_arrivals_total{inside="true",when="last"} 1.0' in text:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(text)
    assert 'fieldstream_eta_abs_error_seconds_bucket{le="120.0",when="last"} 1.0' in text
    assert 'fieldstream_eta_abs_error_seconds_bucket{le="60.0",when="last"} 0.0' in text


def test_the_api_needs_a_dispatcher_token(gw: Running) -> None:
    assert http_get(f"{gw.http}/api/technicians")[0] == 401
    expired = tokens.issue_dispatcher(KEY, now=int(time.time()) - 100, ttl_s=10)
    status, _, body = http_get(f"{gw.http}/api/technicians?token={expired}")
    assert status == 401 and orjson.loads(body)["error"] == "token_expired"
    status, _, body = http_get(f"{gw.http}/api/technicians?token={gw.customer('WO-1')}")
    assert status == 403 and orjson.loads(body)["error"] == "scope_denied"


def test_technicians_and_work_orders(gw: Running) -> None:
    auth = {"Authorization": f"Bearer {gw.dispatcher()}"}
    status, _, body = http_get(f"{gw.http}/api/technicians", auth)
    techs = {t["id"]: t for t in orjson.loads(body)["technicians"]}
    assert status == 200 and set(techs) == {"T-1", "T-2"}
    assert techs["T-1"]["status"] == "en_route" and techs["T-1"]["job"] == "WO-1"
    assert techs["T-1"]["position"][4] == T0 + 1000
    assert techs["T-2"]["position"] is None  # never on shift
    status, _, body = http_get(f"{gw.http}/api/work-orders/WO-1", auth)
    doc = orjson.loads(body)
    assert status == 200 and doc["work_order"]["status"] == "en_route"
    assert doc["live"]["eta"] == [T0 + 3_600_000, T0 + 4_000_000, T0 + 4_400_000]
    assert doc["live"]["late"]["message"] == "New ETA 11:00-11:30"
    assert doc["customer"]["headline"].startswith("On the way, arriving")
    assert http_get(f"{gw.http}/api/work-orders/WO-404", auth)[0] == 404


def test_a_regional_token_sees_its_region_only(gw: Running) -> None:
    auth = {"Authorization": f"Bearer {gw.dispatcher('Ordino')}"}
    body = http_get(f"{gw.http}/api/technicians", auth)[2]
    assert [t["id"] for t in orjson.loads(body)["technicians"]] == ["T-2"]
    assert http_get(f"{gw.http}/api/work-orders/WO-1", auth)[0] == 404
    assert http_get(f"{gw.http}/api/work-orders/WO-2", auth)[0] == 200
    assert http_get(f"{gw.http}/api/kpi?by=team", auth)[0] == 403


def test_kpi_before_any_projection_says_so(gw: Running) -> None:
    status, _, body = http_get(f"{gw.http}/api/kpi?token={gw.dispatcher()}")
    assert status == 503 and orjson.loads(body)["error"] == "no_projections"


def test_kpi_tables_with_the_cli_filters(tmp_path: Path) -> None:
    async def day() -> None:
        log = await embedded_day(tmp_path, simulated_day("normal", technicians=4, hours=4.0))
        store = open_state_store(tmp_path, None)
        try:
            await process(log, store, Config(data_dir=tmp_path))
        finally:
            store.close()
            await log.close()

    asyncio.run(day())
    gw = start_gateway(tmp_path)
    try:
        token = gw.dispatcher()
        status, _, body = http_get(f"{gw.http}/api/kpi?token={token}&metrics=visits,on_time_rate")
        doc = orjson.loads(body)
        assert status == 200 and doc["days"] == ["2026-11-23"]
        (row,) = doc["rows"]
        assert row["by"] == "all" and row["visits"] > 0 and 0 <= row["on_time_rate"] <= 1
        assert set(row) == {"day", "by", "group", "visits", "on_time_rate"}
        body = http_get(f"{gw.http}/api/kpi?token={token}&by=technician&day=all")[2]
        rows = orjson.loads(body)["rows"]
        assert len(rows) == 4 and all(r["by"] == "technician" for r in rows)
        assert http_get(f"{gw.http}/api/kpi?token={token}&day=1999-01-01")[0] == 404
        assert http_get(f"{gw.http}/api/kpi?token={token}&metrics=happiness")[0] == 400
        regional = gw.dispatcher("Canillo")
        body = http_get(f"{gw.http}/api/kpi?token={regional}&by=region")[2]
        assert {r["group"] for r in orjson.loads(body)["rows"]} <= {"Canillo"}
    finally:
        gw.stop()


def test_pages_are_served_with_a_strict_content_policy(gw: Running) -> None:
    status, headers, body = http_get(f"{gw.http}/map")
    assert status == 200 and b"<canvas" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"OpenStreetMap contributors" in body
    status, _, body = http_get(f"{gw.http}/track/WO-1")
    assert status == 200 and b"track.js" in body
    status, headers, _ = http_get(f"{gw.http}/static/map.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert http_get(f"{gw.http}/static/../server.py")[0] == 404
    assert http_get(f"{gw.http}/nowhere")[0] == 404


def test_the_streets_as_compact_json(gw: Running) -> None:
    status, headers, packed = http_get(f"{gw.http}/roads.json", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    doc = orjson.loads(gzip.decompress(packed))
    assert doc["attribution"] == "Map data © OpenStreetMap contributors, ODbL"
    assert len(doc["lines"]) > 1000
    scale = doc["scale"]
    lat = doc["lines"][0][1] / scale
    assert doc["bbox"][0] - 0.01 <= lat <= doc["bbox"][2] + 0.01
    plain = http_get(f"{gw.http}/roads.json")
    assert orjson.loads(plain[2]) == doc


def test_only_get_and_head(gw: Running) -> None:
    import urllib.request

    request = urllib.request.Request(f"{gw.http}/healthz", method="HEAD")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200 and response.read() == b""
    request = urllib.request.Request(f"{gw.http}/healthz", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 405
    info.value.close()
