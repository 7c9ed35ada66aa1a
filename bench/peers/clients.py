"""Client benchmarks against an echo server (wsecho): ``clients.py LIB MODE --port P``.

LIB: tether (await send/recv), tether-cb (message handler + send_nowait),
websockets, aiohttp, picows (its callback listener). MODE: ``seq`` (send 16 B,
wait for its echo, repeat) or ``pipe`` (send a burst of BURST messages, then
read the BURST echoes, repeat). Prints one JSON line: ``{"msgs_per_s": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

MSG = b"0123456789abcdef"
BURST = 1000


class Clock:
    """Counts messages between the end of the warm-up and the deadline."""

    def __init__(self, warmup: float, seconds: float) -> None:
        now = time.perf_counter()
        self.start = now + warmup
        self.end = self.start + seconds
        self.count = 0
        self.counting = False

    def tick(self, n: int = 1) -> bool:
        """Record n echoes; False when time is up."""
        now = time.perf_counter()
        if now >= self.start:
            if not self.counting:
                self.counting, self.count, self.start = True, 0, now
            else:
                self.count += n
        return now < self.end

    def rate(self) -> float:
        return self.count / max(1e-9, time.perf_counter() - self.start)


async def run_tether(uri: str, mode: str, clock: Clock) -> None:
    import tether

    async with tether.connect(uri, compression=None) as ws:
        if mode == "seq":
            while True:
                await ws.send(MSG)
                await ws.recv()
                if not clock.tick():
                    return
        while True:
            for _ in range(BURST):
                await ws.send(MSG)
            for _ in range(BURST):
                await ws.recv()
            if not clock.tick(BURST):
                return


async def run_tether_cb(uri: str, mode: str, clock: Clock) -> None:
    import tether

    async with tether.connect(uri, compression=None) as ws:
        done = asyncio.get_running_loop().create_future()
        send = ws.send_nowait
        if mode == "seq":

            def on_message(message: Any) -> None:
                if clock.tick():
                    send(MSG)
                elif not done.done():
                    done.set_result(None)

            ws.set_message_handler(on_message)
            send(MSG)
        else:
            left = [BURST]

            def on_burst(message: Any) -> None:
                left[0] -= 1
                if left[0]:
                    return
                left[0] = BURST
                if clock.tick(BURST):
                    for _ in range(BURST):
                        send(MSG)
                elif not done.done():
                    done.set_result(None)

            ws.set_message_handler(on_burst)
            for _ in range(BURST):
                send(MSG)
        await done


async def run_websockets(uri: str, mode: str, clock: Clock) -> None:
    from websockets.asyncio.client import connect

    async with connect(uri, compression=None) as ws:
        if mode == "seq":
            while True:
                await ws.send(MSG)
                await ws.recv()
                if not clock.tick():
                    return
        while True:
            for _ in range(BURST):
                await ws.send(MSG)
            for _ in range(BURST):
                await ws.recv()
            if not clock.tick(BURST):
                return


async def run_aiohttp(uri: str, mode: str, clock: Clock) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(uri, compress=0, autoping=True) as ws,
    ):
        if mode == "seq":
            while True:
                await ws.send_bytes(MSG)
                await ws.receive()
                if not clock.tick():
                    return
        while True:
            for _ in range(BURST):
                await ws.send_bytes(MSG)
            for _ in range(BURST):
                await ws.receive()
            if not clock.tick(BURST):
                return


async def run_picows(uri: str, mode: str, clock: Clock) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    done = asyncio.get_running_loop().create_future()

    class Client(WSListener):  # type: ignore[misc]
        left = BURST

        def on_ws_connected(self, transport: WSTransport) -> None:
            for _ in range(1 if mode == "seq" else BURST):
                transport.send(WSMsgType.BINARY, MSG)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if mode == "seq":
                if clock.tick():
                    transport.send(WSMsgType.BINARY, MSG)
                    return
            else:
                self.left -= 1
                if self.left:
                    return
                self.left = BURST
                if clock.tick(BURST):
                    for _ in range(BURST):
                        transport.send(WSMsgType.BINARY, MSG)
                    return
            if not done.done():
                done.set_result(None)

    transport, _ = await ws_connect(Client, uri)
    await done
    transport.send_close()
    transport.disconnect()


RUNNERS: dict[str, Callable[[str, str, Clock], Any]] = {
    "tether": run_tether,
    "tether-cb": run_tether_cb,
    "websockets": run_websockets,
    "aiohttp": run_aiohttp,
    "picows": run_picows,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lib", choices=sorted(RUNNERS))
    parser.add_argument("mode", choices=["seq", "pipe"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    clock = Clock(args.warmup, args.seconds)
    uri = f"ws://127.0.0.1:{args.port}/"
    asyncio.run(
        asyncio.wait_for(RUNNERS[args.lib](uri, args.mode, clock), args.seconds + args.warmup + 30)
    )
    print(json.dumps({"msgs_per_s": round(clock.rate(), 1)}))


if __name__ == "__main__":
    main()
