"""The reconnecting client: ``async for ws in tether.connect(url)``.

The backoff schedule is checked with a fake clock and a fake sleep (no wall
time); the resumption is checked against a server process that is killed
(SIGKILL) and started again 2 s later; interop against the ``websockets``
library's server and node's ``ws`` server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import tether
from tether.aio.reconnect import (
    Attempt,
    OutgoingQueue,
    OutgoingQueueFull,
    Retry,
    is_retryable,
)
from tether.aio.server import Upgrade

PEERS = pathlib.Path(__file__).parent / "peers"
ROOT = pathlib.Path(__file__).parent.parent


class FakeTime:
    """A clock that only moves when the code under test sleeps (or we say so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)

    def retry(self, **settings: Any) -> Retry:
        return Retry(clock=self.clock, sleep=self.sleep, **settings)


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def consume(client: tether.connect, received: list[Any], opened: list[Any]) -> None:
    """The loop a long-running client writes: read each connection until it drops."""
    async for ws in client:
        opened.append(ws)
        try:
            async for message in ws:
                received.append(message)
        except tether.ConnectionClosed:
            continue


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


# ----------------------------------------------------------------------
# The schedule, on a fake clock


async def test_backoff_schedule_without_jitter_on_a_fake_clock() -> None:
    fake = FakeTime()
    url = f"ws://127.0.0.1:{free_port()}/"  # connection refused, at once
    client = tether.connect(
        url, retry=fake.retry(initial=1.0, factor=2.0, cap=8.0, max_attempts=6, jitter=False)
    )
    with pytest.raises(ConnectionRefusedError):
        async for _ in client:
            pytest.fail("nothing listens there")
    # The first attempt is not delayed; then 1, 2, 4, capped at 8.
    assert fake.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert [a.delay for a in client.attempts] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert [a.outcome for a in client.attempts] == ["failed"] * 6
    assert [a.started for a in client.attempts] == [1000, 1001, 1003, 1007, 1015, 1023]
    assert all(isinstance(a.error, ConnectionRefusedError) for a in client.attempts)
    assert [a.will_retry for a in client.attempts] == [True] * 5 + [False]


async def test_full_jitter_scales_the_ceiling_by_the_random_draw() -> None:
    fake = FakeTime()
    draws = iter([0.5, 0.25, 0.0, 0.999, 0.5])
    client = tether.connect(
        f"ws://127.0.0.1:{free_port()}/",
        retry=fake.retry(
            initial=2.0, factor=3.0, cap=10.0, max_attempts=6, random=lambda: next(draws)
        ),
    )
    with pytest.raises(OSError):
        async for _ in client:
            pass
    # Ceilings 2, 6, 10 (18 capped), 10, 10, times the draws.
    delays = [a.delay for a in client.attempts]
    assert delays == pytest.approx([0.0, 1.0, 1.5, 0.0, 9.99, 5.0])
    assert fake.sleeps == pytest.approx([1.0, 1.5, 9.99, 5.0])  # no sleep for 0


def test_full_jitter_stays_between_zero_and_the_ceiling() -> None:
    retry = Retry(initial=0.1, factor=2.0, cap=5.0)
    import random

    rng = random.Random(7)
    for n in range(40):
        ceiling = min(5.0, 0.1 * 2.0**n)
        assert retry.ceiling(n) == pytest.approx(ceiling)
        for _ in range(20):
            assert 0.0 <= retry.delay(n, rng.random()) <= ceiling
    assert retry.ceiling(10_000) == 5.0  # no OverflowError


async def test_max_time_gives_up_before_a_sleep_that_would_pass_it() -> None:
    fake = FakeTime()
    client = tether.connect(
        f"ws://127.0.0.1:{free_port()}/",
        retry=fake.retry(initial=1.0, factor=2.0, cap=60.0, max_time=10.0, jitter=False),
    )
    with pytest.raises(ConnectionRefusedError):
        async for _ in client:
            pass
    # 1 + 2 + 4 = 7 s; waiting 8 more would end past 10 s: give up instead.
    assert fake.sleeps == [1.0, 2.0, 4.0]
    assert len(client.attempts) == 4


