"""The server side of the callback face: ``web_socket_upgrader`` (Vapor,
seed 004), with tether's client and the `websockets` library's client."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

import tether
from tether import Request, Response, WebSocket, web_socket_upgrader
from tether.faces.callbacks import WebSocketUpgrader
from tether.routing import Routes

TIMEOUT = 10
CLIENTS = ["tether", "websockets"]


class Client:
    """A client connection from either library, with one API."""

    def __init__(self, kind: str, ws: Any) -> None:
        self.kind, self.ws = kind, ws

    async def send(self, message: str | bytes) -> None:
        await self.ws.send(message)

    async def recv(self) -> str | bytes:
        return await asyncio.wait_for(self.ws.recv(), TIMEOUT)  # type: ignore[no-any-return]

    async def close(self, code: int = 1000) -> None:
        await asyncio.wait_for(self.ws.close(code), TIMEOUT)

    async def closed_code(self) -> int | None:
        await asyncio.wait_for(self.ws.wait_closed(), TIMEOUT)
        return self.ws.close_code  # type: ignore[no-any-return]

    @property
    def response_headers(self) -> Any:
        return self.ws.response.headers

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol  # type: ignore[no-any-return]


@asynccontextmanager
async def client(kind: str, url: str, **kwargs: Any) -> AsyncIterator[Client]:
    if kind == "tether":
        ws: Any = await asyncio.wait_for(tether.connect(url, **kwargs), TIMEOUT)
    else:
        ws = await asyncio.wait_for(ws_connect(url, **kwargs), TIMEOUT)
    try:
        yield Client(kind, ws)
    finally:
        await asyncio.wait_for(ws.close(), TIMEOUT)


async def refused_status(kind: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    if kind == "tether":
        with pytest.raises(tether.InvalidStatus) as info:
            await asyncio.wait_for(tether.connect(url, **kwargs), TIMEOUT)
        return info.value.status, info.value.response.body
    with pytest.raises(websockets.InvalidStatus) as ws_info:
        await asyncio.wait_for(ws_connect(url, **kwargs), TIMEOUT)
    return ws_info.value.response.status_code, ws_info.value.response.body or b""


@asynccontextmanager
async def running(app: Any, **options: Any) -> AsyncIterator[str]:
    async with tether.serve(app, "127.0.0.1", 0, **options) as server:
        yield f"ws://127.0.0.1:{server.port}"


# ----------------------------------------------------------------------
# The seed's server, translated


def seed_upgrader() -> WebSocketUpgrader:
    def should_upgrade(request: Request) -> dict[str, str] | None:
        # Returning None in this function refuses the upgrade.
        if request.url_path == "/deny":
            return None
        # Return any additional headers you like, or just empty.
        return {}

    def on_upgrade(ws: WebSocket, request: Request) -> None:
        # Called for each new WebSocket client.
        ws.send("Connected")
        ws.on_text(lambda ws, string: ws.send(string[::-1]))

    return web_socket_upgrader(should_upgrade, on_upgrade)


@pytest.mark.parametrize("kind", CLIENTS)
async def test_seed_reversed_echo_and_deny(kind: str) -> None:
    before = set(threading.enumerate())
    async with running(seed_upgrader()) as base:
        async with client(kind, base + "/chat") as ws:
            assert await ws.recv() == "Connected"
            await ws.send("hello")
            assert await ws.recv() == "olleh"
            await ws.send("ÀB€")
            assert await ws.recv() == "€BÀ"
        status, body = await refused_status(kind, base + "/deny")
        assert status == 403 and b"refused" in body
        assert set(threading.enumerate()) <= before


async def test_sync_callbacks_deliver_without_tasks() -> None:
    """Sync on_upgrade + on_text: messages go through the engine's message
    handler, with no task per connection."""
    async with running(seed_upgrader()) as base:
        before = len(asyncio.all_tasks())
        clients = [await tether.connect(base + "/") for _ in range(3)]
        for ws in clients:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "Connected"
            await ws.send("abc")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "cba"
        assert len(asyncio.all_tasks()) == before
        for ws in clients:
            await ws.close()


# ----------------------------------------------------------------------
# should_upgrade


@pytest.mark.parametrize("kind", CLIENTS)
async def test_async_should_upgrade_and_extra_headers(kind: str) -> None:
    seen: list[str] = []

    async def should_upgrade(request: Request) -> dict[str, str] | None:
        await asyncio.sleep(0)
        seen.append(request.path)
        if request.headers.get("X-Key") != "open sesame":
            return None
        return {"X-Hello": "world"}

    def on_upgrade(ws: WebSocket, request: Request) -> None:
        ws.on_text(lambda ws, text: ws.send(text))

    async with running(web_socket_upgrader(should_upgrade, on_upgrade)) as base:
        headers = {"X-Key": "open sesame"}
        extra = (
            {"additional_headers": headers}
            if kind == "tether"
            else {"additional_headers": list(headers.items())}
        )
        async with client(kind, base + "/a?b=1", **extra) as ws:
            assert ws.response_headers["X-Hello"] == "world"
            await ws.send("x")
            assert await ws.recv() == "x"
        status, _ = await refused_status(kind, base + "/no-key")
        assert status == 403
    assert seen == ["/a?b=1", "/no-key"]


@pytest.mark.parametrize("kind", CLIENTS)
async def test_subprotocol_chosen_through_the_headers(kind: str) -> None:
    chosen: list[str | None] = []

    def should_upgrade(request: Request) -> dict[str, str]:
        offered = request.headers.get("Sec-WebSocket-Protocol") or ""
        if "superchat" in offered:
            return {"Sec-WebSocket-Protocol": "superchat"}
        return {}

    def on_upgrade(ws: WebSocket, request: Request) -> None:
        chosen.append(ws.subprotocol)

    async with running(web_socket_upgrader(should_upgrade, on_upgrade)) as base:
        async with client(kind, base + "/", subprotocols=["chat", "superchat"]) as ws:
            assert ws.subprotocol == "superchat"
        async with client(kind, base + "/", subprotocols=["chat"]) as ws:
            assert ws.subprotocol is None
    assert chosen == ["superchat", None]


async def test_choosing_a_subprotocol_not_offered_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upgrader = web_socket_upgrader(
        lambda request: {"Sec-WebSocket-Protocol": "other"}, lambda ws, request: None
    )
    async with running(upgrader) as base:
        with caplog.at_level(logging.ERROR, logger="tether"):
            status, _ = await refused_status("tether", base + "/", subprotocols=["chat"])
    assert status == 500
    assert any("subprotocol" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


@pytest.mark.parametrize("kind", CLIENTS)
async def test_fallback_response_or_function(kind: str) -> None:
    refuse: Callable[[Request], Any] = lambda request: None  # noqa: E731
    fixed = web_socket_upgrader(
        refuse, lambda ws, request: None, fallback=Response.text("who are you?\n", 401)
    )
    async with running(fixed) as base:
        assert await refused_status(kind, base + "/") == (401, b"who are you?\n")

    async def later(request: Request) -> Response:
        return Response.text(f"no {request.url_path}\n", 404)

    computed = web_socket_upgrader(refuse, lambda ws, request: None, fallback=later)
    async with running(computed) as base:
        assert await refused_status(kind, base + "/x") == (404, b"no /x\n")


async def test_should_upgrade_that_raises_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: Request) -> dict[str, str]:
        raise RuntimeError("broken should_upgrade")

    async with running(web_socket_upgrader(broken, lambda ws, request: None)) as base:
        with caplog.at_level(logging.ERROR, logger="tether"):
            status, _ = await refused_status("tether", base + "/")
    assert status == 500


# ----------------------------------------------------------------------
# on_upgrade and the server-side WebSocket


@pytest.mark.parametrize("kind", CLIENTS)
async def test_async_on_upgrade_and_binary(kind: str) -> None:
    async def on_upgrade(ws: WebSocket, request: Request) -> None:
        ws.on_binary(lambda ws, data: ws.send(data[::-1]))
        await asyncio.sleep(0.01)
        ws.send("ready")

    async with running(web_socket_upgrader(lambda r: {}, on_upgrade)) as base:
        async with client(kind, base + "/") as ws:
            await ws.send(b"\x01\x02")  # may arrive before "ready": still delivered
            received = {await ws.recv(), await ws.recv()}
            assert received == {"ready", b"\x02\x01"}


@pytest.mark.parametrize("kind", CLIENTS)
async def test_server_on_close_completes_with_the_code(kind: str) -> None:
    codes: asyncio.Queue[int] = asyncio.Queue()

    async def on_upgrade(ws: WebSocket, request: Request) -> None:
        codes.put_nowait(await ws.on_close)

    async with running(web_socket_upgrader(lambda r: {}, on_upgrade)) as base:
        async with client(kind, base + "/") as ws:
            await ws.close(1001)
        assert await asyncio.wait_for(codes.get(), TIMEOUT) == 1001


@pytest.mark.parametrize("kind", CLIENTS)
async def test_server_closes_with_a_code(kind: str) -> None:
    def on_upgrade(ws: WebSocket, request: Request) -> None:
        ws.on_text(lambda ws, text: ws.close(code=1003, reason=text))

    async with running(web_socket_upgrader(lambda r: {}, on_upgrade)) as base:
        async with client(kind, base + "/") as ws:
            await ws.send("text only, please")
            assert await ws.closed_code() == 1003
            assert ws.ws.close_reason == "text only, please"


@pytest.mark.parametrize("kind", CLIENTS)
async def test_event_listeners_on_the_server_side(kind: str) -> None:
    events: list[Any] = []
    done = asyncio.Event()

    def on_upgrade(ws: WebSocket, request: Request) -> None:
        assert ws.url.endswith("/listen") and ws.url.startswith("ws://")
        assert ws.request is request and ws.state is tether.State.OPEN
        ws.onmessage = lambda message: (events.append(message), ws.send(message))
        ws.add_event_listener(
            "close", lambda reason: (events.append(("close", reason)), done.set())
        )

    async with running(web_socket_upgrader(lambda r: {}, on_upgrade)) as base:
        async with client(kind, base + "/listen") as ws:
            await ws.send("a")
            assert await ws.recv() == "a"
            await ws.send(b"b")
            assert await ws.recv() == b"b"
        await asyncio.wait_for(done.wait(), TIMEOUT)
    assert events[:2] == ["a", tether.Data(b"b")]
    assert events[2][0] == "close"


@pytest.mark.parametrize("kind", CLIENTS)
async def test_raising_callbacks_close_with_1011_and_the_server_goes_on(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []

    def on_upgrade(ws: WebSocket, request: Request) -> None:
        if request.url_path == "/bad-upgrade":
            raise RuntimeError("bad on_upgrade")
        ws.onerror = errors.append

        def on_text(ws: WebSocket, text: str) -> None:
            if text == "boom":
                raise ValueError("boom")
            ws.send(text)

        ws.on_text(on_text)

    with caplog.at_level(logging.ERROR, logger="tether"):
        async with running(web_socket_upgrader(lambda r: {}, on_upgrade)) as base:
            async with client(kind, base + "/") as ws:
                await ws.send("boom")
                assert await ws.closed_code() == 1011
            async with client(kind, base + "/bad-upgrade") as ws:
                assert await ws.closed_code() == 1011
            async with client(kind, base + "/") as ws:  # still serving
                await ws.send("fine")
                assert await ws.recv() == "fine"
    assert [str(e) for e in errors] == ["boom"]


async def test_a_raising_async_on_upgrade_closes_with_1011() -> None:
    async def on_upgrade(ws: WebSocket, request: Request) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("late failure")

    async with running(web_socket_upgrader(lambda r: {}, on_upgrade)) as base:
        async with client("tether", base + "/") as ws:
            assert await ws.closed_code() == 1011


async def test_on_ping_and_ping_interval_on_the_server_side() -> None:
    pings: asyncio.Queue[bytes] = asyncio.Queue()
    codes: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()

    async def on_upgrade(ws: WebSocket, request: Request) -> None:
        ws.on_ping(lambda ws, data: pings.put_nowait(data))
        ws.ping_interval = 0.1
        code = await ws.on_close
        codes.put_nowait((code, ws.close_reason))

    async with running(web_socket_upgrader(lambda r: {}, on_upgrade)) as base:
        # A client that answers pings keeps the connection.
        async with tether.connect(base + "/") as ws:
            await ws.ping(b"hello")
            assert await asyncio.wait_for(pings.get(), TIMEOUT) == b"hello"
            await asyncio.sleep(0.35)
            assert ws.state is tether.State.OPEN
        assert (await asyncio.wait_for(codes.get(), TIMEOUT))[0] == 1000
        # A client that does not: closed, 1006 on the server's side.
        async with tether.connect(base + "/", auto_pong=False) as ws:
            code, reason = await asyncio.wait_for(codes.get(), TIMEOUT)
            assert code == 1006 and reason is not None and "no pong" in reason


async def test_server_options_per_upgrader() -> None:
    upgrader = web_socket_upgrader(
        lambda r: {}, lambda ws, r: ws.on_text(lambda ws, t: ws.send(t)), max_size=10
    )
    async with running(upgrader) as base:
        async with tether.connect(base + "/") as ws:
            await ws.send("x" * 11)
            with pytest.raises(tether.ConnectionClosedError) as info:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert info.value.code == 1009
    with pytest.raises(TypeError, match="unknown option"):
        web_socket_upgrader(lambda r: {}, lambda ws, r: None, no_such_option=True)


@pytest.mark.parametrize("kind", CLIENTS)
async def test_as_a_route_target(kind: str) -> None:
    routes = Routes()
    routes.get("/chat", seed_upgrader())

    def greet(request: Request, name: str) -> str:
        return f"Greetings {name}!"

    routes.get("/greet/{name}", greet)
    async with running(routes) as base:
        async with client(kind, base + "/chat") as ws:
            assert await ws.recv() == "Connected"
            await ws.send("abc")
            assert await ws.recv() == "cba"
        status, _ = await refused_status(kind, base + "/elsewhere")
        assert status == 404


async def test_the_upgrader_serves_tether_clients_of_every_face() -> None:
    """The server face with the client faces: request builder and callbacks."""
    async with running(seed_upgrader()) as base:
        response = await tether.basic_request.get(base + "/").open_websocket()
        sttp = response.result
        assert await asyncio.wait_for(sttp.receive_text(), TIMEOUT) == "Connected"
        await sttp.send_text("stressed")
        assert await asyncio.wait_for(sttp.receive_text(), TIMEOUT) == "desserts"
        await sttp.close()

        received: asyncio.Queue[str] = asyncio.Queue()
        ws = await WebSocket.connect(base + "/")
        ws.on_text(lambda ws, text: received.put_nowait(text))
        assert await asyncio.wait_for(received.get(), TIMEOUT) == "Connected"
        ws.send("drawer")
        assert await asyncio.wait_for(received.get(), TIMEOUT) == "reward"
        assert await asyncio.wait_for(ws.close(), TIMEOUT) == 1000
