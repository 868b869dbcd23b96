"""The gateway process: tails the log into the live view, serves the websocket feeds and the
HTTP routes on one port.

Moving parts (all on one asyncio loop; nothing here decides anything, see gateway/live.py,
gateway/feeds.py and gateway/api.py for that):

* **the tailer** reads every partition of the view's topics from where it stopped, every
  ``poll_s`` seconds (start to start: a pass that overran is followed at once by the next),
  folds the records into the :class:`~gateway.live.LiveView` and hands what changed to the
  :class:`~gateway.feeds.Hub`, which encodes one delta per channel and offers the same bytes
  to every subscriber: written to the connection's transport at once when nothing is
  waiting there (the usual case: one write per subscriber, no task switch), else appended
  to its outbox. It never waits on a client. At start it first catches up with the whole
  log (``/readyz`` answers 503 until then); fs.gps is read from ``gps_lookback_ms`` before
  its newest record only, since older fixes cannot be the newest position.
* **one writer task per connection** sends what its outbox holds (a snapshot when it was
  marked for one, frames that could not be written at once, replies), with websockets' flow
  control, and closes the connection when its token expires.
* **the ticker** queues a heartbeat for connections idle for ``heartbeat_s``, marks expired
  sessions, forgets idle customer channels, adds the deltas sent at once to the metrics, and
  paces the garbage collector (``freeze_gc``, below).

**Garbage collection.** A full pass of CPython's collector scans every tracked object: about
100 per connection (most of them websockets' own), so ~200 ms at 2,000 connections, during
which no feed moves. Objects that live a few seconds (those of websockets' keepalive pings,
one every 20 s per connection) are promoted often enough to start such a pass every half
minute. With ``freeze_gc`` (the default), whatever survives a full pass is frozen
(:func:`gc.freeze`), so the next passes scan only what came since (a few ms); every
``gc_thaw_s`` the frozen objects are handed back, so that garbage among them is reclaimed
by one whole pass. It is process-wide: a process running several gateways gets it once.
* **the connection handler** checks the token and the request, subscribes, then reads the
  client's (small) control messages.

Close codes are listed in :data:`CLOSE_CODES` and in docs/websocket-protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gc
import http
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from eta_engine.roads import RoadGraph
from gateway import tokens
from gateway.api import HttpApi
from gateway.feeds import Channel, Frame, Hub, Outbox, encode, frame_type, payload_of
from gateway.live import TOPICS, LiveView
from gateway.metrics import Metrics
from gateway.roadmap import road_blobs
from streams.bootstrap import open_log
from streams.config import Config
from streams.log import Log, UnknownTopicError
from streams.projection_store import STORE_FILE, ProjectionStore, open_projection_store

log = logging.getLogger("fieldstream.gateway")

# -- close codes (docs/websocket-protocol.md) --------------------------------------------------
BAD_REQUEST = 4400
TOKEN_MISSING = 4401
TOKEN_INVALID = 4402
SCOPE_DENIED = 4403
TOKEN_EXPIRED = 4408
OVERLOADED = 1013
CLOSE_CODES: dict[int, str] = {
    BAD_REQUEST: "bad_request",
    TOKEN_MISSING: "token_missing",
    TOKEN_INVALID: "token_invalid",
    SCOPE_DENIED: "scope_denied",
    TOKEN_EXPIRED: "token_expired",
    OVERLOADED: "overloaded",
    1009: "message_too_big",
}
_REFUSAL_CODES = {"missing": TOKEN_MISSING, "invalid": TOKEN_INVALID, "expired": TOKEN_EXPIRED}


@dataclass(frozen=True, slots=True)
class Settings:
    """How the gateway runs (``fieldstream serve`` flags set these)."""

    host: str = "127.0.0.1"
    port: int = 8080
    """0 picks a free port (:attr:`Gateway.port` tells which)."""
    poll_s: float = 0.02
    heartbeat_s: float = 15.0
    tick_s: float = 0.25
    """How often heartbeats and token expiries are checked."""
    queue_limit: int = 256
    """Frames a connection may have waiting before its deltas give way to a snapshot."""
    backlog: int = 1024
    """Deltas per channel kept for ``?since=`` resumes."""
    max_message: int = 1024
    """Largest client message accepted (bytes); larger closes the connection with 1009."""
    max_clients: int = 20_000
    gps_lookback_ms: int = 30 * 60_000
    timezone: str = "Europe/Andorra"
    idle_channel_s: float = 300.0
    ping_interval_s: float | None = 20.0
    read_batch: int = 5_000
    compression: bool = False
    """permessage-deflate. Off by default: it compresses every frame once per connection,
    where without it one encoded frame is shared by every subscriber of a channel."""
    freeze_gc: bool = True
    """Freeze what survives each full garbage collection (see the module docstring)."""
    gc_thaw_s: float = 600.0
    """How often frozen objects are handed back to the collector."""
    send_buffer: int | None = 256 * 1024
    """The kernel's send buffer per connection (SO_SNDBUF), so a client that stops reading
    holds at most this much in the kernel besides its outbox; None: the system's default
    (which grows to several MiB per connection)."""


@dataclass(slots=True, eq=False)
class _Session:
    """One connection's subscription."""

    ws: ServerConnection
    channel: Channel
    outbox: Outbox
    feed: str
    expires_at: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_sent: float = 0.0
    expired: bool = False


