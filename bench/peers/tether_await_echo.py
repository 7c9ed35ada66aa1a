"""tether's echo server written the coroutine way: ``async for message in ws:
await ws.send(message)``, a task per connection (``tether echo`` uses a
message handler instead). Compression off unless ``--compression``."""

from __future__ import annotations

import asyncio
from typing import Any

from _common import parse, set_loop

import tether
from tether.allocator import tune_server


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


async def main(host: str, port: int, compression: bool) -> None:
    tune_server()  # as the server commands do
    server = await tether.serve(
        echo,
        host,
        port,
        compression="deflate" if compression else None,
        max_size=16 * 1024 * 1024,
        max_fragments=None,
    )
    await server.wait_closed()


args = parse(__doc__ or "")
set_loop(args.loop)
asyncio.run(main(args.host, args.port, args.compression))
