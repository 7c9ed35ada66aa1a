"""Peers for the face tests: one scripted server, run by tether or by the
`websockets` library, on a loopback port; and a way to run it on a thread of
its own for tests written in synchronous code.

The server echoes every message, except text commands:

- ``cmd:headers``: answers a JSON object with the request's ``X-Token``
  header, the path and the subprotocol;
- ``cmd:fragments``: sends the text message "abcd" in fragments "ab", "cd",
  then the binary message b"\\x01\\x02" in two fragments;
- ``cmd:ping``: pings with payload b"srv" (b"srv1", b"srv2"... for later
  pings of the connection) and answers "pong ok" if the pong came within
  0.5 s, "no pong" otherwise;
- ``cmd:flood:N``: sends N text messages "m0".."m{N-1}";
- ``cmd:close:CODE:REASON``: closes with that code and reason;
- ``cmd:drop``: drops TCP without a closing handshake.

A request for ``/deny`` is refused with 403 and the body ``denied\\n``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed as WsConnectionClosed

import tether

KINDS = ["tether", "websockets"]


class Peer:
    """The server side of a connection, from either library."""

    def __init__(self, kind: str, ws: Any) -> None:
        self.kind = kind
        self.ws = ws

    async def ping(self, payload: bytes, timeout: float) -> bool:
        try:
            if self.kind == "tether":
                await asyncio.wait_for(self.ws.ping(payload), timeout)
            else:
                waiter = await self.ws.ping(payload)
                await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def drop(self) -> None:
        if self.kind == "tether":
            self.ws.abort()
        else:
            self.ws.transport.abort()


async def scripted(peer: Peer) -> None:
    ws = peer.ws
    pings = 0
    async for message in ws:
        if not isinstance(message, str) or not message.startswith("cmd:"):
            await ws.send(message)
            continue
        command, _, arg = message[4:].partition(":")
        if command == "headers":
            headers = ws.request.headers
            await ws.send(
                json.dumps(
                    {
                        "token": headers.get("X-Token"),
                        "path": ws.request.path,
                        "subprotocol": ws.subprotocol,
                    }
                )
            )
        elif command == "fragments":
            await ws.send(["ab", "cd"])
            await ws.send([b"\x01", b"\x02"])
        elif command == "ping":
            payload = b"srv" + (str(pings).encode() if pings else b"")
            pings += 1
            await ws.send("pong ok" if await peer.ping(payload, 0.5) else "no pong")
        elif command == "flood":
            for i in range(int(arg)):
                await ws.send(f"m{i}")
        elif command == "close":
            code, _, reason = arg.partition(":")
            await ws.close(int(code), reason)
            return
        elif command == "drop":
            peer.drop()
            return


@contextlib.asynccontextmanager
async def serve(kind: str, **options: Any) -> AsyncIterator[str]:
    """Run the scripted server; yields its base URL ``ws://127.0.0.1:PORT``."""
    if kind == "tether":

        def refuse_tether(connection: Any, request: tether.Request) -> Any:
            if request.url_path == "/deny":
                return tether.Response.text("denied\n", 403)
            return None

        async def handler_tether(ws: tether.Connection) -> None:
            with contextlib.suppress(tether.ConnectionClosed):
                await scripted(Peer("tether", ws))

        async with tether.serve(
            handler_tether, "127.0.0.1", 0, process_request=refuse_tether, **options
        ) as server:
            yield f"ws://127.0.0.1:{server.port}"
    else:

        def refuse_websockets(connection: Any, request: Any) -> Any:
            if request.path == "/deny":
                return connection.respond(403, "denied\n")
            return None

        async def handler_websockets(ws: Any) -> None:
            with contextlib.suppress(WsConnectionClosed):
                await scripted(Peer("websockets", ws))

        # Like tether, accept clients that offer no subprotocol.
        offered = options.pop("subprotocols", None)
        if offered is not None:

            def select(connection: Any, subprotocols: Any) -> Any:
                return next((p for p in subprotocols if p in offered), None)

            options["select_subprotocol"] = select

        async with ws_serve(
            handler_websockets,
            "127.0.0.1",
            0,
            process_request=refuse_websockets,
            **options,
        ) as server:
            yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@contextlib.contextmanager
def serve_in_thread(kind: str, **options: Any) -> Iterator[str]:
    """:func:`serve` on a thread with its own event loop, for synchronous tests."""
    ready: asyncio.Future[str] | None = None
    url: list[str] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()

    async def main() -> None:
        nonlocal ready
        stop = loop.create_future()
        ready = stop
        async with serve(kind, **options) as base:
            url.append(base)
            started.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "the server did not start"
    try:
        yield url[0]
    finally:
        assert ready is not None
        stop_future = ready
        loop.call_soon_threadsafe(lambda: stop_future.done() or stop_future.set_result(None))
        thread.join(15)
        loop.close()


def socket_threads() -> list[threading.Thread]:
    """The threads of tether's sync faces (a LoopThread is named "tether....")."""
    return [t for t in threading.enumerate() if t.name.startswith("tether.")]


def settled_thread_count(timeout: float = 10) -> int:
    """``threading.active_count()`` once the socket threads of earlier tests
    have ended."""
    deadline = time.monotonic() + timeout
    while socket_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not socket_threads(), f"threads left running: {socket_threads()}"
    return threading.active_count()


def wait_for_thread_count(count: int, timeout: float = 10) -> int:
    """Wait (bounded) until ``threading.active_count() == count``; return it."""
    deadline = time.monotonic() + timeout
    while threading.active_count() != count and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count()