def test_retry_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="factor"):
        Retry(factor=0.5)
    with pytest.raises(ValueError, match="max_attempts"):
        Retry(max_attempts=0)
    with pytest.raises(ValueError):
        Retry(initial=-1)
    assert Retry(final_close_codes=[4001, 4002]).final_close_codes == frozenset({4001, 4002})


class ClosingApp:
    """Accepts every upgrade; each connection is closed by the server with
    ``code`` right after it sends ``"hello <n>"``, unless ``keep`` is set."""

    def __init__(self, code: int = 1001, keep: bool = False) -> None:
        self.code = code
        self.keep = keep
        self.count = 0
        self.requests: list[Any] = []

    def __tether_dispatch__(self, connection: Any, request: Any) -> Upgrade:
        self.requests.append(request)

        async def handler(ws: tether.Connection) -> None:
            self.count += 1
            await ws.send(f"hello {self.count}")
            if self.keep:
                await ws.wait_closed()
            else:
                await ws.close(self.code, "bye")

        return Upgrade(handler)


async def test_backoff_resets_after_a_connection_that_stayed_up() -> None:
    fake = FakeTime()
    app = ClosingApp(1001)
    async with tether.serve(app, "127.0.0.1", 0) as server:
        client = tether.connect(
            f"ws://127.0.0.1:{server.port}/",
            retry=fake.retry(initial=1.0, factor=2.0, cap=60.0, jitter=False, reset_after=30.0),
        )
        uptimes = iter([0.0, 0.0, 0.0, 45.0, 0.0, 0.0])
        count = 0
        async for ws in client:
            count += 1
            assert await ws.recv() == f"hello {count}"
            fake.now += next(uptimes)  # how long this connection "stays up"
            with pytest.raises(tether.ConnectionClosedOK):
                await ws.recv()
            if count == 6:
                break
    # Short-lived connections keep growing the delay; the 4th stayed up 45 s
    # (>= reset_after), so the one after it starts again at 1 s.
    assert fake.sleeps == [1.0, 2.0, 4.0, 1.0, 2.0]
    assert [round(a.uptime or 0.0) for a in client.attempts] == [0, 0, 0, 45, 0, 0]
    assert [a.outcome for a in client.attempts] == ["closed"] * 6
    assert [a.will_retry for a in client.attempts] == [True] * 5 + [None]


async def test_a_4xx_refusal_is_final_and_429_is_retried_after_retry_after() -> None:
    fake = FakeTime()
    statuses = iter([429, 503, 403])

    class Refuse:
        def __tether_dispatch__(self, connection: Any, request: Any) -> tether.Response:
            status = next(statuses)
            headers = {"Retry-After": "7"} if status == 429 else {}
            return tether.Response(status, headers=headers)

    async with tether.serve(Refuse(), "127.0.0.1", 0) as server:
        client = tether.connect(
            f"ws://127.0.0.1:{server.port}/",
            retry=fake.retry(initial=1.0, cap=30.0, jitter=False),
        )
        with pytest.raises(tether.InvalidStatus) as info:
            async for _ in client:
                pass
    assert info.value.status == 403
    # 429 with Retry-After: 7 waits 7 s instead of 1; 503 is retried; 403 is not.
    assert fake.sleeps == [7.0, 2.0]
    assert [a.will_retry for a in client.attempts] == [True, True, False]


def test_retryable_errors() -> None:
    ok = tether.Response(429)
    assert is_retryable(tether.InvalidStatus(ok))
    assert is_retryable(tether.InvalidStatus(tether.Response(500)))
    assert not is_retryable(tether.InvalidStatus(tether.Response(401)))
    assert not is_retryable(tether.InvalidStatus(tether.Response(404)))
    assert is_retryable(ConnectionResetError())
    assert is_retryable(tether.HandshakeTimeout("slow"))
    assert is_retryable(tether.InvalidMessage("connection closed during handshake"))
    assert not is_retryable(tether.InvalidURI("bad"))
    assert not is_retryable(tether.InvalidResponse("bad accept"))
    import ssl

    assert not is_retryable(ssl.SSLCertVerificationError("self-signed"))


