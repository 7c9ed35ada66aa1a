#!/usr/bin/env python3
"""Hub benchmark (not a test): fan-out in one process, and latency through Redis.

    .venv/bin/python bench/hub_bench.py            # the whole table, a few minutes
    .venv/bin/python bench/hub_bench.py --quick    # 1,000 subscribers only, no Redis part

1. Fan-out. This process runs the server; a child process (this script with
   ``--client``) opens N WebSocket connections on loopback and counts the
   frames each receives. The server publishes M text messages (a 150-byte
   JSON tick) to all N: with tether's :class:`~tether.hub.Hub`, and with
   websockets' ``broadcast()`` over the same clients, in the same run.
   Reported: deliveries per second end to end (N x M / time until every client
   has every frame), and the server's time inside the publish call per message
   (the fan-out cost itself). Compression: off; tether with
   ``server_no_context_takeover`` (one compression per message, shared);
   tether with context takeover (each socket's own deflater); websockets'
   default deflate (context takeover, per socket).

2. Cross-process latency. A real redis-server (Debian's) on a free loopback
   port; a ``tether serve bench/hub_bench.py:app --redis URL`` subprocess with
   C clients; this process publishes P timestamped messages, one per
   millisecond, through its own hub and Redis; the clients (in this process)
   note the arrival time. Reported: p50, p99 and max of publish-to-client.

Everything runs on 127.0.0.1 and stops by itself; the fd limit is raised to
the hard limit (10,000 subscribers need 10,000 sockets per side).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TICK = json.dumps(
    {"type": "tick", "symbol": "TTHR", "bid": 101.25, "ask": 101.27, "size": 300,
     "venue": "loopback", "seq": 0, "note": "the same fields in every message"}
)  # fmt: skip


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ----------------------------------------------------------------------
# The client process: N raw connections that count frames


class Counter(asyncio.Protocol):
    """Reads a 101 response, then counts frames (headers only: no inflating)."""

    def __init__(self, done: asyncio.Future[None], expected: list[int]) -> None:
        self.buf = b""
        self.opened = done
        self.expected = expected
        self.frames = 0
        self.skip = 0
        self.finished: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(self.buf[:200].decode(errors="replace")))
                return
            self.opened.set_result(None)
            data, self.buf = self.buf[end + 4 :], b""
        if self.skip >= len(data):
            self.skip -= len(data)
            return
        buf = self.buf + data[self.skip :] if self.buf else data[self.skip :]
        self.skip = 0
        pos, n = 0, len(buf)
        frames = 0
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                header = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                header = 10
            if buf[pos] & 0x0F in (1, 2):
                frames += 1
            end = pos + header + length
            if end > n:
                self.skip = end - n
                pos = n
                break
            pos = end
        self.buf = buf[pos:] if pos < n else b""
        self.frames += frames
        finished = self.finished
        if finished is not None and self.frames >= self.expected[0] and not finished.done():
            finished.set_result(None)


async def client_main(port: int, n: int, deflate: bool) -> None:
    loop = asyncio.get_running_loop()
    expected = [0]
    protocols: list[Counter] = []
    extensions = (
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        if deflate
        else ""
    )

    async def open_one() -> None:
        opened: asyncio.Future[None] = loop.create_future()
        transport, protocol = await loop.create_connection(
            lambda: Counter(opened, expected), "127.0.0.1", port
        )
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extensions}\r\n"
            ).encode()
        )
        await asyncio.wait_for(opened, 30)
        protocols.append(protocol)

    for start in range(0, n, 250):
        await asyncio.gather(*(open_one() for _ in range(min(250, n - start))))
    print("ready", flush=True)
    # Rounds: the parent says "expect K" (cumulative frames per connection),
    # we answer "done" once every connection has that many.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        expected[0] = int(line[1])
        waits = []
        for protocol in protocols:
            if protocol.frames < expected[0]:
                protocol.finished = loop.create_future()
                waits.append(protocol.finished)
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), 120)
        print("done", flush=True)
    for protocol in protocols:
        if protocol.transport is not None:
            protocol.transport.abort()


# ----------------------------------------------------------------------
# The servers


class Clients:
    """The client process, driven over its stdin/stdout."""

    def __init__(self, port: int, n: int, deflate: bool) -> None:
        self.n = n
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--client", str(port), str(n), "1" if deflate else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    async def line(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.to_thread(self.proc.stdout.readline)).strip()

    async def expect(self, frames: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"expect {frames}\n")
        self.proc.stdin.flush()
        line = await self.line()
        assert line == "done", line

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


async def fan_out(impl: str, n: int, messages: int, compression: str) -> dict[str, Any]:
    """One row of the table."""
    import tether
    from tether.hub import Hub
    from tether.protocol.deflate import DeflateOptions

    joined = asyncio.Event()
    count = 0
    publish_time = 0.0
    texts = [TICK.replace('"seq": 0', f'"seq": {i}') for i in range(messages)]

    if impl == "tether":
        if compression == "off":
            deflate: Any = None
        elif compression == "shared":
            deflate = DeflateOptions(server_no_context_takeover=True)
        else:
            deflate = DeflateOptions()
        hub = Hub()

        async def handler(ws: tether.Connection) -> None:
            nonlocal count
            hub.subscribe(ws, "ticks")
            count += 1
            if count == n:
                joined.set()
            await ws.wait_closed()

        server: Any = await tether.serve(
            handler, "127.0.0.1", 0, compression=deflate, ping_interval=None, backlog=4096
        )
        port = server.port

        async def publish(text: str) -> None:
            await hub.publish("ticks", text)

    else:
        from websockets.asyncio.server import broadcast, serve

        connections: set[Any] = set()

        async def ws_handler(ws: Any) -> None:
            nonlocal count
            connections.add(ws)
            count += 1
            if count == n:
                joined.set()
            try:
                await ws.wait_closed()
            finally:
                connections.discard(ws)

        server = await serve(
            ws_handler, "127.0.0.1", 0, compression="deflate" if compression != "off" else None,
            ping_interval=None, backlog=4096, max_queue=None,
        )  # fmt: skip
        port = server.sockets[0].getsockname()[1]

        async def publish(text: str) -> None:
            broadcast(connections, text)

    clients = Clients(port, n, compression != "off")
    try:
        assert await clients.line() == "ready"
        await asyncio.wait_for(joined.wait(), 60)
        # Warm-up round (allocates deflaters), not timed.
        await publish(texts[0])
        await clients.expect(1)
        start = time.perf_counter()
        for i, text in enumerate(texts):
            t0 = time.perf_counter()
            await publish(text)
            publish_time += time.perf_counter() - t0
            if i % 4 == 3:
                await asyncio.sleep(0)  # let the transports write
        await clients.expect(1 + messages)
        elapsed = time.perf_counter() - start
    finally:
        clients.close()
        server.close()
        await server.wait_closed()
    return {
        "impl": impl,
        "subscribers": n,
        "compression": compression,
        "messages": messages,
        "deliveries_per_s": n * messages / elapsed,
        "publish_ms": publish_time / messages * 1000,
    }


# ----------------------------------------------------------------------
# Latency through Redis


class App:
    """``tether serve bench/hub_bench.py:app``: every connection subscribes
    to "lat" on the default hub (Redis with --redis)."""

    def __tether_dispatch__(self, connection: Any, request: Any) -> Any:
        from tether.aio.server import Upgrade

        async def session(ws: Any) -> None:
            from tether.hub import default_hub

            hub = default_hub()
            hub.subscribe(ws, "lat")
            await hub.synced()
            await ws.send("ready")
            await ws.wait_closed()

        return Upgrade(session)


app = App()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def redis_latency(subscribers: int, messages: int) -> dict[str, Any]:
    import tether
    from tether.hub import Hub
    from tether.hub.redis import RedisBackplane

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not installed (scripts/setup installs it)")
    folder = tempfile.mkdtemp(prefix="tether-bench-redis-")
    redis_port, serve_port = free_port(), free_port()
    redis = subprocess.Popen(
        [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{redis_port}/0"
    serve = None
    hub = Hub(RedisBackplane(url))
    try:
        wait_port(redis_port)
        serve = subprocess.Popen(
            [sys.executable, "-m", "tether.cli.serve", "hub_bench:app", "--app-dir", str(HERE),
             "--port", str(serve_port), "--redis", url, "--ping-interval", "0"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(serve_port)
        clients = [
            await tether.connect(f"ws://127.0.0.1:{serve_port}/", ping_interval=None)
            for _ in range(subscribers)
        ]
        for client in clients:
            assert await asyncio.wait_for(client.recv(), 10) == "ready"
        latencies: list[float] = []

        async def receive(client: Any) -> None:
            for _ in range(messages):
                message = await client.recv()
                latencies.append(time.perf_counter() - float(message))

        receivers = [asyncio.ensure_future(receive(client)) for client in clients]
        hub._attach()  # connect to Redis now, not on the first publish
        await asyncio.wait_for(hub.synced(), 10)
        for _ in range(messages):
            await hub.publish("lat", repr(time.perf_counter()))
            await asyncio.sleep(0.001)
        await asyncio.wait_for(asyncio.gather(*receivers), 60)
        for client in clients:
            await client.close()
    finally:
        await hub.close()
        for proc in (serve, redis):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
    latencies.sort()
    return {
        "subscribers": subscribers,
        "messages": messages,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


# ----------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    from tether.protocol import accel

    limit = raise_fd_limit()
    sizes = [1000] if args.quick else [1000, 10_000]
    sizes = [n for n in sizes if n + 200 < limit]
    print(f"fd limit {limit}; speedups {'on' if accel.SPEEDUPS else 'off'}; "
          f"message {len(TICK)} bytes of JSON text; loopback, asyncio event loop; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows = []
    for n in sizes:
        messages = 100 if n <= 1000 else 20
        for impl, compression in [
            ("tether", "off"), ("websockets", "off"),
            ("tether", "shared"), ("tether", "per-socket"), ("websockets", "per-socket"),
        ]:  # fmt: skip
            row = await fan_out(impl, n, messages, compression)
            rows.append(row)
            print(f"  {impl:<10} {n:>6,} subscribers  compression {compression:<10} "
                  f"{row['deliveries_per_s']:>11,.0f} deliveries/s  "
                  f"{row['publish_ms']:7.2f} ms in publish per message", flush=True)  # fmt: skip
    print()
    print(
        "| implementation | subscribers | compression | deliveries/s | publish call per message |"
    )
    print("|---|---:|---|---:|---:|")
    names = {"off": "off", "shared": "deflate, shared (server_no_context_takeover)",
             "per-socket": "deflate, per socket (context takeover)"}  # fmt: skip
    for row in rows:
        print(f"| {row['impl']} | {row['subscribers']:,} | {names[row['compression']]} | "
              f"{row['deliveries_per_s']:,.0f} | {row['publish_ms']:.2f} ms |")  # fmt: skip
    if not args.quick:
        lat = await redis_latency(subscribers=50, messages=1000)
        print()
        print("| cross-process through Redis | subscribers | messages | p50 | p99 | max |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| publish in process A -> Redis -> worker B -> client | {lat['subscribers']} | "
              f"{lat['messages']:,} | {lat['p50_ms']:.2f} ms | {lat['p99_ms']:.2f} ms | "
              f"{lat['max_ms']:.2f} ms |")  # fmt: skip
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        raise_fd_limit()
        _, _, port, n, deflate = sys.argv
        asyncio.run(client_main(int(port), int(n), deflate == "1"))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 subscribers only, no Redis")
    asyncio.run(main(parser.parse_args()))
