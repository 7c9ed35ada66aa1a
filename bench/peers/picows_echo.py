"""picows' echo server for the benchmark (frame by frame, as picows' own examples do)."""

from __future__ import annotations

import asyncio

from _common import parse, set_loop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server


class Echo(WSListener):  # type: ignore[misc]
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type != WSMsgType.PONG:
            transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)


async def main(host: str, port: int) -> None:
    server = await ws_create_server(
        lambda _request: Echo(), host, port, max_frame_size=16 * 1024 * 1024
    )
    async with server:
        await server.serve_forever()


args = parse(__doc__ or "")
set_loop(args.loop)
asyncio.run(main(args.host, args.port))
