"""Idle connections that negotiate permessage-deflate (wsload never offers it):
``idle_deflate.py --port P --pid PID -c 10000`` opens the connections, then
prints the server's RSS growth per connection as one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_one(port: int, sem: asyncio.Semaphore) -> tuple[asyncio.StreamWriter, bool]:
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head[:100])
        return writer, b"permessage-deflate" in head.lower()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("-c", type=int, default=10000)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kb(args.pid)
    sem = asyncio.Semaphore(100)
    opened = await asyncio.gather(*(open_one(args.port, sem) for _ in range(args.c)))
    await asyncio.sleep(1.0)
    after = rss_kb(args.pid)
    negotiated = sum(1 for _, ok in opened if ok)
    print(
        json.dumps(
            {
                "conns": args.c,
                "deflate_negotiated": negotiated,
                "rss_per_conn_kb": (after - before) * 1024 / args.c / 1024,
            }
        )
    )
    for writer, _ in opened:
        writer.close()


asyncio.run(main())