class Gateway:
    """Use as ``async with Gateway(config, settings) as gw: ...`` or call :meth:`start` and
    :meth:`stop`. One instance owns one log connection and one server socket."""

    def __init__(
        self,
        config: Config,
        settings: Settings | None = None,
        *,
        key: bytes | None = None,
        metrics: Metrics | None = None,
        graph: RoadGraph | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = settings or Settings()
        self.key = key if key is not None else tokens.load_key(config.data_dir)
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.view = LiveView(timezone=self.settings.timezone)
        self.hub = Hub(self.view, backlog=self.settings.backlog)
        if graph is None:
            graph = RoadGraph.default() if config.roads is None else RoadGraph.load(config.roads)
        self.api = HttpApi(
            self.view,
            self.metrics,
            self.key,
            roads=road_blobs(graph),
            ready=lambda: self.ready,
            kpi_store=self._projection_store,
            clock=clock,
        )
        self.ready = False
        self.clients = 0
        self._log: Log | None = None
        self._server: Server | None = None
        self._port: int | None = None
        self._tailer: asyncio.Task[None] | None = None
        self._tick: asyncio.Task[None] | None = None
        self._sessions: set[_Session] = set()
        self._positions: dict[tuple[str, int], int] = {}
        self._stopping = asyncio.Event()
        self._full_gc = False
        self._gc_changed_at = 0.0
        self.tail_error: BaseException | None = None
        self._projections: ProjectionStore | None = None

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the log, start listening, and start catching up (in the background)."""
        self._log = await open_log(self.config)
        s = self.settings
        self._server = await serve(
            self._handle,
            s.host,
            s.port,
            process_request=self._process_request,
            max_size=s.max_message,
            ping_interval=s.ping_interval_s,
            ping_timeout=s.ping_interval_s,
            close_timeout=2,
            server_header="fieldstream",
            compression="deflate" if s.compression else None,
        )
        self._port = int(next(iter(self._server.sockets)).getsockname()[1])
        if s.freeze_gc:
            gc.callbacks.append(self._on_gc)
        self._tailer = asyncio.create_task(self._tail_forever(), name="gateway-tailer")
        self._tick = asyncio.create_task(self._ticker(), name="gateway-ticker")

    async def stop(self) -> None:
        """Close every connection (1001 going away), stop tailing, close the log."""
        self._stopping.set()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
            gc.unfreeze()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in (self._tailer, self._tick):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._count_sent()
        if self._log is not None:
            await self._log.close()
            self._log = None
        if self._projections is not None:
            self._projections.close()
            self._projections = None

    def _projection_store(self) -> ProjectionStore | None:
        """The projection store (KPI tables), opened when first asked for once it exists."""
        if self._projections is None and (
            self.config.db or (self.config.data_dir / STORE_FILE).exists()
        ):
            self._projections = open_projection_store(self.config.data_dir, self.config.db)
        return self._projections

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The port listened on (still known after :meth:`stop`)."""
        assert self._port is not None, "not started"
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the live view has caught up with the log."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.tail_error is not None:
                raise RuntimeError("the gateway's tailer failed") from self.tail_error
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not catch up with the log in time")
            await asyncio.sleep(0.02)

    # -- the tailer --------------------------------------------------------------------------

    async def _tail_forever(self) -> None:
        try:
            await self._start_positions()
            while await self.tail_once() > 0:
                pass
            self.view.take_changes()  # nobody was subscribed while catching up
            self.ready = True
            if self.settings.freeze_gc:
                gc.collect()  # nobody is waiting yet; the caught-up view is long-lived
                self._freeze()
            loop = asyncio.get_running_loop()
            while not self._stopping.is_set():
                # Start to start: a pass that overran is followed at once by the next
                # (after the other tasks had their turn), so a slow pass does not add a
                # whole poll interval to the wait of the pings that came meanwhile.
                began = loop.time()
                await self.tail_once()
                await asyncio.sleep(max(0.0, began + self.settings.poll_s - loop.time()))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.tail_error = exc
            log.exception("gateway tailer stopped")
            raise

    async def _start_positions(self) -> None:
        """fs.gps from ``gps_lookback_ms`` before each partition's newest record; the other
        topics from the beginning (their records are the state)."""
        assert self._log is not None
        logged = self._log
        try:
            ends = await logged.end_offsets("fs.gps")
        except UnknownTopicError:
            return
        for p, end in ends.items():
            if end == 0:
                continue
            last = await logged.read("fs.gps", p, end - 1, 1)
            if last:
                since = last[-1].timestamp_ms - self.settings.gps_lookback_ms
                self._positions[("fs.gps", p)] = await logged.offset_for_time("fs.gps", p, since)

    async def tail_once(self) -> int:
        """Read what is new on every topic (in :data:`TOPICS` order, so a shift start is
        folded before the pings that follow it), fold it and publish the deltas. Returns the
        number of records read."""
        assert self._log is not None
        logged = self._log
        total = 0
        s = self.settings
        for topic in TOPICS:
            try:
                ends = await logged.end_offsets(topic)
            except UnknownTopicError:
                continue
            behind = 0
            read = 0
            for p, end in ends.items():
                pos = self._positions.get((topic, p), 0)
                if pos < end:
                    columns = await logged.read_columns(topic, p, pos, min(s.read_batch, end - pos))
                    if len(columns):
                        self.view.apply(topic, columns.values)
                        pos = int(columns.offsets[-1]) + 1
                        self._positions[(topic, p)] = pos
                        read += len(columns)
                behind += max(0, end - pos)
            if read:
                self.metrics.events_processed.labels("gateway", topic).inc(read)
            self.metrics.consumer_lag.labels("gateway", topic).set(behind)
            total += read
        changes = self.view.take_changes()
        if changes:
            self.hub.publish(changes)
        observations, raised = self.view.take_observations()
        if raised:
            self.metrics.alerts_raised.inc(raised)
        for o in observations:
            self.metrics.eta_error.labels(o.when).observe(abs(o.error_s))
            self.metrics.eta_arrivals.labels(o.when, str(o.inside).lower()).inc()
        return total

    # -- HTTP --------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.settings.send_buffer is not None:
            sock = connection.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.send_buffer)
        parts = urlsplit(request.path)
        path = unquote(parts.path)
        if path.startswith("/ws/"):
            if path == "/ws/dispatch" or (path.startswith("/ws/track/") and len(path) > 10):
                return None  # the websocket handshake goes on; the handler checks the rest
            return _response(404, orjson.dumps({"error": "not_found", "message": path}))
        query = dict(parse_qsl(parts.query))
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        method = getattr(request, "method", "GET")
        route, reply = self.api.handle(method, path, query, headers)
        self.metrics.http_requests.labels(route, str(reply.status)).inc()
        body = b"" if method == "HEAD" else reply.body
        extra = list(reply.headers)
        return _response(reply.status, body, reply.content_type, extra, length=len(reply.body))

    # -- websockets --------------------------------------------------------------------------

    async def _refuse(self, ws: ServerConnection, code: int, message: str) -> None:
        self.metrics.ws_refused.labels(CLOSE_CODES.get(code, str(code))).inc()
        await ws.close(code, message[:120])

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        parts = urlsplit(request.path)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if self.clients >= self.settings.max_clients:
            await self._refuse(ws, OVERLOADED, "too many clients; try again later")
            return
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else query.get("token")
        grant = tokens.verify(self.key, token, now=int(self.clock()))
        if isinstance(grant, tokens.TokenRefusal):
            await self._refuse(ws, _REFUSAL_CODES[grant.reason], grant.message)
            return
        since: int | None = None
        if "since" in query:
            try:
                since = int(query["since"])
            except ValueError:
                await self._refuse(ws, BAD_REQUEST, "since must be a whole number")
                return
        if path == "/ws/dispatch":
            region = query.get("region") or None
            if region is None and grant.region is not None:
                region = grant.region  # a regional dispatcher's feed defaults to their region
            if not grant.allows_dispatch(region):
                await self._refuse(ws, SCOPE_DENIED, "this token does not open that feed")
                return
            channel = self.hub.dispatch_channel(region)
            feed = "dispatch"
        else:
            work_order = path[len("/ws/track/") :]
            if not grant.allows_track(work_order):
                await self._refuse(ws, SCOPE_DENIED, "this token does not open that feed")
                return
            channel = self.hub.track_channel(work_order)
            feed = "track"
        await self._serve(ws, channel, feed, grant.expires_at, since, query.get("epoch"))

    async def _serve(
        self,
        ws: ServerConnection,
        channel: Channel,
        feed: str,
        expires_at: int,
        since: int | None,
        epoch: str | None,
    ) -> None:
        wake = asyncio.Event()
        outbox = Outbox(self.settings.queue_limit, wake.set)
        session = _Session(ws, channel, outbox, feed, expires_at, wake, time.monotonic())
        if not ws.protocol.extensions:
            outbox.send = self._direct_sender(session)
        missed = None if since is None else channel.since(since, epoch)
        if missed is None:
            outbox.resync = True
        else:
            resume = {"type": "resume", "feed": feed, "from": since, "seq": channel.seq}
            outbox.push(encode({**resume, "epoch": channel.epoch}))
            for frame in missed:
                outbox.push(frame)
        channel.subscribers.add(outbox)
        self._sessions.add(session)
        self.clients += 1
        self.metrics.ws_clients.labels(feed).inc()
        writer = asyncio.create_task(self._writer(ws, session))
        try:
            await self._reader(ws, session)
        finally:
            channel.subscribers.discard(outbox)
            self._sessions.discard(session)
            self.clients -= 1
            self.metrics.ws_clients.labels(feed).dec()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer

    async def _reader(self, ws: ServerConnection, session: _Session) -> None:
        """The client's control messages: ``{"type": "ping"}`` (answered with a pong) and
        ``{"type": "resync"}`` (a fresh snapshot); anything else closes with 4400."""
        try:
            async for message in ws:
                try:
                    doc = orjson.loads(message)
                    kind = doc.get("type") if isinstance(doc, dict) else None
                except orjson.JSONDecodeError:
                    kind = None
                if kind == "ping":
                    reply = {"type": "pong", "id": doc.get("id"), "seq": session.channel.seq}
                    session.outbox.push(encode(reply))
                elif kind == "resync":
                    session.outbox.request_snapshot()
                else:
                    await self._refuse(ws, BAD_REQUEST, "unsupported client message")
                    return
        except ConnectionClosed as closed:
            if closed.rcvd is None and closed.sent is not None and closed.sent.code == 1009:
                self.metrics.ws_refused.labels("message_too_big").inc()

    def _direct_sender(self, session: _Session) -> Callable[[Frame], bool]:
        """Write a frame to the connection's transport now if nothing is pending there (the
        bytes are a whole frame; without extensions they are what websockets would write),
        else say no: the outbox queues it for the writer, which honours flow control."""
        ws = session.ws
        transport = ws.transport
        monotonic = time.monotonic

        def send(frame: Frame) -> bool:
            if (
                ws.protocol.state is not State.OPEN
                or transport.get_write_buffer_size()
                or transport.is_closing()
            ):
                return False
            transport.write(frame)
            session.last_sent = monotonic()
            return True

        return send

    async def _writer(self, ws: ServerConnection, session: _Session) -> None:
        """Send what the outbox holds, as it comes; close when the token expired (the
        ticker marks it). Waiting costs nothing per frame: one event, no timers."""
        outbox, channel, feed = session.outbox, session.channel, session.feed
        frames = self.metrics.ws_frames
        sent_bytes = self.metrics.ws_bytes.labels(feed)
        overflows = 0
        while True:
            if session.expired:
                await self._refuse(ws, TOKEN_EXPIRED, "token expired; ask for a new one")
                return
            frame = outbox.take(channel)
            if outbox.overflows != overflows:
                self.metrics.ws_overflows.labels(feed).inc(outbox.overflows - overflows)
                overflows = outbox.overflows
            if frame is None:
                session.wake.clear()
                await session.wake.wait()
                continue
            payload = payload_of(frame)
            await ws.send(payload, text=True)
            session.last_sent = time.monotonic()
            frames.labels(feed, frame_type(frame)).inc()
            sent_bytes.inc(len(payload))

    async def _ticker(self) -> None:
        """Once every ``tick_s``: a heartbeat for each connection idle for ``heartbeat_s``,
        the end of the sessions whose token expired, idle customer channels forgotten, and
        the deltas the hub sent at once counted."""
        s = self.settings
        while True:
            await asyncio.sleep(s.tick_s)
            mono, now = time.monotonic(), self.clock()
            self._count_sent()
            if self._full_gc:
                self._freeze()
            elif s.freeze_gc and mono - self._gc_changed_at >= s.gc_thaw_s:
                gc.unfreeze()  # the next full pass scans everything once, then freezes it
                self._gc_changed_at = mono
            self.hub.collect(mono, s.idle_channel_s)
            for session in list(self._sessions):
                if now >= session.expires_at:
                    session.expired = True
                    session.wake.set()
                elif mono - session.last_sent >= s.heartbeat_s and not session.outbox.items:
                    session.last_sent = mono
                    beat = {
                        "type": "heartbeat",
                        "feed": session.feed,
                        "seq": session.channel.seq,
                        "now": self.view.now,
                        "server_time": int(now * 1000),
                    }
                    session.outbox.push(encode(beat))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            self._full_gc = True  # frozen by the ticker, not from inside the collector

    def _freeze(self) -> None:
        gc.freeze()
        self._full_gc = False
        self._gc_changed_at = time.monotonic()

    def _count_sent(self) -> None:
        """Add the deltas the hub sent at once (not through a writer) to the metrics."""
        for feed, (n, size) in self.hub.take_sent().items():
            self.metrics.ws_frames.labels(feed, "delta").inc(n)
            self.metrics.ws_bytes.labels(feed).inc(size)


def _response(
    status: int,
    body: bytes,
    content_type: str = "application/json",
    extra: list[tuple[str, str]] | None = None,
    *,
    length: int | None = None,
) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", content_type),
            ("Content-Length", str(len(body) if length is None else length)),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            *(extra or []),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


async def run_gateway(
    config: Config,
    settings: Settings,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[Gateway], Awaitable[None] | None] | None = None,
    metrics: Metrics | None = None,
    key_dir: Path | None = None,
) -> Gateway:
    """Run a gateway until ``stop`` is set; ``on_ready`` is called once it caught up."""
    key = tokens.load_key(key_dir or config.data_dir)
    gateway = Gateway(config, settings, key=key, metrics=metrics)
    async with gateway:
        await gateway.wait_ready(timeout=600)
        if on_ready is not None:
            result: Any = on_ready(gateway)
            if result is not None:
                await result
        await stop.wait()
    return gateway
