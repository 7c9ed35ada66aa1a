"""aiohttp's echo server for the benchmark."""

from __future__ import annotations

import asyncio

from _common import parse, set_loop
from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=bool(COMPRESSION), max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def main(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await asyncio.Event().wait()


args = parse(__doc__ or "")
COMPRESSION = args.compression
set_loop(args.loop)
asyncio.run(main(args.host, args.port))
