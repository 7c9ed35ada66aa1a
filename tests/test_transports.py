"""The transport choice: with speedups on, tether's compiled transports
(tether._transport) on asyncio's loop, else aiofastnet's (when installed);
asyncio's own in pure-Python mode; the same behaviour either way."""

from __future__ import annotations

import asyncio
import os

import pytest

import tether
from tether.aio import transports


def _expected_module() -> str:
    if transports.compiled is not None:
        return "tether"
    if os.environ.get("TETHER_NO_SPEEDUPS") or os.environ.get("TETHER_NO_FASTNET"):
        return "asyncio"
    return "aiofastnet" if transports.fastnet is not None else "asyncio"


async def test_transport_follows_the_speedups_switch() -> None:
    seen: list[str] = []

    async def handler(ws: tether.Connection) -> None:
        seen.append(type(ws.transport).__module__.split(".")[0])
        async for message in ws:
            await ws.send(message)

    async with tether.serve(handler, "127.0.0.1", 0, compression=None) as server:
        uri = f"ws://127.0.0.1:{server.port}/"
        async with tether.connect(uri, compression=None) as ws:
            await asyncio.wait_for(ws.send("hello"), 5)
            assert await asyncio.wait_for(ws.recv(), 5) == "hello"
            assert type(ws.transport).__module__.split(".")[0] == _expected_module()
            assert ws.local_address[0] == "127.0.0.1"
            assert ws.remote_address == ("127.0.0.1", server.port)
    assert seen == [_expected_module()]


@pytest.mark.parametrize("compression", ["deflate", None])
def test_engine_on_uvloop(compression: str | None) -> None:
    import uvloop

    async def main() -> tuple[int | None, float]:
        async def handler(ws: tether.Connection) -> None:
            async for message in ws:
                if message == "bye":
                    await ws.close(4000, "done")
                else:
                    await ws.send(message)

        async with tether.serve(handler, "127.0.0.1", 0, compression=compression) as server:
            uri = f"ws://127.0.0.1:{server.port}/"
            async with tether.connect(uri, compression=compression) as ws:
                for message in ["text " * 100, bytes(200_000), ""]:
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), 5) == message
                latency = await asyncio.wait_for(ws.ping(), 5)
                await ws.send("bye")
                with pytest.raises(tether.ConnectionClosedError):
                    await asyncio.wait_for(ws.recv(), 5)
                return ws.close_code, latency

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        code, latency = runner.run(main())
    assert code == 4000 and latency >= 0


def test_fastnet_is_off_in_pure_mode() -> None:
    if os.environ.get("TETHER_NO_SPEEDUPS") or os.environ.get("TETHER_NO_FASTNET"):
        assert transports.fastnet is None
        return
    try:
        import aiofastnet
    except ImportError:
        assert transports.fastnet is None
    else:
        assert transports.fastnet is aiofastnet


def test_uvloop_gets_the_compiled_transports() -> None:
    import uvloop  # in the [test] extra: tether must work on uvloop

    async def main() -> str:
        async def handler(ws: tether.Connection) -> None:
            async for message in ws:
                await ws.send(message)

        async with tether.serve(handler, "127.0.0.1", 0, compression=None) as server:
            uri = f"ws://127.0.0.1:{server.port}/"
            async with tether.connect(uri, compression=None) as ws:
                await asyncio.wait_for(ws.send(b"x"), 5)
                assert await asyncio.wait_for(ws.recv(), 5) == b"x"
                return type(ws.transport).__module__.split(".")[0]

    expected = "tether" if transports.compiled is not None else "uvloop"
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == expected
