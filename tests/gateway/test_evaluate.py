"""The scoring of the ETA evaluation, on hand-made forecasts with known answers."""

from __future__ import annotations

import dataclasses
from typing import Any

from eta_engine.roads import RoadGraph
from events import kinds as k
from events.base import Causation
from events.codec import decode, encode
from gateway.evaluate import score
from tests.support import gps_ping, graph

MIN = 60_000
T0 = 1_795_400_000_000
CAUSE = Causation("c", "fs.gps", 0, 0)
SITE = (42.5063, 1.5218)


def eta(n: int, at: int, p10: int, p50: int, p90: int) -> bytes:
    return encode(
        k.EtaUpdated(
            id=f"e{n}",
            source="t",
            time=at,
            subject="WO-1",
            causation=CAUSE,
            work_order_id="WO-1",
            technician_id="T-1",
            p10=p10,
            p50=p50,
            p90=p90,
            window_start=T0,
            window_end=T0 + 60 * MIN,
            reason="x",
            model_version="m",
        )
    )


def ping(n: int, at: int, lat: float, lon: float) -> bytes:
    return encode(gps_ping("T-1", at, lat, lon, id=f"g{n}", source="t"))


def alert(cls: type[Any], n: int, at: int, wo: str = "WO-1") -> bytes:
    common: dict[str, Any] = dict(
        id=f"a{n}",
        source="t",
        time=at,
        subject=wo,
        causation=CAUSE,
        work_order_id=wo,
        technician_id="T-1",
        probability_late=0.9 if cls is k.LateAlertRaised else 0.1,
    )
    if cls is k.LateAlertRaised:
        common.update(
            p10=T0,
            p50=T0,
            p90=T0,
            window_start=T0,
            window_end=T0 + 60 * MIN,
            lead_time_s=60,
            message="m",
        )
    else:
        common.update(p50=T0, reason="r")
    return encode(cls(**common))


def test_scores_forecasts_coverage_and_alerts() -> None:
    arrival = T0 + 100 * MIN
    truth = [
        {
            "work_order_id": "WO-1",
            "visit": 1,
            "technician_id": "T-1",
            "en_route_ms": T0,
            "arrival_ms": arrival,
            "travel_s": 100 * 60,
            "late": True,
            "window_end_ms": T0 + 60 * MIN,
        }
    ]
    etas = [
        eta(1, arrival - 70 * MIN, arrival - 20 * MIN, arrival - 10 * MIN, arrival + 5 * MIN),
        eta(2, arrival - 35 * MIN, arrival + 1 * MIN, arrival + 2 * MIN, arrival + 3 * MIN),
        eta(3, arrival - 5 * MIN, arrival - 1 * MIN, arrival, arrival + 1 * MIN),
    ]
    pings = [ping(1, arrival - 61 * MIN, 42.55, 1.55), ping(2, arrival - 31 * MIN, 42.52, 1.53)]
    alerts = [
        alert(k.LateAlertRaised, 1, T0 + 10 * MIN),
        alert(k.LateAlertCleared, 2, T0 + 12 * MIN),
        alert(k.LateAlertRaised, 3, T0 + 15 * MIN),
    ]
    g: RoadGraph = graph()
    result = score(
        truth=truth,
        eta_records=etas,
        alert_records=alerts,
        gps_records=pings,
        sites={"WO-1": SITE},
        graph=g,
        horizons_min=(60, 30, 10),
    )
    h = result["horizons"]
    # at 60 min the latest forecast is e1 (P50 10 min early, window covers the arrival)
    assert h["60"]["engine_mae_min"] == 10.0 and h["60"]["coverage"] == 1.0
    # at 30 and 10 min it is e2 (2 min late, window misses the arrival)
    assert h["30"]["engine_mae_min"] == 2.0 and h["30"]["coverage"] == 0.0
    assert h["10"]["median_width_min"] == 2.0
    assert h["60"]["crowflies_mae_min"] is not None and h["60"]["freeflow_mae_min"] is not None
    a = result["alerts"]
    assert (a["late_visits"], a["alerts"], a["recall"], a["precision"]) == (1, 2, 1.0, 1.0)
    assert a["median_lead_min"] == 50.0  # window end minus the first alert
    assert a["flap_rate"] == 0.5  # raised, cleared and raised again within 10 minutes
    # The technician set off at T0: at every horizon they were en route to this visit.
    states = result["by_state"]
    assert states["30"]["en_route"]["visits"] == 1
    assert states["30"]["not_departed"]["visits"] == 0
    assert states["30"]["en_route"]["engine_mae_min"] == h["30"]["engine_mae_min"]


