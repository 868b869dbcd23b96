"""The feeds' session logic without sockets: frames as they go on the wire, the outbox's
straight-through path and its queue, and deltas cut per dispatcher region."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from events.base import Event
from gateway.feeds import (
    Channel,
    Frame,
    Hub,
    Outbox,
    encode,
    frame_of,
    frame_type,
    header_size,
    payload_of,
)
from gateway.live import LiveView
from tests.gateway.livekit import T0, order, ping, record, registered, shift


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_a_frame_is_the_bytes_websockets_would_write(size: int) -> None:
    payload = b'{"type":"delta","pad":"' + b"x" * size + b'"}'
    frame = frame_of(payload)
    assert frame == WsFrame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert bytes(payload_of(frame)) == payload
    assert header_size(frame) == len(frame) - len(payload)
    assert frame_type(frame) == "delta"


class Wire:
    """A connection's transport as the outbox sees it: takes frames while ``open``."""

    def __init__(self, open: bool = True) -> None:
        self.open = open
        self.written: list[Frame] = []
        self.wakes = 0

    def send(self, frame: Frame) -> bool:
        if self.open:
            self.written.append(frame)
        return self.open

    def wake(self) -> None:
        self.wakes += 1


def test_a_delta_goes_straight_out_while_nothing_waits() -> None:
    wire = Wire()
    outbox = Outbox(4, wire.wake, wire.send)
    assert outbox.offer(1, b"one") and outbox.offer(2, b"two")
    assert wire.written == [b"one", b"two"]
    assert not outbox.items and wire.wakes == 0  # no writer to wake


def test_once_a_delta_waits_the_next_ones_queue_behind_it_in_order() -> None:
    wire = Wire(open=False)
    outbox = Outbox(4, wire.wake, wire.send)
    assert not outbox.offer(1, b"one")
    wire.open = True  # the transport drained, but "one" is still queued
    assert not outbox.offer(2, b"two")
    assert wire.written == [] and wire.wakes == 2
    channel = Channel("k", "dispatch", dict, epoch="e", backlog=8)
    assert [outbox.take(channel), outbox.take(channel), outbox.take(channel)] == [
        b"one",
        b"two",
        None,
    ]
    assert outbox.offer(3, b"three") and wire.written == [b"three"]


def test_a_full_queue_gives_way_to_a_snapshot_and_nothing_is_sent_before_it() -> None:
    wire = Wire(open=False)
    outbox = Outbox(2, wire.wake, wire.send)
    for seq in (1, 2, 3):
        outbox.offer(seq, b"d%d" % seq)
    assert outbox.resync and not outbox.items and outbox.overflows == 1
    wire.open = True
    assert not outbox.offer(4, b"d4")  # the coming snapshot includes it
    assert wire.written == []
    channel = Channel("k", "dispatch", lambda: {"x": 1}, epoch="e", backlog=8)
    channel.seq = 4
    snapshot = outbox.take(channel)
    assert snapshot is not None and frame_type(snapshot) == "snapshot"
    assert orjson.loads(payload_of(snapshot))["seq"] == 4
    assert outbox.offer(5, b"d5") and wire.written == [b"d5"]


def test_a_channel_encodes_a_delta_once_for_all_its_subscribers() -> None:
    channel = Channel("k", "track", dict, epoch="e", backlog=8)
    straight, stuck = Wire(), Wire(open=False)
    channel.subscribers |= {Outbox(4, straight.wake, straight.send), Outbox(4, stuck.wake)}
    data = {"status": "en_route", "headline": "On the way, arriving 10:05-10:35 ·"}
    frame, sent = channel.publish(orjson.dumps(data))
    assert frame == encode({"type": "delta", "feed": "track", "seq": 1, "data": data})
    assert sent == 1 and straight.written == [frame]
    assert channel.since(0, "e") == [frame]


def _view(events: Sequence[Event]) -> LiveView:
    view = LiveView()
    for event in events:
        out = record(event)
        view.apply(out.topic, [out.value])
    return view


def _received(wire: Wire) -> list[dict[str, Any]]:
    return [orjson.loads(payload_of(frame))["data"] for frame in wire.written]


def test_each_dispatcher_region_gets_only_its_part_of_a_change() -> None:
    view = _view(
        [
            registered("T-1", "Anna Puig", "Canillo"),
            registered("T-2", "Pere Mas", "Ordino"),
            shift("T-1"),
            shift("T-2"),
        ]
    )
    view.take_changes()
    hub = Hub(view, epoch="e")
    wires = {region: Wire() for region in (None, "Canillo", "Ordino", "Encamp")}
    for region, wire in wires.items():
        hub.dispatch_channel(region).subscribers.add(Outbox(4, wire.wake, wire.send))
    for event in (
        ping("T-1", T0 + 1000),
        ping("T-2", T0 + 1000),
        order("WO-2", "assigned", T0 + 1000, "T-2", "Ordino"),
    ):
        out = record(event)
        view.apply(out.topic, [out.value])
    assert hub.publish(view.take_changes()) == 3  # nothing for Encamp
    everything = _received(wires[None])[0]
    assert set(everything["positions"]) == {"T-1", "T-2"}
    assert set(everything["orders"]) == {"WO-2"}
    assert _received(wires["Canillo"]) == [{"positions": {"T-1": everything["positions"]["T-1"]}}]
    ordino = _received(wires["Ordino"])[0]
    assert set(ordino) == {"positions", "technicians", "orders"}
    assert set(ordino["positions"]) == {"T-2"} and set(ordino["technicians"]) == {"T-2"}
    assert ordino["technicians"]["T-2"]["queue"] == ["WO-2"]  # a new job in their queue
    assert ordino["orders"] == everything["orders"]
    assert wires["Encamp"].written == []
    assert hub.take_sent() == {
        "dispatch": (3, sum(len(payload_of(f)) for w in wires.values() for f in w.written))
    }
    assert hub.take_sent() == {}


def test_a_snapshot_is_built_once_until_the_view_or_the_channel_moves() -> None:
    view = _view([registered("T-1", "Anna Puig"), shift("T-1")])
    hub = Hub(view, epoch="e")
    channel = hub.dispatch_channel(None)
    seq, first = channel.snapshot()
    assert channel.snapshot() == (seq, first) and channel.snapshot()[1] is first
    out = record(ping("T-1", T0 + 1000))
    view.apply(out.topic, [out.value])
    _, moved = channel.snapshot()
    assert moved != first
    assert orjson.loads(payload_of(moved))["data"]["positions"]["T-1"][4] == T0 + 1000
    hub.publish(view.take_changes())
    seq, after = channel.snapshot()
    assert seq == 1 and orjson.loads(payload_of(after))["seq"] == 1
