"""Strict failure when the application lags: a message queued by an earlier read
is answered before the close frame of a peer error found by a later read
(Autobahn 4.2.5 when the client is slow to reach its first recv())."""

from __future__ import annotations

import asyncio
import contextlib

from conftest import open_connection
from tether.protocol.frames import build_frame


async def test_reply_to_an_earlier_read_goes_before_the_close_frame() -> None:
    ws, transport = open_connection()
    ws.data_received(build_frame(0x81, b"Hello, world!", b"abcd"))  # nobody in recv() yet
    ws.data_received(build_frame(0x8F, b"Hello, world!", b"abcd"))  # reserved opcode 15
    assert transport.written == []  # the close frame waits for the app
    message = await asyncio.wait_for(ws.recv(), 1)
    assert message == "Hello, world!"
    await asyncio.wait_for(ws.send(message), 1)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.1)  # nothing left: the failure goes out
    assert transport.written[0] == build_frame(0x81, b"Hello, world!")
    assert transport.written[1][:4] == b"\x88\x14\x03\xea"  # close 1002 after the reply
    assert transport.written[2] == b"<eof>"
