"""Access to the websocket feeds: every way in that must be refused is, with its close code.

Each case connects a real websockets client to a running gateway and checks the close code
and reason the gateway sends (docs/websocket-protocol.md lists them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway import tokens
from gateway.server import Settings
from tests.gateway.livekit import (
    KEY,
    T0,
    Running,
    next_of,
    order,
    ping,
    registered,
    seed,
    shift,
    start_gateway,
)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Running]:
    events = [
        registered("T-1", "Anna Puig", "Canillo"),
        registered("T-2", "Pere Mas", "Ordino"),
        shift("T-1"),
        shift("T-2"),
        ping("T-1", T0 + 1000),
        ping("T-2", T0 + 1000),
        order("WO-1", "assigned", T0 + 500, "T-1", "Canillo"),
        order("WO-2", "assigned", T0 + 500, "T-2", "Ordino"),
    ]
    asyncio.run(seed(tmp_path, events))
    running = start_gateway(tmp_path, Settings(max_message=1024))
    yield running
    running.stop()


async def _closed(url: str, send: str | bytes | None = None, **kw: object) -> tuple[int, str]:
    """Connect, optionally send one message, and return the close code and reason."""
    async with connect(url, **kw) as ws:  # type: ignore[arg-type]
        if send is not None:
            await ws.send(send)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "the gateway sent no close frame"
            return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable")


def closed(url: str, send: str | bytes | None = None, **kw: object) -> tuple[int, str]:
    return asyncio.run(_closed(url, send, **kw))


def test_no_token_is_refused_with_4401(gw: Running) -> None:
    code, reason = closed(f"{gw.ws}/ws/dispatch")
    assert code == 4401 and "token" in reason


def test_a_malformed_token_is_refused_with_4402(gw: Running) -> None:
    assert closed(f"{gw.ws}/ws/dispatch?token=hello")[0] == 4402


def test_a_tampered_token_is_refused_with_4402(gw: Running) -> None:
    token = gw.customer("WO-1")
    head, claims, signature = token.split(".")
    doc = orjson.loads(tokens._unb64(claims))
    doc["wo"] = "WO-2"  # try to reuse WO-1's signature for another work order
    forged = f"{head}.{tokens._b64(orjson.dumps(doc))}.{signature}"
    code, reason = closed(f"{gw.ws}/ws/track/WO-2?token={forged}")
    assert code == 4402 and "signature" in reason


def test_a_token_signed_with_another_key_is_refused_with_4402(gw: Running) -> None:
    foreign = tokens.issue_dispatcher(b"x" * 32, now=int(time.time()))
    assert closed(f"{gw.ws}/ws/dispatch?token={foreign}")[0] == 4402


def test_an_expired_token_is_refused_with_4408(gw: Running) -> None:
    old = tokens.issue_dispatcher(KEY, now=int(time.time()) - 7200, ttl_s=3600)
    code, reason = closed(f"{gw.ws}/ws/dispatch?token={old}")
    assert code == 4408 and "expired" in reason


def test_a_token_that_expires_during_the_session_closes_it_with_4408(gw: Running) -> None:
    async def body() -> None:
        token = tokens.issue_dispatcher(KEY, now=int(time.time()), ttl_s=2)
        async with connect(f"{gw.ws}/ws/dispatch?token={token}") as ws:
            assert (await next_of(ws, "snapshot"))["feed"] == "dispatch"
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 4408

    asyncio.run(body())


def test_a_customer_token_opens_its_own_work_order_only(gw: Running) -> None:
    token = gw.customer("WO-1")
    code, _ = closed(f"{gw.ws}/ws/track/WO-2?token={token}")
    assert code == 4403

    async def own() -> dict[str, object]:
        async with connect(f"{gw.ws}/ws/track/WO-1?token={token}") as ws:
            return await next_of(ws, "snapshot")

    snapshot = asyncio.run(own())
    assert snapshot["data"]["work_order"] == "WO-1"  # type: ignore[index]


def test_a_customer_token_does_not_open_the_dispatcher_feed(gw: Running) -> None:
    assert closed(f"{gw.ws}/ws/dispatch?token={gw.customer('WO-1')}")[0] == 4403


def test_a_dispatcher_token_does_not_open_a_customer_feed(gw: Running) -> None:
    assert closed(f"{gw.ws}/ws/track/WO-1?token={gw.dispatcher()}")[0] == 4403


def test_a_regional_token_sees_its_region_and_cannot_ask_for_another(gw: Running) -> None:
    token = gw.dispatcher("Canillo")
    assert closed(f"{gw.ws}/ws/dispatch?token={token}&region=Ordino")[0] == 4403

    async def own() -> dict[str, object]:
        async with connect(f"{gw.ws}/ws/dispatch?token={token}") as ws:
            return await next_of(ws, "snapshot")

    data = asyncio.run(own())["data"]
    assert data["region"] == "Canillo"  # type: ignore[index]
    assert set(data["technicians"]) == {"T-1"}  # type: ignore[index]
    assert set(data["orders"]) == {"WO-1"}  # type: ignore[index]


def test_an_all_regions_token_opens_any_region(gw: Running) -> None:
    async def region(name: str) -> dict[str, object]:
        url = f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}&region={name}"
        async with connect(url) as ws:
            return await next_of(ws, "snapshot")

    assert set(asyncio.run(region("Ordino"))["data"]["technicians"]) == {"T-2"}  # type: ignore[index]


def test_the_token_may_come_in_an_authorization_header(gw: Running) -> None:
    async def body() -> dict[str, object]:
        headers = {"Authorization": f"Bearer {gw.dispatcher()}"}
        async with connect(f"{gw.ws}/ws/dispatch", additional_headers=headers) as ws:
            return await next_of(ws, "snapshot")

    assert asyncio.run(body())["feed"] == "dispatch"


def test_an_oversized_client_message_closes_with_1009(gw: Running) -> None:
    code, _ = closed(f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}", send="x" * 5000)
    assert code == 1009


def test_an_unsupported_client_message_closes_with_4400(gw: Running) -> None:
    url = f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}"
    assert closed(url, send='{"type": "subscribe-everything"}')[0] == 4400
    assert closed(url, send="not json")[0] == 4400


def test_a_bad_since_closes_with_4400(gw: Running) -> None:
    assert closed(f"{gw.ws}/ws/dispatch?token={gw.dispatcher()}&since=yesterday")[0] == 4400


def test_an_unknown_feed_path_is_an_http_404(gw: Running) -> None:
    async def body() -> None:
        async with connect(f"{gw.ws}/ws/everything?token={gw.dispatcher()}"):
            pass

    with pytest.raises(InvalidStatus) as info:
        asyncio.run(body())
    assert info.value.response.status_code == 404


def test_refusals_are_counted_in_the_metrics(gw: Running) -> None:
    closed(f"{gw.ws}/ws/dispatch")
    closed(f"{gw.ws}/ws/dispatch?token=nope")
    text = gw.gateway.metrics.render().decode()
    assert 'fieldstream_ws_refused_total{reason="token_missing"} 1.0' in text
    assert 'fieldstream_ws_refused_total{reason="token_invalid"} 1.0' in text
