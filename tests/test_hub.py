"""tether.hub.hub and tether.hub.memory: topics, fan-out, compression sharing,
slow consumers (in process, and a server subprocess whose memory is measured)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import tether
from hub_support import Serve, rss_kib
from tether.hub import (
    BackplaneUnavailable,
    Hub,
    MemoryBackplane,
    default_hub,
    set_default_hub,
)
from tether.protocol.deflate import DeflateOptions, PerMessageDeflate

TIMEOUT = 10


def subscriber_app(hub: Hub, topic: str = "t") -> Callable[[tether.Connection], Awaitable[None]]:
    """A handler that subscribes each connection to ``topic`` and publishes
    whatever it receives there."""

    async def handler(ws: tether.Connection) -> None:
        hub.subscribe(ws, topic)
        await ws.send("subscribed")
        async for message in ws:
            await hub.publish(topic, message)

    return handler


async def connect_many(port: int, n: int, **options: object) -> list[tether.ClientConnection]:
    clients = [await tether.connect(f"ws://127.0.0.1:{port}/", **options) for _ in range(n)]
    for client in clients:
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "subscribed"
    return clients


async def recv_n(client: tether.Connection, n: int) -> list[str | bytes]:
    return [await asyncio.wait_for(client.recv(), TIMEOUT) for _ in range(n)]


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as hub:
        yield hub


# ----------------------------------------------------------------------
# Subscriptions


async def test_subscribe_unsubscribe_topics_and_cleanup_on_close(hub: Hub) -> None:
    joined = asyncio.Event()
    server_side: list[tether.Connection] = []

    async def handler(ws: tether.Connection) -> None:
        server_side.append(ws)
        hub.subscribe(ws, "a")
        hub.subscribe(ws, "b")
        hub.subscribe(ws, "b")  # twice: no effect
        joined.set()
        await ws.wait_closed()

    async with tether.serve(handler, "127.0.0.1", 0) as server:
        client = await tether.connect(f"ws://127.0.0.1:{server.port}/")
        await asyncio.wait_for(joined.wait(), TIMEOUT)
        ws = server_side[0]
        assert sorted(hub.topics()) == ["a", "b"]
        assert hub.subscribers("a") == [ws] and hub.subscribers("b") == [ws]
        stats = hub.statistics()
        assert (stats.topics, stats.connections, stats.subscriptions) == (2, 1, 2)
        hub.unsubscribe(ws, "a")
        hub.unsubscribe(ws, "nope")
        assert hub.topics() == ["b"] and hub.subscribers("a") == []
        await client.close()
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        # The close callback removed it from every topic.
        assert hub.topics() == [] and hub.statistics().connections == 0
        # A closed connection is not subscribed at all.
        hub.subscribe(ws, "c")
        assert hub.topics() == []


async def test_publish_text_and_binary_to_subscribers_of_the_topic_only(hub: Hub) -> None:
    async def handler(ws: tether.Connection) -> None:
        assert ws.request is not None
        hub.subscribe(ws, ws.request.url_path.strip("/"))
        await ws.send("subscribed")
        await ws.wait_closed()

    async with tether.serve(handler, "127.0.0.1", 0) as server:
        reds = [await tether.connect(f"ws://127.0.0.1:{server.port}/red") for _ in range(3)]
        blue = await tether.connect(f"ws://127.0.0.1:{server.port}/blue")
        for client in [*reds, blue]:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "subscribed"
        assert await hub.publish("red", "hello") == 3
        assert await hub.publish("red", b"\x00\xffbin") == 3
        assert await hub.publish("green", "nobody") == 0
        assert await hub.publish("blue", "only blue") == 1
        for client in reds:
            assert await recv_n(client, 2) == ["hello", b"\x00\xffbin"]
        assert await recv_n(blue, 1) == ["only blue"]
        stats = hub.statistics()
        assert (stats.published, stats.delivered, stats.dropped) == (4, 7, 0)
        assert stats.as_dict()["backplane"]["kind"] == "memory"
        with pytest.raises(TypeError):
            await hub.publish("red", 42)  # type: ignore[arg-type]
        for client in [*reds, blue]:
            await client.close()


async def test_publish_never_suspends_whatever_the_number_of_subscribers(hub: Hub) -> None:
    """Fan-out is synchronous writes to transports: the publish coroutine
    finishes at its first step, without a single await per subscriber."""
    n = 300
    async with tether.serve(subscriber_app(hub), "127.0.0.1", 0, compression=None) as server:
        clients = await connect_many(server.port, n, compression=None)
        coroutine = hub.publish("t", "x" * 100)
        with pytest.raises(StopIteration) as done:
            coroutine.send(None)
        assert done.value.value == n
        for client in clients:
            assert await recv_n(client, 1) == ["x" * 100]
        await asyncio.gather(*(client.close() for client in clients))


# ----------------------------------------------------------------------
# Compression


async def test_one_compression_shared_by_no_context_takeover_sockets(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = DeflateOptions(server_no_context_takeover=True)
    async with tether.serve(subscriber_app(hub), "127.0.0.1", 0, compression=options) as server:
        clients = await connect_many(server.port, 4)
        assert len(hub._codecs) == 1
        (codec,) = hub._codecs.values()
        calls = 0
        compress = PerMessageDeflate.compress

        def counting(self: PerMessageDeflate, data: bytes) -> bytes:
            nonlocal calls
            calls += self is codec
            return compress(self, data)

        monkeypatch.setattr(PerMessageDeflate, "compress", counting)
        messages = [f"message {i}: " + "the same words again and again " * 8 for i in range(20)]
        for message in messages:
            await hub.publish("t", message)
        await hub.publish("t", "short")  # under min_size: plain frame, no compression
        # One compression per message, not one per socket.
        assert calls == len(messages)
        for client in clients:
            assert await recv_n(client, 21) == [*messages, "short"]
        await asyncio.gather(*(client.close() for client in clients))


@pytest.mark.parametrize("compress_own", [True, False])
async def test_context_takeover_sockets_stay_in_sync(compress_own: bool) -> None:
    """Connections whose deflater keeps its context get their own compression
    (or none): hub messages interleaved with the connection's own messages,
    all alike so that back-references abound, inflate correctly."""
    async with Hub(compress_own=compress_own) as hub:
        server_side: list[tether.Connection] = []

        async def handler(ws: tether.Connection) -> None:
            server_side.append(ws)
            hub.subscribe(ws, "t")
            await ws.send("subscribed")
            await ws.wait_closed()

        async with tether.serve(handler, "127.0.0.1", 0) as server:  # default: takeover
            clients = await connect_many(server.port, 3)
            expected = []
            for i in range(30):
                text = f"line {i}: a message that looks like the previous one " * 4
                await hub.publish("t", text)
                expected.append(text)
                own = f"own {i}: a message that looks like the previous one " * 4
                for ws in server_side:
                    await ws.send(own)
                expected.append(own)
            for client in clients:
                assert await recv_n(client, len(expected)) == expected
            await asyncio.gather(*(client.close() for client in clients))


# ----------------------------------------------------------------------
# Slow consumers, in process


async def stalled_subscriber(port: int, path: str) -> socket.socket:
    """A client that completes the handshake, then never reads again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), TIMEOUT)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101")
    return sock