async def test_should_retry_overrides_the_rule() -> None:
    fake = FakeTime()
    client = tether.connect(
        f"ws://127.0.0.1:{free_port()}/",
        retry=fake.retry(should_retry=lambda exc: False),
    )
    with pytest.raises(ConnectionRefusedError):
        async for _ in client:
            pass
    assert len(client.attempts) == 1 and fake.sleeps == []


@pytest.mark.parametrize("code", [4001, 1000])
async def test_a_final_close_code_ends_the_loop(code: int) -> None:
    fake = FakeTime()
    async with tether.serve(ClosingApp(code), "127.0.0.1", 0) as server:
        client = tether.connect(
            f"ws://127.0.0.1:{server.port}/",
            retry=fake.retry(final_close_codes={code}),
        )
        connections = 0
        if code == 1000:
            # A clean close with a final code ends the loop quietly...
            async for ws in client:
                connections += 1
                with contextlib.suppress(tether.ConnectionClosed):
                    await ws.recv()
                    await ws.recv()
        else:
            # ... an error code is raised.
            with pytest.raises(tether.ConnectionClosedError) as info:
                async for ws in client:
                    connections += 1
                    with contextlib.suppress(tether.ConnectionClosed):
                        await ws.recv()
                        await ws.recv()
            assert info.value.code == 4001 and info.value.reason == "bye"
    assert connections == 1
    assert client.attempts[0].will_retry is False


async def test_a_connection_left_open_is_replaced_and_break_leaves_it_to_aclose() -> None:
    fake = FakeTime()
    app = ClosingApp(keep=True)
    async with tether.serve(app, "127.0.0.1", 0) as server:
        client = tether.connect(f"ws://127.0.0.1:{server.port}/", retry=fake.retry())
        seen = []
        async for ws in client:
            seen.append(ws)
            assert await ws.recv() == f"hello {len(seen)}"
            if len(seen) == 3:
                break
        # The first two were closed by the loop (1000) when it came back.
        assert [ws.close_code for ws in seen[:2]] == [1000, 1000]
        assert seen[2].state is tether.State.OPEN
        assert client.reconnecting is not None
        await client.reconnecting.aclose()
        assert seen[2].close_code == 1000
        with pytest.raises(StopAsyncIteration):
            await client.reconnecting.__anext__()


async def test_on_attempt_sees_every_outcome_and_the_log_says_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTime()
    seen: list[tuple[int, str]] = []

    def on_attempt(attempt: Attempt) -> None:
        seen.append((attempt.number, attempt.outcome))

    port = free_port()
    caplog.set_level("INFO", logger="tether.client")
    client = tether.connect(
        f"ws://127.0.0.1:{port}/",
        retry=fake.retry(max_attempts=2, jitter=False),
        on_attempt=on_attempt,
    )
    with pytest.raises(OSError):
        async for _ in client:
            pass
    assert seen == [(1, "connecting"), (1, "failed"), (2, "connecting"), (2, "failed")]
    text = caplog.text
    assert "connecting to ws://127.0.0.1" in text
    assert "attempt 1 failed: ConnectionRefusedError" in text
    assert "reconnecting to ws://127.0.0.1" in text and "in 1.000 s" in text
    assert "giving up" in text
    assert "attempt 2" in str(client.attempts[1])


# ----------------------------------------------------------------------
# The outgoing queue on its own


def test_outgoing_queue_policies_when_full() -> None:
    raising = OutgoingQueue(2, "raise")
    raising.send_nowait("a")
    raising.send_nowait("b")
    with pytest.raises(OutgoingQueueFull):
        raising.send_nowait("c")
    assert raising.messages() == ["a", "b"] and raising.dropped == 0

    oldest = OutgoingQueue(2, "drop_oldest")
    for message in "abcd":
        oldest.send_nowait(message)
    assert oldest.messages() == ["c", "d"] and oldest.dropped == 2

    newest = OutgoingQueue(2, "drop_newest")
    for message in "abcd":
        newest.send_nowait(message)
    assert newest.messages() == ["a", "b"] and newest.dropped == 2

    with pytest.raises(ValueError):
        OutgoingQueue(0)
    with pytest.raises(ValueError):
        OutgoingQueue(3, "block")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        OutgoingQueue().send_nowait(3)  # type: ignore[arg-type]


