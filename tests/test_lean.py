"""Per-connection memory: what the server drops or never creates, and that the
API still answers the same afterwards."""

from __future__ import annotations

import asyncio

import tether
from tether.protocol.http import Headers


def test_compact_headers_still_answer_lookups() -> None:
    headers = Headers([("Host", "a"), ("X-Twice", "1"), ("x-twice", "2")])
    assert headers["host"] == "a"
    headers.compact()
    assert headers._index is None
    assert headers.get("HOST") == "a"
    assert headers.get_all("X-TWICE") == ["1", "2"]
    assert "x-twice" in headers


async def test_server_connection_is_lean_after_the_handshake() -> None:
    opened: asyncio.Future[tether.Connection] = asyncio.get_running_loop().create_future()

    class App:
        def __tether_dispatch__(self, connection: tether.Connection, request: object) -> object:
            def on_open(ws: tether.Connection) -> None:
                ws.set_message_handler(ws.send_nowait)
                opened.set_result(ws)

            return tether.Upgrade(on_open)

    async with tether.serve(App(), "127.0.0.1", 0, compression=None) as server:
        uri = f"ws://127.0.0.1:{server.port}/path?q=1"
        async with tether.connect(uri, compression=None) as client:
            ws = await asyncio.wait_for(opened, 5)
            await asyncio.wait_for(client.send(b"x"), 5)
            assert await asyncio.wait_for(client.recv(), 5) == b"x"
            # No queue is created for a connection whose messages go to a handler.
            assert ws._queue is None
            assert ws.request is not None
            assert ws.request.headers._index is None
            assert ws.request.headers["sec-websocket-version"] == "13"
            assert ws.request.path == "/path?q=1"
            # A connection that queues messages creates its queue on demand.
            assert client._queue is not None