async def read_frames(sock: socket.socket, timeout: float) -> list[tuple[int, bytes]]:
    """Read unmasked frames until a close frame, EOF, a reset or ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buf = bytearray()
    pos = 0
    frames: list[tuple[int, bytes]] = []
    try:
        while True:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), deadline - loop.time())
            if not chunk:
                return frames
            buf += chunk
            while len(buf) - pos >= 2:
                b0, length = buf[pos], buf[pos + 1] & 0x7F
                header = 2
                if length == 126 and len(buf) - pos >= 4:
                    (length,) = struct.unpack_from("!H", buf, pos + 2)
                    header = 4
                elif length == 127 and len(buf) - pos >= 10:
                    (length,) = struct.unpack_from("!Q", buf, pos + 2)
                    header = 10
                elif length >= 126 or len(buf) - pos < header + length:
                    break
                if len(buf) - pos < header + length:
                    break
                frames.append((b0, bytes(buf[pos + header : pos + header + length])))
                pos += header + length
                if b0 & 0x0F == 8:
                    return frames
            del buf[:pos]
            pos = 0
    except (asyncio.TimeoutError, ConnectionError):
        return frames


@pytest.mark.parametrize("policy", ["drop", "close"])
async def test_slow_consumer_policy_in_process(policy: str) -> None:
    limit = 32 * 1024
    hub = Hub(max_buffer=limit, slow_consumer=policy, close_code=1008)  # type: ignore[arg-type]
    by_path: dict[str, tether.Connection] = {}

    async def handler(ws: tether.Connection) -> None:
        assert ws.request is not None
        by_path[ws.request.url_path] = ws
        hub.subscribe(ws, "t")
        await ws.wait_closed()

    async with tether.serve(handler, "127.0.0.1", 0, compression=None, close_timeout=1) as server:
        slow_sock = await stalled_subscriber(server.port, "/slow")
        fast = await tether.connect(f"ws://127.0.0.1:{server.port}/fast", compression=None)
        while len(by_path) < 2:
            await asyncio.sleep(0.01)
        slow = by_path["/slow"]
        total, size = 3000, 1024
        received: list[bytes] = []

        async def reader() -> None:
            while len(received) < total:
                message = await fast.recv()
                assert isinstance(message, bytes)
                received.append(message)

        task = asyncio.ensure_future(reader())
        peak = 0
        for seq in range(total):
            await hub.publish("t", seq.to_bytes(4, "big") + b"x" * (size - 4))
            peak = max(peak, slow.buffered_amount)
            if seq % 50 == 0:
                await asyncio.sleep(0)  # let the fast reader keep up
        await asyncio.wait_for(task, TIMEOUT)
        # The fast client got every message, in order.
        assert [int.from_bytes(m[:4], "big") for m in received] == list(range(total))
        # The slow one never had more than the limit (plus one frame) buffered.
        assert peak <= limit + size + 16
        stats = hub.statistics()
        if policy == "drop":
            assert stats.dropped > 0 and stats.closed == 0
            assert hub.dropped(slow) == stats.dropped
            assert hub.subscribers("t") == [slow, by_path["/fast"]]
        else:
            assert stats.closed == 1 and stats.dropped == 0
            assert hub.subscribers("t") == [by_path["/fast"]]
            await asyncio.wait_for(slow.wait_closed(), TIMEOUT)
            closed = slow.closed_exception
            assert closed is not None and closed.sent is not None
            assert (closed.sent.code, closed.sent.reason) == (1008, hub.close_reason)
        slow_sock.close()
        await fast.close()
    await hub.close()


# ----------------------------------------------------------------------
# Slow consumer against a server subprocess: its memory stays bounded


@pytest.mark.parametrize("policy", ["drop", "close"])
async def test_slow_consumer_keeps_server_memory_bounded(policy: str) -> None:
    """A client stops reading while the hub publishes 100,000 messages of
    1 KiB (100 MiB); the server's RSS grows by a few MiB at most, the policy
    is applied, and two other clients get every message."""
    serve = Serve("hub_app:app", "--no-compression", env={"HUB_POLICY": policy})
    try:
        serve.wait_for("listening")
        pid = serve.proc.pid
        url = f"ws://127.0.0.1:{serve.port}"
        slow_sock = await stalled_subscriber(serve.port, "/sub/feed")
        fast = [await tether.connect(f"{url}/", compression=None) for _ in range(2)]
        for client in fast:
            assert "hello" in json.loads(await asyncio.wait_for(client.recv(), TIMEOUT))
            await client.send(json.dumps({"op": "sub", "topic": "feed"}))
            assert json.loads(await asyncio.wait_for(client.recv(), TIMEOUT)) == {"reply": "sub"}
        publisher = fast[0]

        async def stats() -> dict[str, int]:
            await publisher.send(json.dumps({"op": "stats"}))
            reply = json.loads(await asyncio.wait_for(publisher.recv(), TIMEOUT))
            assert reply["reply"] == "stats"
            return reply  # type: ignore[no-any-return]

        async def one_round(count: int, size: int) -> None:
            # The server publishes `count` messages; both readers get them all
            # before the next round (the stalled client never reads).
            await publisher.send(
                json.dumps({"op": "blast", "topic": "feed", "count": count, "size": size})
            )
            for client in fast:
                for i in range(count):
                    message = await client.recv()
                    assert isinstance(message, bytes) and len(message) == size
                    assert int.from_bytes(message[:8], "big") == i
            assert json.loads(await publisher.recv()) == {"reply": "blast", "count": count}

        before = rss_kib(pid)
        total, batch, size = 100_000, 1000, 1024
        peak = before
        slow_reader = None
        for start in range(0, total, batch):
            await asyncio.wait_for(one_round(batch, size), TIMEOUT)
            if start % 10_000 == 0:
                peak = max(peak, rss_kib(pid))
            if start == 10_000:
                # 10 MiB published: far past the 1 MiB limit and the kernel's
                # socket buffers. The policy has been applied by now.
                applied = await stats()
                if policy == "drop":
                    assert applied["dropped"] > 0 and applied["closed"] == 0
                else:
                    assert applied["closed"] == 1 and applied["dropped"] == 0
                    # The closed client reads again: behind what was buffered
                    # it finds the close frame (the server waits close_timeout
                    # for its answer, then drops TCP).
                    slow_reader = asyncio.ensure_future(read_frames(slow_sock, TIMEOUT))
        after = rss_kib(pid)
        peak = max(peak, after)
        final = await stats()
        print(f"server RSS ({policy}): before {before} KiB, peak {peak} KiB, after {after} KiB")
        # 100 MiB went to the stalled socket's topic; the server may keep the
        # hub's 1 MiB limit of it (plus allocator noise).
        assert peak - before < 16 * 1024, (before, peak, after)
        assert final["delivered"] >= 2 * total
        if policy == "drop":
            assert final["dropped"] > total - 10_000 and final["closed"] == 0
            assert final["subscriptions"] == 3
        else:
            assert final["closed"] == 1 and final["dropped"] == 0
            assert final["subscriptions"] == 2
            assert slow_reader is not None
            frames = await slow_reader
            closes = [payload for b0, payload in frames if b0 & 0x0F == 8]
            assert len(closes) == 1 and struct.unpack("!H", closes[0][:2])[0] == 1013
            assert b"slow consumer" in closes[0]
        slow_sock.close()
        for client in fast:
            await client.close()
    finally:
        await asyncio.to_thread(serve.close)


# ----------------------------------------------------------------------
# Backplanes and the default hub


async def test_memory_backplane_connects_hubs_of_one_process() -> None:
    bus = MemoryBackplane()
    a, b = Hub(bus), Hub(bus)
    joined: list[tether.Connection] = []

    def app(hub: Hub) -> Callable[[tether.Connection], Awaitable[None]]:
        async def handler(ws: tether.Connection) -> None:
            hub.subscribe(ws, "t")
            joined.append(ws)
            await ws.wait_closed()

        return handler

    async with (
        tether.serve(app(a), "127.0.0.1", 0) as sa,
        tether.serve(app(b), "127.0.0.1", 0) as sb,
    ):
        ca = await tether.connect(f"ws://127.0.0.1:{sa.port}/")
        cb = await tether.connect(f"ws://127.0.0.1:{sb.port}/")
        while len(joined) < 2:
            await asyncio.sleep(0.01)
        await a.synced()
        assert await a.publish("t", "from a") == 1
        assert await b.publish("t", "from b") == 1
        # Each client gets each message once.
        assert await recv_n(ca, 2) == ["from a", "from b"]
        assert await recv_n(cb, 2) == ["from a", "from b"]
        assert a.statistics().received == 1 and bus.statistics()["relayed"] == 2
        await ca.close()
        await cb.close()
    await a.close()
    await b.close()


async def test_default_hub_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = set_default_hub(None)
    try:
        monkeypatch.delenv("TETHER_REDIS_URL", raising=False)
        hub = default_hub()
        assert default_hub() is hub
        assert isinstance(hub.backplane, MemoryBackplane)
        monkeypatch.setenv("TETHER_REDIS_URL", "redis://127.0.0.1:1/0")
        assert set_default_hub(None) is hub
        redis_hub = default_hub()
        assert type(redis_hub.backplane).__name__ == "RedisBackplane"
        assert redis_hub.backplane.url == "redis://127.0.0.1:1/0"  # type: ignore[attr-defined]
    finally:
        set_default_hub(previous)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Hub(slow_consumer="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Hub(close_code=1006)
    with pytest.raises(ValueError):
        Hub(close_reason="x" * 124)
    with pytest.raises(ValueError):
        Hub(max_buffer=0)
    assert issubclass(BackplaneUnavailable, Exception)
    assert "MemoryBackplane" in repr(Hub())


async def test_client_connections_get_masked_frames(echo_server: tether.Server, hub: Hub) -> None:
    """A hub may hold client-side connections too: each encodes (masks) its own."""
    clients = [await tether.connect(f"ws://127.0.0.1:{echo_server.port}/") for _ in range(2)]
    for client in clients:
        hub.subscribe(client, "out")
    assert await hub.publish("out", "to the servers") == 2
    assert await hub.publish("out", b"\x01\x02") == 2
    for client in clients:  # the echo server accepted the masked frames and echoed them
        assert await recv_n(client, 2) == ["to the servers", b"\x01\x02"]
        await client.close()
