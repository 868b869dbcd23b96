"""The engine end to end on a synthetic day: well-formed derived events, determinism (batches,
snapshots, replays), no look-ahead, privacy, queue chaining and late alerts."""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable

import orjson
import pytest

from eta_engine.engine import (
    _FLOAT_COLUMNS,
    _INT_COLUMNS,
    SOURCE,
    EtaConfig,
    EtaEngine,
    Fix,
    PingColumns,
    Positions,
)
from eta_engine.roads import RoadGraph
from events import kinds as k
from events.base import Causation, DerivedEvent, Event
from events.codec import decode, encode
from tests.eta_engine.conftest import MIN, T0, Stream
from tests.support import gps_ping


def _run(graph: RoadGraph, stream: Stream, batch: int = 500, flush: bool = True) -> list[bytes]:
    engine = EtaEngine(graph)
    out: list[Event] = []
    for i in range(0, len(stream), batch):
        out.extend(engine.apply(stream[i : i + batch]))
    if flush:
        out.extend(engine.flush())
    return [encode(e) for e in out]


@pytest.fixture(scope="module")
def outputs(graph: RoadGraph, day: Stream) -> list[bytes]:
    return _run(graph, day)


def test_derived_events_are_well_formed(day: Stream, outputs: list[bytes]) -> None:
    inputs = {position.id: (event, position) for event, position in day}
    events = [decode(raw) for raw in outputs]
    assert len({e.id for e in events}) == len(events)
    kinds = {e.type for e in events}
    assert "EtaUpdated" in kinds
    for e in events:
        assert isinstance(e, k.EtaUpdated | k.LateAlertRaised | k.LateAlertCleared)
        cause, position = inputs[e.causation.id]
        assert e.causation == position
        assert e.time == cause.time  # the cause's time, never a clock
        assert e.source == SOURCE
        assert e.subject == e.work_order_id
        if isinstance(e, k.EtaUpdated):
            assert e.p10 <= e.p50 <= e.p90
            assert e.id == f"eta-{e.causation.id}-{e.work_order_id}"
            reasons = {"assigned", "en_route", "moved", "interval", "job_overrun", "rescheduled"}
            assert e.reason in reasons


def test_windows_cover_the_arrivals(day: Stream, outputs: list[bytes]) -> None:
    arrived = {
        e.work_order_id: e.arrived_at
        for e, _ in day
        if isinstance(e, k.WorkOrderStateChanged) and e.status == "arrived"
    }
    checked = 0
    for wo, at in arrived.items():
        assert at is not None
        windows = [
            e
            for e in map(decode, outputs)
            if isinstance(e, k.EtaUpdated) and e.work_order_id == wo and e.time <= at - 10 * MIN
        ]
        if not windows:
            continue  # assigned less than ten minutes before the arrival
        last = windows[-1]
        # Ten minutes out the last published window holds the arrival (tap 20 s late).
        assert last.p10 - 2 * MIN <= at <= last.p90 + 2 * MIN
        checked += 1
    assert checked >= 2


def test_same_input_same_bytes(graph: RoadGraph, day: Stream, outputs: list[bytes]) -> None:
    assert _run(graph, day) == outputs


