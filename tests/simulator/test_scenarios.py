"""Scenario presets and day parameters."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest

from events.codec import format_time
from simulator.scenarios import SCENARIOS, Scenario, SimParams, make_params, parse_override


def test_the_four_documented_presets_exist_and_differ_from_normal() -> None:
    assert set(SCENARIOS) == {"normal", "rush-hour", "incidents", "sparse-gps"}
    normal = SCENARIOS["normal"]
    for name, preset in SCENARIOS.items():
        assert preset.name == name
        if name != "normal":
            changed = [
                f.name
                for f in dataclasses.fields(Scenario)
                if f.name not in ("name", "description")
                and getattr(preset, f.name) != getattr(normal, f.name)
            ]
            assert changed, name
    assert SCENARIOS["rush-hour"].congestion_amplitude > normal.congestion_amplitude
    assert SCENARIOS["incidents"].incident_rate_per_hour > normal.incident_rate_per_hour
    assert SCENARIOS["sparse-gps"].ping_interval_s == (60.0, 120.0)


def test_any_parameter_is_overridable_one_by_one() -> None:
    preset = SCENARIOS["rush-hour"]
    changed = dataclasses.replace(preset, dropout_rate=0.5)
    assert changed.dropout_rate == 0.5
    assert changed.congestion_amplitude == preset.congestion_amplitude
    params = make_params("rush-hour", technicians=7, seed=3, hours=4.0, late_delivery_rate=0.25)
    assert params.scenario.late_delivery_rate == 0.25
    assert params.scenario.name == "rush-hour"
    assert dataclasses.replace(params, seed=4).seed == 4


@pytest.mark.parametrize(
    "override",
    [
        {"dropout_rate": 1.5},
        {"ping_interval_s": (20.0, 10.0)},
        {"ping_interval_s": (0.5, 1.0)},
        {"incident_slowdown": (0.5, 2.0)},
        {"window_minutes": 5},
        {"congestion_amplitude": -1.0},
    ],
)
def test_invalid_values_fail_at_construction(override: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(SCENARIOS["normal"], **override)


def test_unknown_override_names_are_refused() -> None:
    with pytest.raises(TypeError):
        make_params("normal", no_such_field=1)
    with pytest.raises(KeyError):
        make_params("gridlock")


def test_parse_override_types_values_by_field() -> None:
    assert parse_override("dropout_rate=0.1") == ("dropout_rate", 0.1)
    assert parse_override("window-minutes=90") == ("window_minutes", 90)
    assert parse_override("ping_interval_s=60,120") == ("ping_interval_s", (60.0, 120.0))
    with pytest.raises(ValueError):
        parse_override("nope=1")
    with pytest.raises(ValueError):
        parse_override("ping_interval_s=60")


def test_default_day_is_monday_2026_11_23_shift_0800_1700_at_utc_plus_1() -> None:
    params = SimParams()
    assert params.start_date == date(2026, 11, 23)
    assert params.start_date.weekday() == 0
    assert format_time(params.shift_start_ms) == "2026-11-23T07:00:00.000Z"
    assert format_time(params.shift_end_ms) == "2026-11-23T16:00:00.000Z"
    assert format_time(params.log_start_ms) == "2026-11-23T06:00:00.000Z"


def test_run_tag_depends_on_every_parameter() -> None:
    a = make_params("normal", seed=1)
    assert a.run_tag() == make_params("normal", seed=1).run_tag()
    assert a.run_tag() != make_params("normal", seed=2).run_tag()
    assert a.run_tag() != make_params("sparse-gps", seed=1).run_tag()
    assert a.run_tag() != make_params("normal", seed=1, dropout_rate=0.2).run_tag()
    assert a.run_tag() != make_params("normal", seed=1, workforce_seed=1).run_tag()
    assert (
        make_params("normal", seed=1, workforce_seed=2).run_tag()
        != make_params("normal", seed=1, workforce_seed=3).run_tag()
    )
