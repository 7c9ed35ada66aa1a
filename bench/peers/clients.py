"""Client benchmarks against an echo server (wsecho): ``clients.py LIB MODE --port P``.

LIB: tether (await send/recv), tether-cb (message handler + send_nowait),
websockets, aiohttp, picows (its callback listener). MODE: ``seq`` (send 16 B,
wait for its echo, repeat) or ``pipe`` (send a burst of BURST messages, then
read the BURST echoes, repeat). Prints one JSON line: ``{"msgs_per_s": ...}``.

LIB ``paired`` (``seq`` only) runs tether, tether-cb, tether-coro (the
Python coroutines that ``send()`` / ``recv()`` stand for when the extension is
built: what its Operations save), picows and picows awaited (a future per
echo) in one process and one loop, in alternating
slices of SLICE round trips, and prints the medians of the per-round
ratios. On a virtual machine the speed of a round trip drifts between levels
from second to second for every library; slices a fraction of a second apart
see the same level, so their ratio is steadier than that of whole runs. It
also reports each client's CPU time per round trip (``*_cpu_us``, medians of
the slices): what a library controls, whatever the machine's level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

MSG = b"0123456789abcdef"
BURST = 1000
SLICE = 2000


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


async def run_paired(uri: str, clock: Clock) -> dict[str, float]:
    """Alternate slices of SLICE sequential round trips: tether (await),
    tether-cb, tether-coro, picows and picows awaited, in a rotating order, until the
    clock runs out (and for at least three rounds past the warm-up)."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    import tether

    loop = asyncio.get_running_loop()
    # One tether connection serves both of its modes (a handler is set for
    # the callback slices only): a second one would share its poller, which
    # reads a lone socket with a system call fewer.
    ws = await tether.connect(uri, compression=None)
    left = [0, 0]  # round trips still to make: tether-cb, picows
    done: list[asyncio.Future[None]] = [loop.create_future(), loop.create_future()]

    def on_message(message: Any) -> None:
        left[0] -= 1
        if left[0]:
            ws.send_nowait(MSG)
        else:
            done[0].set_result(None)

    echo: list[asyncio.Future[bytes] | None] = [None]  # picows awaited: the echo's future

    class Client(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            waiter = echo[0]
            if waiter is not None:
                waiter.set_result(frame.get_payload_as_bytes())
                return
            left[1] -= 1
            if left[1]:
                transport.send(WSMsgType.BINARY, MSG)
            else:
                done[1].set_result(None)

    picows, _ = await ws_connect(Client, uri)

    async def slice_await() -> None:
        for _ in range(SLICE):
            await ws.send(MSG)
            await ws.recv()

    async def slice_coroutines() -> None:
        for _ in range(SLICE):
            await ws._py_send(MSG)
            await ws._py_recv()

    async def slice_callbacks() -> None:
        left[0], done[0] = SLICE, loop.create_future()
        ws.set_message_handler(on_message)
        ws.send_nowait(MSG)
        await done[0]
        ws.set_message_handler(None)

    async def slice_picows() -> None:
        left[1], done[1] = SLICE, loop.create_future()
        picows.send(WSMsgType.BINARY, MSG)
        await done[1]

    async def slice_picows_await() -> None:
        # picows has no awaitable receive: a future per message is the way
        # to await its echoes from a coroutine.
        for _ in range(SLICE):
            echo[0] = loop.create_future()
            picows.send(WSMsgType.BINARY, MSG)
            await echo[0]
        echo[0] = None

    slices = {
        "tether": slice_await,
        "tether-cb": slice_callbacks,
        "tether-coro": slice_coroutines,
        "picows": slice_picows,
        "picows-await": slice_picows_await,
    }
    rates: dict[str, list[float]] = {name: [] for name in slices}
    cpu_us: dict[str, list[float]] = {name: [] for name in slices}
    names = list(slices)
    rounds = 0
    warm = 3  # the first rounds warm up
    while clock.tick(0) or rounds < warm + 3:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            start, cpu_start = time.perf_counter(), time.process_time()
            await slices[name]()
            rates[name].append(SLICE / (time.perf_counter() - start))
            cpu_us[name].append((time.process_time() - cpu_start) / SLICE * 1e6)
        rounds += 1
    await ws.close()
    picows.send_close()
    picows.disconnect()
    out: dict[str, float] = {"rounds": rounds}
    for name, peer in (
        ("tether", "picows"),
        ("tether-cb", "picows"),
        ("tether", "picows-await"),
        ("tether", "tether-coro"),
    ):
        pairs = zip(rates[name][warm:], rates[peer][warm:], strict=True)
        out[f"{name}_x_{peer}"] = round(statistics.median(a / b for a, b in pairs), 3)
    for name, values in rates.items():
        out[f"{name}_msgs_per_s"] = round(statistics.median(values[warm:]), 1)
        out[f"{name}_cpu_us"] = round(statistics.median(cpu_us[name][warm:]), 2)
    return out


RUNNERS: dict[str, Callable[[str, str, Clock], Any]] = {
    "tether": run_tether,
    "tether-cb": run_tether_cb,
    "websockets": run_websockets,
    "aiohttp": run_aiohttp,
    "picows": run_picows,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lib", choices=[*sorted(RUNNERS), "paired"])
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
    if args.lib == "paired":
        if args.mode != "seq":
            parser.error("paired runs the seq mode only")
        print(json.dumps(asyncio.run(asyncio.wait_for(run_paired(uri, clock), args.seconds + 60))))
        return
    asyncio.run(
        asyncio.wait_for(RUNNERS[args.lib](uri, args.mode, clock), args.seconds + args.warmup + 30)
    )
    print(json.dumps({"msgs_per_s": round(clock.rate(), 1)}))


if __name__ == "__main__":
    main()
