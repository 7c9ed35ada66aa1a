"""websockets' echo server for the benchmark (the asyncio implementation)."""

from __future__ import annotations

import asyncio

from _common import parse, set_loop
from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def main(host: str, port: int, compression: bool) -> None:
    async with serve(
        echo,
        host,
        port,
        compression="deflate" if compression else None,
        max_size=16 * 1024 * 1024,
    ) as server:
        await server.serve_forever()


args = parse(__doc__ or "")
set_loop(args.loop)
asyncio.run(main(args.host, args.port, args.compression))