async def test_outgoing_queue_flushes_in_order_then_sends_directly(
    echo_server: tether.Server,
) -> None:
    outbox = OutgoingQueue(10)
    assert [outbox.send_nowait(m) for m in ["one", b"two", "three"]] == [1, 2, 3]
    assert outbox.pending == 3 and outbox.connection is None
    client = tether.connect(f"ws://127.0.0.1:{echo_server.port}/", outbox=outbox)
    async for ws in client:
        assert outbox.pending == 0 and outbox.connection is ws
        assert await ws.send("four") is None  # direct sends still work
        assert await outbox.send("five") == 4
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(5)]
        assert got == ["one", b"two", "three", "four", "five"]
        await ws.close()
    assert outbox.connection is None
    outbox.send_nowait("later")
    assert outbox.messages() == ["later"]


async def test_until_confirmed_resends_what_was_not_confirmed(
    echo_server: tether.Server,
) -> None:
    outbox = OutgoingQueue(10, until_confirmed=True)
    client = tether.connect(f"ws://127.0.0.1:{echo_server.port}/", outbox=outbox)
    rounds = []
    async for ws in client:
        if not rounds:
            seqs = [await outbox.send(f"m{i}") for i in range(1, 5)]
            assert seqs == [1, 2, 3, 4] and outbox.unconfirmed == 4
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(4)]
            rounds.append(got)
            assert outbox.confirm(2) == 2  # the server acknowledged m1 and m2
            ws.abort()  # the network breaks before m3 and m4 are confirmed
            with pytest.raises(tether.ConnectionClosedError):
                await ws.recv()
            continue
        # After reconnecting, m3 and m4 are written again, first.
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(2)]
        rounds.append(got)
        await ws.close()
    assert rounds == [["m1", "m2", "m3", "m4"], ["m3", "m4"]]
    assert outbox.unconfirmed == 2 and outbox.confirm(4) == 2 and len(outbox) == 0


# ----------------------------------------------------------------------
# A server process killed and started again


#: An echo server in its own process (what ``tether echo`` runs, without the CLI).
ECHO_SERVER = """
import asyncio, sys, tether

async def main():
    async def echo(ws):
        async for message in ws:
            await ws.send(message)
    async with tether.serve(echo, "127.0.0.1", int(sys.argv[1])):
        await asyncio.Future()

asyncio.run(main())
"""