@pytest.mark.parametrize("batch", [1, 37, 100_000])
def test_batch_boundaries_do_not_change_outputs(
    graph: RoadGraph, day: Stream, outputs: list[bytes], batch: int
) -> None:
    assert _run(graph, day, batch=batch) == outputs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_of_pings_in_any_time_order_is_applied_as_one_event_at_a_time(
    graph: RoadGraph, day: Stream, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of pings works out the watermark, the step changes and the sequence numbers
    from the run as a whole: the same as event by event, with pings late, equal in time, or
    crossing into later steps in every mix: each step closes where and at the watermark it
    should, the whole state agrees, and a ping's sequence number is its place."""
    rng = random.Random(seed)
    stream: Stream = []
    for n, (event, position) in enumerate(day):
        if isinstance(event, k.GpsPinged) and rng.random() < 0.5:
            at = event.time + rng.choice([-3 * MIN, -1, 0, 1, MIN // 2, 2 * MIN])
            stream.append(_ping(n, event.technician_id, at, event.lat, event.lon))
        stream.append((event, position))
    place = {event.id: n + 1 for n, (event, _) in enumerate(stream)}
    closes: dict[int, list[tuple[int | None, int]]] = {}
    close_step = EtaEngine._close_step

    def spy(engine: EtaEngine) -> None:
        closes.setdefault(id(engine), []).append((engine._watermark, engine._seq))
        close_step(engine)

    monkeypatch.setattr(EtaEngine, "_close_step", spy)
    whole, single = EtaEngine(graph), EtaEngine(graph)
    for at in range(0, len(stream), 400):
        batch = stream[at : at + 400]
        out = [encode(e) for e in whole.apply(batch)]
        assert out == [encode(e) for item in batch for e in single.apply([item])]
        state = whole.snapshot()
        assert orjson.dumps(state) == orjson.dumps(single.snapshot())
        assert state["seq"] == at + len(batch)
        assert state["watermark"] == max(e.time for e, _ in stream[: at + len(batch)])
        assert all(row[7] == place[row[6][0]] for row in state["pings"])
    # A step closes just before the first event of a later one, at the largest time so far.
    step_ms = round(EtaConfig().step_s * 1000)
    expected: list[tuple[int | None, int]] = []
    mark: int | None = None
    for n, (event, _) in enumerate(stream):
        if mark is not None and event.time // step_ms > mark // step_ms:
            expected.append((mark, n))
        mark = event.time if mark is None else max(mark, event.time)
    assert len(expected) > 100
    assert closes[id(whole)] == closes[id(single)] == expected


@pytest.mark.parametrize("cut", [5, 140, 391, 600])
def test_snapshot_and_restore_mid_stream(
    graph: RoadGraph, day: Stream, outputs: list[bytes], cut: int
) -> None:
    first = EtaEngine(graph)
    out = [encode(e) for e in first.apply(day[:cut])]
    state = orjson.loads(orjson.dumps(first.snapshot()))  # it must be plain JSON
    second = EtaEngine(graph)
    second.restore(state)
    out += [encode(e) for e in second.apply(day[cut:])]
    out += [encode(e) for e in second.flush()]
    assert out == outputs


class _CountingPings:
    """A ping source that counts its reads and can refuse some rows (unreadable records)."""

    def __init__(self, items: list[tuple[k.GpsPinged, Causation]], bad: set[int]) -> None:
        self.items = items
        self.bad = bad
        self.read: list[int] = []

    def ping(self, row: int) -> Fix | None:
        self.read.append(row)
        if row in self.bad:
            return None
        ping, position = self.items[row]
        return (position, ping.lat, ping.lon, ping.speed_mps, ping.heading_deg)


def _columns(stream: Stream, bad: set[int]) -> tuple[Stream, PingColumns, _CountingPings]:
    rows: Stream = []
    before: list[int] = []
    items: list[tuple[k.GpsPinged, Causation]] = []
    for event, position in stream:
        if isinstance(event, k.GpsPinged):
            items.append((event, position))
        else:
            rows.append((event, position))
            before.append(len(items))
    source = _CountingPings(items, bad)
    tids = [p.technician_id for p, _ in items]
    return rows, PingColumns(tids, [p.time for p, _ in items], before, source), source


@pytest.mark.parametrize("cut", [0, 391])
def test_pings_as_columns_give_the_same_outputs_reading_only_some(
    graph: RoadGraph, day: Stream, outputs: list[bytes], cut: int
) -> None:
    engine = EtaEngine(graph)
    out = [encode(e) for e in engine.apply(day[:cut])]
    rows, columns, source = _columns(day[cut:], set())
    out += [encode(e) for e in engine.apply_columns(rows, columns) + engine.flush()]
    assert out == outputs
    # On site a van pings every minute, one step: most of those are each step's newest fix.
    # The drives' faster pings are read only when they are the newest or near the site.
    n = len(columns.times)
    assert 0 < len(set(source.read)) < n


def test_an_unreadable_ping_is_not_used(graph: RoadGraph, day: Stream) -> None:
    rows, columns, source = _columns(day, set())
    clean = EtaEngine(graph)
    expected = clean.apply_columns(rows, columns) + clean.flush()
    first_read = source.read[0]
    bad_id = source.items[first_read][1].id

    def caused_by_it(events: list[Event]) -> int:
        return sum(isinstance(e, DerivedEvent) and e.causation.id == bad_id for e in events)

    assert caused_by_it(expected) > 0  # read: a fix the engine uses
    rows, columns, source = _columns(day, {first_read})
    engine = EtaEngine(graph)
    out = engine.apply_columns(rows, columns) + engine.flush()
    assert len(out) > 10  # the day goes on without it
    assert caused_by_it(out) == 0


def test_restore_refuses_an_unknown_format(graph: RoadGraph) -> None:
    engine = EtaEngine(graph)
    state = engine.snapshot()
    state["format"] = 999
    with pytest.raises(ValueError):
        engine.restore(state)


@pytest.mark.parametrize("cut", [100, 333, 700])
def test_no_look_ahead(graph: RoadGraph, day: Stream, outputs: list[bytes], cut: int) -> None:
    # Dropping everything after `cut` leaves what was said before it unchanged.
    prefix = _run(graph, day[:cut], flush=False)
    assert outputs[: len(prefix)] == prefix
    last_time = max(e.time for e, _ in day[:cut])
    assert all(decode(raw).time <= last_time for raw in prefix)


def _latest(outputs: list[Event], wo: str, before: int) -> k.EtaUpdated:
    found = [
        e
        for e in outputs
        if isinstance(e, k.EtaUpdated) and e.work_order_id == wo and e.time <= before
    ]
    return found[-1]


def test_an_overrunning_job_moves_every_later_window(
    graph: RoadGraph, day_factory: Callable[..., Stream]
) -> None:
    # Windows early enough that nobody waits for them: the queue is chained by the work.
    normal = day_factory(durations_min=(50.0, 50.0, 50.0), windows_h=(0.0, 0.5, 1.0))
    overrun = day_factory(durations_min=(170.0, 50.0, 50.0), windows_h=(0.0, 0.5, 1.0))
    start = next(
        e.started_at
        for e, _ in overrun
        if isinstance(e, k.WorkOrderStateChanged) and e.work_order_id == "WO-J1"
        if e.status == "in_progress"
    )
    assert start is not None
    at = start + 100 * MIN  # J1 has taken twice its usual time and is still going
    runs = []
    for stream in (normal, overrun):
        engine = EtaEngine(graph)
        events = engine.apply([item for item in stream if item[0].time <= at + MIN])
        runs.append(events)
    # In the normal day J1 is done by now; compare each later job's last window.
    for wo in ("WO-J2", "WO-J3"):
        before = _latest(runs[1], wo, start)
        after = _latest(runs[1], wo, at)
        assert after.p50 > before.p50 + 20 * MIN
        assert after.p10 > before.p10 + 20 * MIN
    reasons = {e.reason for e in runs[1] if isinstance(e, k.EtaUpdated) and e.time > start}
    assert "job_overrun" in reasons


def test_late_alert_raised_ahead_and_cleared_on_arrival(
    graph: RoadGraph, day_factory: Callable[..., Stream]
) -> None:
    stream = day_factory(late_window=True)
    engine = EtaEngine(graph)
    events = engine.apply(stream) + engine.flush()
    raised = [e for e in events if isinstance(e, k.LateAlertRaised)]
    cleared = [e for e in events if isinstance(e, k.LateAlertCleared)]
    assert [e.work_order_id for e in raised] == ["WO-J3"]
    alert = raised[0]
    assert alert.time < alert.window_end
    assert alert.lead_time_s == (alert.window_end - alert.time) // 1000
    assert alert.lead_time_s > 15 * 60
    assert alert.probability_late >= EtaConfig().raise_threshold
    assert alert.p10 <= alert.p50 <= alert.p90
    assert alert.p50 > alert.window_end
    assert re.fullmatch(r"New ETA \d\d:\d\d-\d\d:\d\d", alert.message)
    assert alert.id == f"alert-{alert.causation.id}-WO-J3"
    # T-2 has the skills, is idle, and can make the window.
    assert alert.suggested_technician_id == "T-2"
    assert alert.suggested_p50 is not None and alert.suggested_p50 <= alert.window_end
    assert [(e.work_order_id, e.reason) for e in cleared] == [("WO-J3", "arrived")]
    assert cleared[0].time > alert.time


def test_no_delay_notice_for_work_the_shift_cannot_fit(
    graph: RoadGraph, day_factory: Callable[..., Stream]
) -> None:
    # The shifts end at 10:00: J3 (after two jobs of about an hour) will be moved to another
    # day by dispatch, so its certain lateness is not announced as a new ETA.
    stream = day_factory(late_window=True, planned_end_h=2.0)
    engine = EtaEngine(graph)
    events = engine.apply(stream) + engine.flush()
    assert not [e for e in events if isinstance(e, k.LateAlertRaised)]
    assert any(isinstance(e, k.EtaUpdated) and e.work_order_id == "WO-J3" for e in events)


def test_the_message_is_in_local_time(graph: RoadGraph, day_factory: Callable[..., Stream]) -> None:
    stream = day_factory(late_window=True)
    shifted = EtaEngine(graph, EtaConfig(utc_offset_minutes=0))
    local = EtaEngine(graph)
    a = next(e for e in shifted.apply(stream) if isinstance(e, k.LateAlertRaised))
    b = next(e for e in local.apply(stream) if isinstance(e, k.LateAlertRaised))
    hours_a = int(a.message[8:10])
    hours_b = int(b.message[8:10])
    assert (hours_b - hours_a) % 24 == 1


def _ping(n: int, tech: str, at: int, lat: float, lon: float) -> tuple[Event, Causation]:
    event = gps_ping(tech, at, lat, lon, id=f"extra-{n}")
    return event, Causation(event.id, "fs.gps", 1, 10_000 + n)


def test_pings_outside_the_shift_are_not_used(graph: RoadGraph, day: Stream) -> None:
    end = next(e.time for e, _ in day if isinstance(e, k.ShiftEnded))
    engine = EtaEngine(graph)
    engine.apply(day)
    engine.flush()
    slot = engine.techs["T-1"].slot
    assert engine.pos.ping_ms[slot] == -1  # forgotten at the end of the shift
    late = [_ping(i, "T-1", end + (i + 1) * MIN, 42.51, 1.53) for i in range(5)]
    out = engine.apply(late) + engine.flush()
    assert out == []
    assert engine.pos.ping_ms[slot] == -1
    assert engine.techs["T-1"].seen_ms == -1


def test_an_out_of_order_ping_is_not_a_position(graph: RoadGraph, day: Stream) -> None:
    cut = 200
    engine = EtaEngine(graph)
    head = engine.apply(day[:cut])
    newest = max(e.time for e, _ in day[:cut] if isinstance(e, k.GpsPinged))
    stale = _ping(1, "T-1", newest - 5 * MIN, 42.60, 1.60)  # far away, five minutes old
    out = engine.apply([stale, *day[cut:]]) + engine.flush()
    assert all(isinstance(e, DerivedEvent) and e.causation.id != "extra-1" for e in out)
    reference = EtaEngine(graph)
    expected = reference.apply(day) + reference.flush()
    # Everything after the cut is as if the stale ping had never come.
    assert len(out) >= 5
    assert [encode(e) for e in expected[len(head) :]] == [encode(e) for e in out]


def test_positions_grow_and_round_trip() -> None:
    pos = Positions(capacity=4)
    rows = [pos.add() for _ in range(10)]  # grows twice
    assert rows == list(range(10))
    for name in _INT_COLUMNS + _FLOAT_COLUMNS:
        assert len(getattr(pos, name)) == pos.capacity >= 10
    pos.edge[7], pos.x[7], pos.drive_free[9] = 123, 4.5, 6.0
    pos.forget(9)
    other = Positions()
    other.restore(orjson.loads(orjson.dumps(pos.snapshot())))
    assert other.n == 10
    assert other.edge[7] == 123 and other.x[7] == 4.5
    assert other.drive_free[9] != other.drive_free[9]  # NaN: forgotten


def test_finished_orders_are_forgotten(graph: RoadGraph, day: Stream) -> None:
    engine = EtaEngine(graph)
    engine.apply(day)
    assert "WO-J3" in engine.jobs  # finished at noon, the day's pings run to 16:00
    assert "WO-J1" not in engine.jobs  # finished before 10:00: more than six hours ago
    later = max(e.time for e, _ in day) + 7 * 3_600_000
    engine.apply(
        [_ping(1, "T-2", later, 42.5451, 1.5147), _ping(2, "T-2", later + 61_000, 42.5451, 1.5147)]
    )
    assert not {"WO-J1", "WO-J2", "WO-J3"} & set(engine.jobs)


def _assigned(wo: str, at: int, position: int | None, window_h: float) -> tuple[Event, Causation]:
    event = k.WorkOrderStateChanged(
        id=f"as-{wo}-{at}",
        source="test/aggregates",
        time=at,
        subject=wo,
        causation=Causation(f"in-{wo}-{at}", "fs.dispatch", 0, 0),
        work_order_id=wo,
        status="assigned",
        previous_status="booked",
        trigger="TechnicianAssigned",
        technician_id="T-9",
        previous_technician_id=None,
        visit=1,
        customer_id="C-1",
        site_lat=42.5078,
        site_lon=1.5211,
        region="Andorra la Vella",
        job_type="leak_repair",
        priority="normal",
        window_start=T0 + round(window_h * 3_600_000),
        window_end=T0 + round((window_h + 2) * 3_600_000),
        queue_position=position,
        assigned_at=at,
    )
    return event, Causation(event.id, "fs.by-technician", 0, at)


def test_a_plan_is_queued_by_position_whatever_order_it_arrives_in(graph: RoadGraph) -> None:
    plan = [_assigned(f"WO-{p}", T0 - 15 * MIN, p, p * 1.5) for p in range(5)]
    for order in ([0, 1, 2, 3, 4], [2, 0, 4, 1, 3], [4, 3, 2, 1, 0]):
        engine = EtaEngine(graph)
        engine.apply([plan[i] for i in order])
        assert engine.techs["T-9"].queue == ["WO-0", "WO-1", "WO-2", "WO-3", "WO-4"]
    # Later: an urgent job at the front, then one put second (the queue as it is then).
    engine.apply([_assigned("WO-urgent", T0 + 30 * MIN, 0, 0.5)])
    engine.apply([_assigned("WO-revisit", T0 + 40 * MIN, 1, 2.0)])
    engine.apply([_assigned("WO-by-window", T0 + 50 * MIN, None, 3.5)])
    assert engine.techs["T-9"].queue == [
        "WO-urgent",
        "WO-revisit",
        "WO-0",
        "WO-1",
        "WO-2",
        "WO-by-window",
        "WO-3",
        "WO-4",
    ]


def _started(stream: Stream, wo: str) -> tuple[k.WorkOrderStateChanged, Causation]:
    return next(
        (e, c)
        for e, c in stream
        if isinstance(e, k.WorkOrderStateChanged) and e.work_order_id == wo
        if e.trigger == "WorkStarted"
    )


def test_a_part_found_missing_ends_the_visit_soon(
    graph: RoadGraph, day_factory: Callable[..., Stream]
) -> None:
    # The work-order stage records a PartMissing as a snapshot of the order (trigger
    # "PartMissing"); the engine then times the rest of the visit by the missing-part
    # wind-down, not by the job's duration: the next job's window comes forward at once.
    stream = day_factory(windows_h=(0.0, 0.5, 1.0))
    started, cause = _started(stream, "WO-J1")
    assert started.started_at is not None
    at = started.started_at + 10 * MIN
    missing = dataclasses.replace(started, id="ws-missing", time=at, trigger="PartMissing")
    position = Causation("in-missing", cause.topic, cause.partition, cause.offset)
    before = [item for item in stream if item[0].time <= at]
    windows = []
    for extra in ([], [(missing, position)]):
        engine = EtaEngine(graph)
        events = engine.apply([*before, *extra]) + engine.flush()
        windows.append(_latest(events, "WO-J2", at))
        if extra:
            assert engine.jobs["WO-J1"].part_missing_ms == at
    as_usual, cut_short = windows
    assert cut_short.p50 < as_usual.p50 - 20 * MIN


@pytest.mark.parametrize("censoring", [True, False])
def test_work_under_way_reaches_the_duration_model(
    graph: RoadGraph, day: Stream, censoring: bool
) -> None:
    started, _ = _started(day, "WO-J1")
    assert started.started_at is not None
    at = started.started_at + 20 * MIN
    engine = EtaEngine(graph, EtaConfig(duration_censoring=censoring))
    engine.apply([item for item in day if item[0].time <= at])
    engine.flush()
    under_way = engine.durations._open
    if censoring:
        assert [(t, again) for t, again, _ in under_way] == [("boiler_service", False)]
        assert under_way[0][2] == pytest.approx(20 * 60.0, abs=90.0)
    else:
        assert under_way == []
