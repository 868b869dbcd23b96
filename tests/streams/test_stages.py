"""The fleet stage's batch ping path and the runner's columnar merge, without a log."""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregates.workorder import Visit
from events import kinds as k
from events.catalog import DLQ, DLQ_RULE, WORKORDERS, topic_for
from events.codec import decode, encode
from streams.log import Columns, Record
from streams.pipeline import _merge_columns
from streams.stages import JOB_FIELDS, FleetProcessor, WorkOrderProcessor, job_fields
from tests.events.samples import SAMPLES
from tests.support import gps_ping

T0 = 1_795_400_000_000
MIN = 60_000


def tech_record(event: k.Event, offset: int) -> Record:
    key = event.key.encode()
    return Record("fs.by-technician", 0, offset, event.time, key, encode(event))


def registered(tid: str, at: int) -> k.Event:
    return k.TechnicianRegistered(
        id=f"reg-{tid}",
        source="t",
        time=at,
        subject=tid,
        technician_id=tid,
        name="A",
        skills=("hvac",),
        team="x",
        region="r",
        home_lat=42.5,
        home_lon=1.5,
    )


def shift(tid: str, at: int, started: bool) -> k.Event:
    if started:
        return k.ShiftStarted(
            id=f"start-{tid}-{at}",
            source="t",
            time=at,
            subject=tid,
            technician_id=tid,
            van_stock={},
            planned_end=at + 8 * 60 * MIN,
        )
    return k.ShiftEnded(id=f"end-{tid}-{at}", source="t", time=at, subject=tid, technician_id=tid)


def ping(tid: str | None, at: int, offset: int, lat: float = 42.5) -> Record:
    event = gps_ping(tid or "nobody", at, lat, id=f"p{offset}", source="t")
    return Record("fs.gps", 0, offset, at, None if tid is None else tid.encode(), encode(event))


def dead(result: Any) -> list[str]:
    return sorted(dict(o.headers)[DLQ_RULE].decode() for o in result.outputs if o.topic == DLQ.name)


def test_a_snapshot_carries_each_field_of_its_order_under_its_name() -> None:
    # The work-order stage hands a snapshot's fields over by position (job_fields,
    # SNAPSHOT_FIELDS): each must land under its own name, whatever the step of the visit.
    processor = WorkOrderProcessor()
    previous: dict[str, str | None] = {}
    snapshots = 0
    # The samples' order's whole life, booked first, neither cancelled nor unassigned.
    booked_first = sorted(SAMPLES, key=lambda e: not isinstance(e, k.WorkOrderBooked))
    for offset, event in enumerate(booked_first):
        if event.DERIVED or isinstance(
            event, k.GpsPinged | k.WorkOrderCancelled | k.TechnicianUnassigned
        ):
            continue
        record = Record(topic_for(event).name, 0, offset, event.time, None, encode(event))
        for out in processor.process([record]).outputs:
            if out.topic != WORKORDERS.name:
                continue
            snapshot = decode(out.value)
            assert isinstance(snapshot, k.WorkOrderStateChanged)
            order = processor.orders[snapshot.work_order_id]
            visit = order.visit
            assert dict(zip(JOB_FIELDS, job_fields(order), strict=True))["visit"] == snapshot.visit
            assert (snapshot.status, snapshot.trigger) == (order.status, event.type)
            assert snapshot.previous_status == previous.get(order.id)
            assert snapshot.customer_id == order.customer_id
            assert snapshot.visit == (visit.number if visit else 0)
            if visit is not None and visit.completed_at is not None:
                assert snapshot.technician_id == visit.technician_id
            else:
                assert snapshot.technician_id == order.technician_id
            for name in JOB_FIELDS[3:]:
                if name in Visit.__slots__:
                    assert getattr(snapshot, name) == getattr(visit, name, None), name
                else:
                    assert getattr(snapshot, name) == getattr(order, name), name
            previous[order.id] = order.status
            snapshots += 1
    assert snapshots >= 15


def test_pings_count_only_inside_the_shift_and_the_newest_counted_fix_wins() -> None:
    fleet = FleetProcessor()
    result = fleet.process(
        [
            tech_record(registered("T-1", T0), 0),
            ping("T-1", T0 + 1 * MIN, 0, lat=42.0),  # before the shift: not counted
            tech_record(shift("T-1", T0 + 2 * MIN, started=True), 1),
            ping("T-1", T0 + 3 * MIN, 1, lat=42.1),
            ping("T-1", T0 + 5 * MIN, 2, lat=42.3),
            ping("T-1", T0 + 4 * MIN, 3, lat=42.2),  # out of order: counted, not the newest
            tech_record(shift("T-1", T0 + 6 * MIN, started=False), 2),
            ping("T-1", T0 + 7 * MIN, 4, lat=42.4),  # after the shift: never stored
            ping("T-2", T0 + 7 * MIN, 5),  # unknown technician
        ]
    )
    assert result.counts["pings"] == 3
    assert result.counts["pings_off_shift"] == 3
    assert result.positions["T-1"][:3] == (T0 + 5 * MIN, 42.3, 1.5)
    assert set(result.positions) == {"T-1"}
    assert dead(result) == []


