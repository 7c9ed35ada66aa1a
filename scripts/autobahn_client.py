#!/usr/bin/env python3
"""The tether client under test by the Autobahn|Testsuite's fuzzingserver.

Usage: python scripts/autobahn_client.py URL AGENT   (run by scripts/autobahn.sh through
../shared/tools/autobahn/fuzz-client.sh, which replaces {url} and {agent})

It follows the suite's protocol: read the number of cases from URL/getCaseCount, run each case
(URL/runCase?case=N&agent=AGENT) echoing every message until the server closes, then ask for the
reports (URL/updateReports?agent=AGENT). Limits admit the 9.x cases: 16 MiB messages (the default
of 65,536 fragments already does). Keepalive is off so that no ping of ours shows up in a case's
expected frames. Compression (permessage-deflate) is on, as by default, for the 12.x/13.x cases.

It prints one line per case (to the log that fuzz-client.sh keeps) and exits 1 when getCaseCount
failed or a case raised anything but ConnectionClosed (the suite's report says what went wrong).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from urllib.parse import quote

import tether

MAX_SIZE = 16 * 1024 * 1024
CASE_TIMEOUT = 120.0  # seconds; the slowest case (9.x, 16 MiB messages) takes a few


async def get_case_count(url: str) -> int:
    async with tether.connect(f"{url}/getCaseCount") as ws:
        message = await ws.recv()
    return int(json.loads(message))


async def run_case(url: str, case: int, agent: str) -> None:
    uri = f"{url}/runCase?case={case}&agent={quote(agent)}"
    try:
        async with tether.connect(uri, max_size=MAX_SIZE, ping_interval=None) as ws:
            async for message in ws:
                await ws.send(message)
    except tether.ConnectionClosed:
        # The server closing with an error code is part of many cases: the report judges it.
        pass


async def update_reports(url: str, agent: str) -> None:
    try:
        async with tether.connect(f"{url}/updateReports?agent={quote(agent)}") as ws:
            async for _ in ws:
                pass
    except tether.ConnectionClosed:
        pass


def flavour() -> str:
    try:
        from tether.protocol import accel
    except ImportError:
        return "pure Python" if os.environ.get("TETHER_NO_SPEEDUPS") else "speedups unknown"
    return "speedups" if accel.SPEEDUPS else "pure Python"


async def main(url: str, agent: str) -> int:
    print(f"tether {getattr(tether, '__version__', '?')} ({flavour()}) against {url} as {agent}")
    try:
        count = await get_case_count(url)
    except Exception:
        print("getCaseCount failed:", file=sys.stderr)
        traceback.print_exc()
        return 1
    print(f"{count} cases", flush=True)
    errors = 0
    for case in range(1, count + 1):
        started = time.monotonic()
        try:
            await asyncio.wait_for(run_case(url, case, agent), CASE_TIMEOUT)
        except asyncio.TimeoutError:
            errors += 1
            outcome = f"TIMEOUT after {CASE_TIMEOUT:.0f} s"
        except Exception as exc:
            errors += 1
            outcome = f"ERROR {type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stdout)
        else:
            outcome = "done"
        print(f"case {case}/{count}: {outcome} ({time.monotonic() - started:.2f} s)", flush=True)
    await update_reports(url, agent)
    print(f"reports updated; {errors} case(s) raised", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
