"""What an awaited round trip costs, in one process against an echo server.

``python bench/await_cost.py --port P [--rounds N]`` alternates slices of
SLICE sequential 16 B round trips on one tether connection, three ways:
``await ws.send()`` + ``await ws.recv()`` (Operations when the extension is
built), the Python coroutines they stand for (``_py_send`` / ``_py_recv``),
and a message handler with ``send_nowait`` (callbacks). It prints the median
CPU time per round trip of each, and the median per-round ratio of the
first two. Start the echo server first (wsecho, see bench/run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tether

MSG = b"0123456789abcdef"
SLICE = 2000
WARM = 3  # rounds left out of the medians


async def measure(port: int, rounds: int) -> dict[str, float]:
    ws = await tether.connect(f"ws://127.0.0.1:{port}/", compression=None)
    loop = asyncio.get_running_loop()
    left = [0]
    done: list[asyncio.Future[None]] = [loop.create_future()]

    def on_message(message: Any) -> None:
        left[0] -= 1
        if left[0]:
            ws.send_nowait(MSG)
        else:
            done[0].set_result(None)

    async def operations() -> None:
        for _ in range(SLICE):
            await ws.send(MSG)
            await ws.recv()

    async def coroutines() -> None:
        for _ in range(SLICE):
            await ws._py_send(MSG)
            await ws._py_recv()

    async def callbacks() -> None:
        left[0], done[0] = SLICE, loop.create_future()
        ws.set_message_handler(on_message)
        ws.send_nowait(MSG)
        await done[0]
        ws.set_message_handler(None)

    ways: dict[str, Callable[[], Awaitable[None]]] = {
        "operations": operations,
        "coroutines": coroutines,
        "callbacks": callbacks,
    }
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    for round_ in range(rounds + WARM):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.process_time()
            await ways[name]()
            if round_ >= WARM:
                cpu[name].append((time.process_time() - start) / SLICE * 1e6)
    await ws.close()
    out = {f"{name}_cpu_us": round(statistics.median(values), 2) for name, values in cpu.items()}
    pairs = zip(cpu["operations"], cpu["coroutines"], strict=True)
    out["operations_x_coroutines"] = round(statistics.median(a / b for a, b in pairs), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.port, args.rounds))))


if __name__ == "__main__":
    main()
