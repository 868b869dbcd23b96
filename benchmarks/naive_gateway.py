"""The gateway benchmark's anchor: the same feeds served the naive way.

The websockets library's simplest fan-out, as one writes it first: a handler per connection
that sends a snapshot and then waits, and a tailer that, for every delta, encodes the
message once per subscriber and awaits ``connection.send`` for each subscriber in turn. It
reads the same log and keeps the same :class:`gateway.live.LiveView` as the gateway, checks
the same tokens and sends the same documents (the benchmark's clients cannot tell the two
apart), so what the benchmark compares is the serving alone: the gateway encodes a delta
once per channel, hands the same bytes to every subscriber's socket without awaiting any,
and queues (boundedly) only for a connection that cannot take them at once.

What it leaves out makes it cheaper than the gateway, not dearer: no resume backlog, no
heartbeats, no metrics, no per-connection queue limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson


def naive_gateway_main(data_dir: str, key: bytes, conn: Any) -> None:
    """Serve on a free port (sent on ``conn``) until "stop" arrives, then send back
    ("", lags): how long after its stamp each new position's fan-out had been sent."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    from gateway import tokens
    from gateway.live import TOPICS, LiveView
    from streams.bootstrap import open_log
    from streams.config import Config
    from streams.log import UnknownTopicError

    view = LiveView(timezone="Europe/Andorra")
    dispatch: dict[str | None, set[ServerConnection]] = {}
    track: dict[str, set[ServerConnection]] = {}
    last: dict[str, bytes] = {}
    seqs: dict[str, int] = {}
    lags: list[float] = []

    async def send_all(subscribers: set[ServerConnection], feed: str, seq: int, data: Any) -> None:
        for ws in list(subscribers):
            message = orjson.dumps({"type": "delta", "feed": feed, "seq": seq, "data": data})
            with contextlib.suppress(ConnectionClosed):
                await ws.send(message.decode())

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        query = dict(parse_qsl(parts.query))
        grant = tokens.verify(key, query.get("token"), now=int(time.time()))
        if isinstance(grant, tokens.TokenRefusal):
            await ws.close(4401, grant.message)
            return
        if parts.path == "/ws/dispatch":
            region = grant.region
            subscribers = dispatch.setdefault(region, set())
            name, feed, doc = f"dispatch:{region}", "dispatch", view.dispatch_snapshot(region)
        else:
            wid = parts.path[len("/ws/track/") :]
            subscribers = track.setdefault(wid, set())
            name, feed, doc = f"track:{wid}", "track", view.customer_doc(wid)
            last.setdefault(wid, orjson.dumps(doc))
        seq = seqs.get(name, 0)
        snapshot = {"type": "snapshot", "feed": feed, "seq": seq, "epoch": "naive", "data": doc}
        with contextlib.suppress(ConnectionClosed):
            await ws.send(orjson.dumps(snapshot).decode())
            subscribers.add(ws)
            await ws.wait_closed()
        subscribers.discard(ws)

    async def publish() -> None:
        changes = view.take_changes()
        if not changes:
            return
        for region, data in view.dispatch_deltas(changes, list(dispatch)).items():
            if data and dispatch[region]:
                name = f"dispatch:{region}"
                seqs[name] = seqs.get(name, 0) + 1
                await send_all(dispatch[region], "dispatch", seqs[name], data)
        concerned = set(changes.orders)
        for tid in changes.positions | changes.technicians:
            concerned.update(view.open_orders_of(tid))
        for wid in concerned:
            subscribers = track.get(wid)
            if not subscribers:
                continue
            doc = view.customer_doc(wid)
            encoded = orjson.dumps(doc)
            if encoded == last.get(wid):
                continue
            last[wid] = encoded
            name = f"track:{wid}"
            seqs[name] = seqs.get(name, 0) + 1
            await send_all(subscribers, "track", seqs[name], doc)
        now = time.time() * 1000
        for tid in changes.positions:
            position = view.position(tid)
            if position is not None:
                lags.append(now - position[4])

    async def read_new(log: Any, positions: dict[tuple[str, int], int]) -> int:
        """Fold what is new on the log (up to 5,000 records a partition) into the view."""
        n = 0
        for topic in TOPICS:
            try:
                ends = await log.end_offsets(topic)
            except UnknownTopicError:
                continue
            for p, end in ends.items():
                at = positions.get((topic, p), 0)
                if at < end:
                    columns = await log.read_columns(topic, p, at, min(5_000, end - at))
                    view.apply(topic, columns.values)
                    positions[(topic, p)] = at + len(columns)
                    n += len(columns)
        return n

    async def body() -> None:
        log = await open_log(Config(data_dir=Path(data_dir)))
        positions: dict[tuple[str, int], int] = {}
        stopping = asyncio.Event()

        async def tail() -> None:
            while not stopping.is_set():
                began = time.monotonic()
                await read_new(log, positions)
                await publish()
                await asyncio.sleep(max(0.0, began + 0.02 - time.monotonic()))

        while await read_new(log, positions):
            pass
        view.take_changes()  # nobody was subscribed while catching up
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            tailer = asyncio.create_task(tail())
            conn.send(port)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
            stopping.set()
            await tailer
        await log.close()
        conn.send(("", lags))

    asyncio.run(body())