class ServerProcess:
    """A tether echo server in a subprocess, on a fixed port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER, str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        await asyncio.wait_for(self._listening(), 20)

    async def _listening(self) -> None:
        while True:
            assert self.proc is not None and self.proc.poll() is None, "the server exited"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
async def server_process() -> AsyncIterator[ServerProcess]:
    server = ServerProcess(free_port())
    try:
        yield server
    finally:
        server.stop()


async def test_resumes_after_the_server_process_is_killed_and_restarted(
    server_process: ServerProcess,
) -> None:
    await server_process.start()
    outbox = OutgoingQueue(100, "raise")
    retry = Retry(initial=0.1, factor=2.0, cap=0.4, reset_after=60.0)
    client = tether.connect(
        f"ws://127.0.0.1:{server_process.port}/", retry=retry, outbox=outbox, open_timeout=5
    )
    received: list[Any] = []
    opened: list[Any] = []
    task = asyncio.create_task(consume(client, received, opened))
    try:
        await wait_until(lambda: outbox.connection is not None)
        before = [f"before {i}" for i in range(3)]
        for message in before:
            await outbox.send(message)
        await wait_until(lambda: len(received) == 3)

        server_process.kill()  # SIGKILL: no closing handshake, no FIN from the app
        await wait_until(lambda: outbox.connection is None)
        gap = [f"gap {i}" for i in range(5)] + [b"\x00binary gap"]
        for message in gap:
            await outbox.send(message)  # held: nothing to send them to
        assert outbox.pending == len(gap)
        await asyncio.sleep(2.0)
        failed_while_down = [a for a in client.attempts if a.outcome == "failed"]
        server_process_started = asyncio.create_task(server_process.start())
        await server_process_started

        await wait_until(lambda: len(received) >= len(before) + len(gap))
        await asyncio.sleep(0.2)  # anything sent twice would show up by now
        assert received == before + gap  # in order, none lost, none twice
        assert outbox.pending == 0 and len(opened) == 2
        # While the server was down, attempts failed with capped delays.
        assert len(failed_while_down) >= 3
        assert all(isinstance(a.error, OSError) for a in failed_while_down)
        assert all(0 <= a.delay <= 0.4 for a in client.attempts)
        first = client.attempts[0]
        assert first.outcome == "closed" and first.closed is not None
        assert first.closed.code == 1006  # no close frame: the process died
        assert client.attempts[-1].outcome == "open"
    finally:
        assert client.reconnecting is not None
        await client.reconnecting.aclose()
        await asyncio.wait_for(task, 10)


# ----------------------------------------------------------------------
# Interop: other people's servers


async def test_reconnects_to_the_websockets_library_server() -> None:
    from websockets.asyncio.server import serve as ws_serve

    connections = 0

    async def handler(websocket: Any) -> None:
        nonlocal connections
        connections += 1
        async for message in websocket:
            if message == "restart":
                await websocket.close(1012, "service restart")
                return
            await websocket.send(message)

    port = free_port()
    outbox = OutgoingQueue(100)
    client = tether.connect(
        f"ws://127.0.0.1:{port}/", retry=Retry(initial=0.05, cap=0.2), outbox=outbox
    )
    received: list[Any] = []
    opened: list[Any] = []
    task = asyncio.create_task(consume(client, received, opened))
    try:
        server = await ws_serve(handler, "127.0.0.1", port)
        await wait_until(lambda: outbox.connection is not None)
        await outbox.send("one")
        await outbox.send("restart")  # the server closes with 1012
        await wait_until(lambda: len(opened) == 2 and outbox.connection is not None)
        await outbox.send("two")
        await wait_until(lambda: len(received) == 2)
        # The whole server goes away, then comes back on the same port.
        server.close()
        await server.wait_closed()
        await wait_until(lambda: outbox.connection is None)
        for message in ["three", b"four"]:
            await outbox.send(message)
        await asyncio.sleep(0.3)
        server = await ws_serve(handler, "127.0.0.1", port)
        await wait_until(lambda: len(received) == 4)
        assert received == ["one", "two", "three", b"four"]
        assert connections == 3
        assert opened[0].close_code == 1012 and opened[1].close_code == 1001
        server.close()
        await server.wait_closed()
    finally:
        assert client.reconnecting is not None
        await client.reconnecting.aclose()
        await asyncio.wait_for(task, 10)


class NodeServer:
    """node tests/peers/ws_server.js PORT (an echo server; "close:CODE:REASON" closes)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "node", str(PEERS / "ws_server.js"), str(self.port),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        assert line.decode().strip() == f"listening {self.port}"

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), 10)


async def test_reconnects_to_node_ws_server_killed_and_restarted() -> None:
    node = NodeServer(free_port())
    await node.start()
    outbox = OutgoingQueue(100)
    client = tether.connect(
        f"ws://127.0.0.1:{node.port}/", retry=Retry(initial=0.05, cap=0.2), outbox=outbox
    )
    received: list[Any] = []
    opened: list[Any] = []
    task = asyncio.create_task(consume(client, received, opened))
    try:
        await wait_until(lambda: outbox.connection is not None)
        await outbox.send("one")
        await outbox.send("close:4000:again")  # node closes with 4000
        await wait_until(lambda: len(opened) == 2 and outbox.connection is not None)
        assert opened[0].close_code == 4000 and opened[0].close_reason == "again"
        await outbox.send(b"\x01two")
        await wait_until(lambda: len(received) == 2)
        await node.kill()
        await wait_until(lambda: outbox.connection is None)
        for message in ["three", "four"]:
            await outbox.send(message)
        await asyncio.sleep(0.3)
        await node.start()
        await wait_until(lambda: len(received) == 4)
        assert received == ["one", b"\x01two", "three", "four"]
        assert opened[1].close_code == 1006
    finally:
        assert client.reconnecting is not None
        await client.reconnecting.aclose()
        await asyncio.wait_for(task, 10)
        await node.kill()
