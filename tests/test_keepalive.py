"""Keepalive that tells the truth: a peer that stops answering pings is found
within ``ping_interval + ping_timeout``, and the close code, reason and
exception say so. Bounds are loose (a busy CI machine is slow), never tight
wall-time assertions."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

import tether
from test_reconnect import ECHO_SERVER, ROOT, free_port
from tether.aio.reconnect import Retry
from tether.protocol.events import Ping

INTERVAL = 0.3
TIMEOUT = 0.4


async def swallowing_handler(ws: tether.Connection) -> None:
    """Reads everything, answers nothing (run with ``auto_pong=False``)."""
    await ws.wait_closed()


def assert_says_the_peer_stopped_answering(exc: tether.ConnectionClosed) -> None:
    assert isinstance(exc, tether.ConnectionClosedError)
    # No close frame came back (RFC 6455 7.1.5: the code is then 1006); the
    # reason and the message say why, and so does the cause.
    assert exc.code == 1006
    assert exc.reason == f"keepalive timeout: no pong from the peer within {TIMEOUT} s"
    assert "keepalive" in str(exc) and "no pong from the peer" in str(exc)
    assert isinstance(exc.__cause__, TimeoutError)
    # We told the peer too, in case it still reads.
    assert exc.sent is not None and exc.sent.code == 1011
    assert exc.sent.reason == "keepalive ping timeout"


async def test_a_server_that_swallows_pings_is_detected() -> None:
    async with tether.serve(swallowing_handler, "127.0.0.1", 0, auto_pong=False) as server:
        loop = asyncio.get_running_loop()
        ws = await tether.connect(
            f"ws://127.0.0.1:{server.port}/", ping_interval=INTERVAL, ping_timeout=TIMEOUT
        )
        start = loop.time()
        with pytest.raises(tether.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        elapsed = loop.time() - start
    # Detected once the first ping went unanswered for ping_timeout.
    assert INTERVAL + TIMEOUT - 0.05 <= elapsed <= INTERVAL + TIMEOUT + 1.5
    assert_says_the_peer_stopped_answering(info.value)
    assert ws.close_code == 1006 and ws.close_reason == info.value.reason
    assert ws.state is tether.State.CLOSED
    with pytest.raises(tether.ConnectionClosedError):
        await ws.send("too late")


async def test_a_frozen_server_process_is_detected() -> None:
    # SIGSTOP: the kernel still accepts our bytes, nothing answers them:
    # what a hung server or a dead NAT mapping looks like.
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    try:
        for _ in range(400):
            try:
                ws = await tether.connect(
                    f"ws://127.0.0.1:{port}/", ping_interval=INTERVAL, ping_timeout=TIMEOUT
                )
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the server did not start")
        await ws.send("alive?")
        assert await asyncio.wait_for(ws.recv(), 5) == "alive?"
        proc.send_signal(signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(tether.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        elapsed = loop.time() - start
        assert elapsed <= INTERVAL + TIMEOUT + 1.5
        assert_says_the_peer_stopped_answering(info.value)
    finally:
        proc.kill()
        proc.wait(10)


async def test_the_server_detects_a_client_that_swallows_pings() -> None:
    closed: asyncio.Future[tether.ConnectionClosed] = asyncio.get_running_loop().create_future()

    async def handler(ws: tether.Connection) -> None:
        try:
            await ws.recv()
        except tether.ConnectionClosed as exc:
            closed.set_result(exc)

    async with tether.serve(
        handler, "127.0.0.1", 0, ping_interval=INTERVAL, ping_timeout=TIMEOUT
    ) as server:
        async with tether.connect(
            f"ws://127.0.0.1:{server.port}/", auto_pong=False, ping_interval=None
        ):
            exc = await asyncio.wait_for(closed, 10)
    assert_says_the_peer_stopped_answering(exc)


async def test_a_peer_that_answers_is_never_dropped() -> None:
    pings = 0

    async def counting_echo(ws: tether.Connection) -> None:
        nonlocal pings
        async for event in ws:
            if isinstance(event, Ping):
                pings += 1  # answered by the engine (auto_pong)
            else:
                await ws.send(event)

    async with tether.serve(counting_echo, "127.0.0.1", 0, control_frames=True) as server:
        ws = await tether.connect(
            f"ws://127.0.0.1:{server.port}/", ping_interval=0.05, ping_timeout=0.2
        )
        await asyncio.sleep(0.8)  # about 16 keepalive rounds
        assert ws.state is tether.State.OPEN
        assert pings >= 4
        await ws.send("still here")
        assert await ws.recv() == "still here"
        await ws.close()


async def test_the_reconnecting_client_records_the_keepalive_timeout() -> None:
    async with tether.serve(swallowing_handler, "127.0.0.1", 0, auto_pong=False) as server:
        client = tether.connect(
            f"ws://127.0.0.1:{server.port}/",
            ping_interval=INTERVAL,
            ping_timeout=TIMEOUT,
            retry=Retry(initial=0.01, cap=0.01),
        )
        seen: list[Any] = []
        async for ws in client:
            seen.append(ws)
            if len(seen) == 2:
                break
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except tether.ConnectionClosed:
                continue
        closed = client.attempts[0].closed
        assert closed is not None
        assert_says_the_peer_stopped_answering(closed)
        assert client.attempts[0].will_retry is True
        assert client.reconnecting is not None
        await client.reconnecting.aclose()