def test_unkeyed_and_too_late_pings_reach_the_dlq_and_the_rest_count() -> None:
    fleet = FleetProcessor(lateness_ms=10 * MIN)
    result = fleet.process(
        [
            tech_record(registered("T-1", T0), 0),
            tech_record(shift("T-1", T0, started=True), 1),
            ping("T-1", T0 + 30 * MIN, 0),
            ping("T-1", T0 + 15 * MIN, 1),  # 15 min behind the stream: too late
            ping(None, T0 + 31 * MIN, 2),
            ping("T-1", T0 + 25 * MIN, 3),  # 5 min behind: still applied
        ]
    )
    assert dead(result) == ["missing", "too_late"]
    assert result.counts["pings"] == 2
    assert result.positions["T-1"][0] == T0 + 30 * MIN


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["T-1", "T-2", "T-3"]),
            st.integers(0, 40),
            st.sampled_from(["ping", "ping", "ping", "ping", "start", "end"]),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 59),
)
def test_cutting_a_stream_into_batches_changes_nothing(
    steps: list[tuple[str, int, str]], cut: int
) -> None:
    """Whatever the batches, the same pings count, and the positions end the same."""
    records: list[Record] = [
        tech_record(registered(t, T0), i) for i, t in enumerate(["T-1", "T-2"])
    ]
    offsets = {"fs.gps": 0, "fs.by-technician": 2}
    for n, (tid, minute, what) in enumerate(steps):
        at = T0 + minute * MIN
        if what == "ping":
            records.append(ping(tid, at, offsets["fs.gps"], lat=42.0 + n / 1000))
            offsets["fs.gps"] += 1
        else:
            records.append(
                tech_record(shift(tid, at, what == "start"), offsets["fs.by-technician"])
            )
            offsets["fs.by-technician"] += 1
    whole = FleetProcessor(lateness_ms=20 * MIN)
    one = whole.process(records)
    parts = FleetProcessor(lateness_ms=20 * MIN)
    cut = min(cut, len(records))
    first, second = parts.process(records[:cut]), parts.process(records[cut:])
    for name in ("pings", "pings_off_shift"):
        assert one.counts.get(name, 0) == first.counts.get(name, 0) + second.counts.get(name, 0)
    assert sorted(dead(one)) == sorted(dead(first) + dead(second))
    assert {t: x.position for t, x in whole.technicians.items()} == {
        t: x.position for t, x in parts.technicians.items()
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 12), max_size=8), min_size=1, max_size=5),
    st.lists(st.lists(st.integers(0, 12), max_size=4), max_size=3),
)
def test_the_columnar_merge_is_the_heap_merge(
    ping_runs: list[list[int]], row_runs: list[list[int]]
) -> None:
    """Each partition's records in offset order, their times out of order at will: the
    vectorised merge orders them exactly as ``heapq.merge`` does."""
    inputs = ("fs.gps", "fs.by-technician")
    order = {t: i for i, t in enumerate(inputs)}
    pings = [
        [Record("fs.gps", p, o, t, b"k", b"g%d.%d" % (p, o)) for o, t in enumerate(run)]
        for p, run in enumerate(ping_runs)
    ]
    rows = [
        [Record("fs.by-technician", p, o, t, b"k", b"r%d.%d" % (p, o)) for o, t in enumerate(run)]
        for p, run in enumerate(row_runs)
    ]
    expected = list(
        heapq.merge(
            *[c for c in pings + rows if c],
            key=lambda r: (r.timestamp_ms, order[r.topic], r.partition, r.offset),
        )
    )
    columns = [Columns.of("fs.gps", p, run) for p, run in enumerate(pings) if run]
    merged_rows, interleaved = _merge_columns([r for r in rows if r], columns, order, "fs.gps")
    got: list[bytes] = []
    done = 0
    for i, row in enumerate(merged_rows):
        got += interleaved.values[done : interleaved.before[i]]
        done = interleaved.before[i]
        got.append(row.value)
    got += interleaved.values[done:]
    assert got == [r.value for r in expected]
    assert np.array_equal(
        interleaved.timestamps, [r.timestamp_ms for r in expected if r.topic == "fs.gps"]
    )