def _row(wo: str, visit: int, arrival: int, late: bool, en_route: int) -> dict[str, Any]:
    return {
        "work_order_id": wo,
        "visit": visit,
        "technician_id": "T-1",
        "en_route_ms": en_route,
        "arrival_ms": arrival,
        "travel_s": (arrival - en_route) / 1000,
        "late": late,
        "window_end_ms": arrival + (-5 if late else 5) * MIN,
    }


def test_horizons_split_by_what_the_technician_was_doing() -> None:
    # WO-1: set off 20 min before arriving; WO-2: set off 5 min before (still on a previous
    # job, or waiting, 10 and 30 minutes before the arrival).
    a1, a2 = T0 + 100 * MIN, T0 + 200 * MIN
    truth = [_row("WO-1", 1, a1, False, a1 - 20 * MIN), _row("WO-2", 1, a2, False, a2 - 5 * MIN)]
    etas = [eta(1, a1 - 70 * MIN, a1 - 9 * MIN, a1, a1 + 9 * MIN)]
    other = decode(eta(2, a2 - 70 * MIN, a2, a2 + 4 * MIN, a2 + 9 * MIN))
    etas.append(encode(dataclasses.replace(other, work_order_id="WO-2", subject="WO-2")))
    pings = [ping(1, T0, 42.55, 1.55)]
    result = score(
        truth=truth,
        eta_records=etas,
        alert_records=[],
        gps_records=pings,
        sites={"WO-1": SITE, "WO-2": SITE},
        graph=graph(),
        horizons_min=(30, 10),
    )
    ten, thirty = result["by_state"]["10"], result["by_state"]["30"]
    assert (ten["en_route"]["visits"], ten["not_departed"]["visits"]) == (1, 1)
    assert ten["en_route"]["engine_mae_min"] == 0.0
    assert ten["not_departed"]["engine_mae_min"] == 4.0
    assert (thirty["en_route"]["visits"], thirty["not_departed"]["visits"]) == (0, 2)
    assert thirty["en_route"]["engine_mae_min"] is None
    assert result["horizons"]["30"]["engine_mae_min"] == 2.0  # the two together


def test_an_alert_concerns_the_visit_that_followed_it() -> None:
    # WO-1's first visit was on time; a second visit (the part came) was late, and the alert
    # was raised between the two: it is a true alert, for the second visit. WO-2's alert was
    # followed by no visit that day (moved to another day): not a late visit.
    first, second = T0 + 60 * MIN, T0 + 300 * MIN
    truth = [
        _row("WO-1", 1, first, False, first - 20 * MIN),
        _row("WO-1", 2, second, True, second - 20 * MIN),
    ]
    alerts = [
        alert(k.LateAlertRaised, 1, first + 120 * MIN),
        alert(k.LateAlertRaised, 2, first + 30 * MIN, wo="WO-2"),
    ]
    result = score(
        truth=truth,
        eta_records=[],
        alert_records=alerts,
        gps_records=[],
        sites={"WO-1": SITE},
        graph=graph(),
    )
    a = result["alerts"]
    assert (a["late_visits"], a["recall"], a["precision"]) == (1, 1.0, 0.5)
    assert a["median_lead_min"] == 115.0  # (second - 5 min) - (first + 120 min)
    # An alert raised before the first (on-time) visit does not announce the second one.
    early = score(
        truth=truth,
        eta_records=[],
        alert_records=[alert(k.LateAlertRaised, 3, first - 30 * MIN)],
        gps_records=[],
        sites={"WO-1": SITE},
        graph=graph(),
    )["alerts"]
    assert (early["recall"], early["precision"]) == (0.0, 0.0)


def test_eval_eta_prints_the_documented_json(capsys: Any) -> None:
    import orjson

    from gateway.cli import main

    argv = ["eval-eta", "--scenario", "incidents", "--seed", "3", "--technicians", "8"]
    assert main([*argv, "--hours", "6", "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert (doc["scenario"], doc["seed"]) == ("incidents", 3)
    assert set(doc["horizons"]) == {"60", "30", "10"}
    for values in doc["horizons"].values():
        assert set(values) >= {
            "engine_mae_min",
            "crowflies_mae_min",
            "freeflow_mae_min",
            "coverage",
            "median_width_min",
        }
    assert set(doc["alerts"]) >= {"recall", "precision", "median_lead_min", "flap_rate"}
    assert doc["horizons"]["10"]["visits"] > 0
