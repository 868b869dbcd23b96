"""The feeds' session logic, without sockets: channels, sequence numbers, resume, and each
connection's bounded outbox.

A **channel** is one feed as subscribers see it: the dispatcher feed of a region (or of all
regions), or the customer feed of one work order. It numbers its deltas 1, 2, 3... (``seq``),
keeps the last ``backlog`` of them for clients that reconnect with ``?since=SEQ``, and builds a
snapshot on demand from the live view (the snapshot carries the ``seq`` of the last delta it
already includes). A channel's numbering starts again when the gateway restarts; ``epoch``,
random per :class:`Hub`, tells a client that a ``seq`` it holds belongs to another run.

An **outbox** is one connection's queue of encoded frames. Publishing appends to every
subscriber's outbox and never waits, so a slow client cannot slow the others or the log
tailer. An outbox holds at most ``limit`` frames: when a delta finds it full, its queued deltas
are dropped and it is marked for a fresh snapshot, which the connection's writer builds when
it is next ready to send (so a slow client skips straight to the present instead of catching
up through history it no longer needs).

Frames are encoded once per channel and shared by every subscriber.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from gateway.live import Changes, LiveView

Frame = bytes


def encode(doc: dict[str, Any]) -> Frame:
    return orjson.dumps(doc)


class Outbox:
    """A connection's bounded queue; ``wake`` is called whenever there is something to send."""

    def __init__(self, limit: int, wake: Callable[[], None]) -> None:
        if limit < 1:
            raise ValueError("an outbox holds at least one frame")
        self.limit = limit
        self.items: deque[tuple[int, Frame]] = deque()
        self.resync = False
        self.overflows = 0
        self.wake = wake

    def offer(self, seq: int, frame: Frame) -> None:
        """Queue a delta; on overflow drop every queued delta and ask for a snapshot."""
        if self.resync:
            return  # the coming snapshot includes this delta
        if len(self.items) >= self.limit:
            self.items.clear()
            self.resync = True
            self.overflows += 1
        else:
            self.items.append((seq, frame))
        self.wake()

    def push(self, frame: Frame) -> None:
        """Queue a frame outside the channel's numbering (a reply, a heartbeat)."""
        self.items.append((-1, frame))
        self.wake()

    def request_snapshot(self) -> None:
        self.items = deque(item for item in self.items if item[0] < 0)
        self.resync = True
        self.wake()

    def take(self, channel: Channel) -> Frame | None:
        """The next frame to send, or None when there is nothing."""
        if self.resync:
            self.resync = False
            seq, frame = channel.snapshot()
            # Deltas queued before the snapshot was built are already in it.
            self.items = deque(item for item in self.items if item[0] < 0 or item[0] > seq)
            return frame
        if self.items:
            return self.items.popleft()[1]
        return None


class Channel:
    """One feed: its numbering, its recent deltas, its subscribers."""

    def __init__(
        self,
        key: str,
        feed: str,
        build: Callable[[], dict[str, Any]],
        *,
        epoch: str,
        backlog: int,
    ) -> None:
        self.key = key
        self.feed = feed
        self._build = build
        self.epoch = epoch
        self.seq = 0
        self.backlog: deque[tuple[int, Frame]] = deque(maxlen=backlog)
        self.subscribers: set[Outbox] = set()
        self.last: dict[str, Any] | None = None
        """The last document published (customer feeds publish whole documents)."""
        self.idle_since: float | None = None

    def publish(self, data: dict[str, Any]) -> Frame:
        """Number a delta, keep it for resumes, and offer it to every subscriber."""
        self.seq += 1
        frame = encode({"type": "delta", "feed": self.feed, "seq": self.seq, "data": data})
        self.backlog.append((self.seq, frame))
        for outbox in self.subscribers:
            outbox.offer(self.seq, frame)
        return frame

    def snapshot(self) -> tuple[int, Frame]:
        """A snapshot of the present, with the ``seq`` of the last delta it includes."""
        doc = {
            "type": "snapshot",
            "feed": self.feed,
            "seq": self.seq,
            "epoch": self.epoch,
            "data": self._build(),
        }
        return self.seq, encode(doc)

    def since(self, seq: int, epoch: str | None) -> list[Frame] | None:
        """The deltas after ``seq``, or None when they are no longer all held (or ``seq``
        belongs to another epoch, or to the future): the client then needs a snapshot."""
        if (epoch is not None and epoch != self.epoch) or seq < 0 or seq > self.seq:
            return None
        if seq == self.seq:
            return []
        if not self.backlog or self.backlog[0][0] > seq + 1:
            return None
        return [frame for s, frame in self.backlog if s > seq]


class Hub:
    """Every channel, fed from one :class:`LiveView`."""

    def __init__(self, view: LiveView, *, backlog: int = 1024, epoch: str | None = None) -> None:
        self.view = view
        self.backlog = backlog
        self.epoch = epoch or secrets.token_hex(6)
        self.dispatch: dict[str | None, Channel] = {}
        self.track: dict[str, Channel] = {}

    def dispatch_channel(self, region: str | None) -> Channel:
        channel = self.dispatch.get(region)
        if channel is None:
            channel = self.dispatch[region] = Channel(
                f"dispatch:{region or '*'}",
                "dispatch",
                lambda: self.view.dispatch_snapshot(region),
                epoch=self.epoch,
                backlog=self.backlog,
            )
        return channel

    def track_channel(self, work_order: str) -> Channel:
        channel = self.track.get(work_order)
        if channel is None:
            channel = self.track[work_order] = Channel(
                f"track:{work_order}",
                "track",
                lambda: self.view.customer_doc(work_order),
                epoch=self.epoch,
                backlog=self.backlog,
            )
            channel.last = self.view.customer_doc(work_order)
        return channel

    def publish(self, changes: Changes) -> int:
        """Turn what the view changed into one delta per channel concerned; returns how
        many deltas were published."""
        published = 0
        if not changes:
            return 0
        for region, channel in self.dispatch.items():
            data = self.view.dispatch_delta(changes, region)
            if data:
                channel.publish(data)
                published += 1
        moved = changes.positions | changes.technicians
        concerned = set(changes.orders)
        for tid in moved:
            concerned.update(self.view.open_orders_of(tid))
        for wid in concerned:
            track = self.track.get(wid)
            if track is None:
                continue
            doc = self.view.customer_doc(wid)
            if doc != track.last:
                track.last = doc
                track.publish(doc)
                published += 1
        return published

    def collect(self, now: float, idle_s: float) -> int:
        """Forget customer channels nobody has watched for ``idle_s`` seconds (their resume
        backlog goes with them); returns how many were dropped."""
        dropped = 0
        for wid, channel in list(self.track.items()):
            if channel.subscribers:
                channel.idle_since = None
            elif channel.idle_since is None:
                channel.idle_since = now
            elif now - channel.idle_since >= idle_s:
                del self.track[wid]
                dropped += 1
        return dropped
