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

Frames are encoded once per channel, as complete websocket frames (header and JSON payload,
exactly the bytes that go on the wire), and the same bytes go to every subscriber. An outbox
given a ``send`` callable hands a delta straight to it when nothing is queued and the
connection can take it at once (its transport has nothing pending): in the steady state a
delta costs one write per subscriber, with no task to wake. Whatever cannot go at once is
queued for the connection's writer, in order.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from gateway.live import Changes, LiveView

Frame = bytes
"""A whole websocket text frame (RFC 6455, unmasked as a server sends it): header, then the
JSON payload."""

_TEXT_FIN = 0x81


def frame_of(payload: bytes) -> Frame:
    """``payload`` (UTF-8 JSON) as one final text frame, without extensions."""
    n = len(payload)
    if n < 126:
        header = bytes((_TEXT_FIN, n))
    elif n < 1 << 16:
        header = bytes((_TEXT_FIN, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((_TEXT_FIN, 127)) + n.to_bytes(8, "big")
    return header + payload


def header_size(frame: Frame) -> int:
    """The length of a frame's header (what precedes its payload)."""
    n = frame[1] & 0x7F
    return 2 if n < 126 else 4 if n == 126 else 10


def payload_of(frame: Frame) -> memoryview:
    """A frame's payload, without copying it."""
    return memoryview(frame)[header_size(frame) :]


def frame_type(frame: Frame) -> str:
    """The ``type`` of a frame (every document starts with it)."""
    start = frame.find(b'"type":"') + 8
    return frame[start : frame.find(b'"', start)].decode()


def encode(doc: dict[str, Any]) -> Frame:
    return frame_of(orjson.dumps(doc))


def _kept(data: bytes) -> bytes:
    """A copy of ``data`` to keep: bytes from orjson hold on to their whole first buffer
    (4 KiB), however short they are."""
    return bytes(memoryview(data))


class Outbox:
    """A connection's bounded queue; ``wake`` is called whenever something was queued.

    ``send``, when given, is tried first for each delta offered while nothing is queued: it
    writes the frame at once and returns True, or returns False when the connection cannot
    take it now (the frame is queued then, and frames after it queue behind it)."""

    def __init__(
        self,
        limit: int,
        wake: Callable[[], None],
        send: Callable[[Frame], bool] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("an outbox holds at least one frame")
        self.limit = limit
        self.items: deque[tuple[int, Frame]] = deque()
        self.resync = False
        self.overflows = 0
        self.wake = wake
        self.send = send

    def offer(self, seq: int, frame: Frame) -> bool:
        """Send or queue a delta; on overflow drop every queued delta and ask for a snapshot.
        Returns True when ``send`` took it at once."""
        if self.resync:
            return False  # the coming snapshot includes this delta
        if not self.items:
            if self.send is not None and self.send(frame):
                return True
            self.items.append((seq, frame))
        elif len(self.items) >= self.limit:
            self.items.clear()
            self.resync = True
            self.overflows += 1
        else:
            self.items.append((seq, frame))
        self.wake()
        return False

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
        version: Callable[[], int] | None = None,
    ) -> None:
        """``version``, when given, changes whenever what ``build`` returns may have: a
        snapshot is then built once per version and ``seq`` and shared by the clients that
        ask for it meanwhile (a crowd reconnecting, clients that overflowed together)."""
        self.key = key
        self.feed = feed
        self._build = build
        self.epoch = epoch
        self.seq = 0
        self.backlog: deque[tuple[int, Frame]] = deque(maxlen=backlog)
        self.subscribers: set[Outbox] = set()
        self.last: bytes | None = None
        """The last document published, as JSON (customer feeds publish whole documents).
        Kept encoded: a dictionary kept this long would be scanned by every full pass of the
        garbage collector, and the comparison has to encode it anyway."""
        self._delta_head = b'{"type":"delta","feed":' + orjson.dumps(feed) + b',"seq":'
        self.idle_since: float | None = None
        self._version = version
        self._snapshot: tuple[tuple[int, int], Frame] | None = None

    def publish(self, data: bytes) -> tuple[Frame, int]:
        """Number a delta whose ``data`` is already JSON, keep it for resumes, and offer it
        to every subscriber; returns the frame and how many subscribers it was sent to at
        once (the others queued it). The frame is byte for byte what :func:`encode` makes of
        ``{"type": "delta", "feed": ..., "seq": ..., "data": ...}``."""
        self.seq += 1
        seq = self.seq
        frame = frame_of(b'%s%d,"data":%s}' % (self._delta_head, seq, data))
        self.backlog.append((seq, frame))
        sent = 0
        for outbox in self.subscribers:
            if outbox.offer(seq, frame):
                sent += 1
        return frame, sent

    def snapshot(self) -> tuple[int, Frame]:
        """A snapshot of the present, with the ``seq`` of the last delta it includes."""
        at = None if self._version is None else (self.seq, self._version())
        if at is not None and self._snapshot is not None and self._snapshot[0] == at:
            return self.seq, self._snapshot[1]
        doc = {
            "type": "snapshot",
            "feed": self.feed,
            "seq": self.seq,
            "epoch": self.epoch,
            "data": self._build(),
        }
        frame = encode(doc)
        if at is not None:
            self._snapshot = (at, frame)
        return self.seq, frame

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
        self.sent: dict[str, list[int]] = {"dispatch": [0, 0], "track": [0, 0]}
        """Per feed: deltas sent at once by :meth:`publish` and their payload bytes, since
        the last :meth:`take_sent` (the writers count what they send themselves)."""

    def _version(self) -> int:
        """The view changes only through :meth:`LiveView.apply`, which counts the records."""
        return self.view.records

    def dispatch_channel(self, region: str | None) -> Channel:
        channel = self.dispatch.get(region)
        if channel is None:
            channel = self.dispatch[region] = Channel(
                f"dispatch:{region or '*'}",
                "dispatch",
                lambda: self.view.dispatch_snapshot(region),
                epoch=self.epoch,
                backlog=self.backlog,
                version=self._version,
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
                version=self._version,
            )
            channel.last = _kept(orjson.dumps(self.view.customer_doc(work_order)))
        return channel

    def publish(self, changes: Changes) -> int:
        """Turn what the view changed into one delta per channel concerned; returns how
        many deltas were published."""
        published = 0
        if not changes:
            return 0
        if self.dispatch:
            sent = self.sent["dispatch"]
            deltas = self.view.dispatch_deltas(changes, self.dispatch)
            for region, data in deltas.items():
                if data:
                    frame, n = self.dispatch[region].publish(orjson.dumps(data))
                    sent[0] += n
                    sent[1] += n * (len(frame) - header_size(frame))
                    published += 1
        if not self.track:
            return published
        sent = self.sent["track"]
        concerned = set(changes.orders)
        for tid in changes.positions | changes.technicians:
            concerned.update(self.view.open_orders_of(tid))
        for wid in concerned:
            track = self.track.get(wid)
            if track is None:
                continue
            doc = orjson.dumps(self.view.customer_doc(wid))
            if doc != track.last:
                track.last = _kept(doc)
                frame, n = track.publish(doc)
                sent[0] += n
                sent[1] += n * (len(frame) - header_size(frame))
                published += 1
        return published

    def take_sent(self) -> dict[str, tuple[int, int]]:
        """Deltas (and payload bytes) :meth:`publish` sent at once since the last call, per
        feed; feeds with none are left out."""
        out = {feed: (n, size) for feed, (n, size) in self.sent.items() if n}
        for counts in self.sent.values():
            counts[0] = counts[1] = 0
        return out

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
