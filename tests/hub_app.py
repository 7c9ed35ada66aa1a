"""The app the multi-process hub tests serve: ``tether serve hub_app:app``.

Each connection first gets ``{"hello": worker, "pid": pid}``. Then it takes
JSON commands and answers each with ``{"reply": op, ...}``:

- ``{"op": "sub", "topic": T}``: subscribe; the reply comes once the
  backplane relays T to this process (``hub.synced()``).
- ``{"op": "pub", "topic": T, "data": D}``: publish D (text).
- ``{"op": "blast", "topic": T, "count": N, "size": S}``: publish N binary
  messages of S bytes (an 8-byte sequence number, then filler).
- ``{"op": "stats"}``: the hub's statistics.

A connection to ``/sub/T`` is subscribed to T at once and sends nothing (the
slow consumer of the memory test). The environment variable ``HUB_POLICY``
(``drop`` or ``close``) and ``HUB_MAX_BUFFER`` configure the default hub.
"""

from __future__ import annotations

import asyncio
import json
import os

from tether.aio.connection import Connection
from tether.hub import Hub, default_hub, set_default_hub

if os.environ.get("HUB_POLICY"):
    set_default_hub(
        Hub(
            max_buffer=int(os.environ.get("HUB_MAX_BUFFER", str(1024 * 1024))),
            slow_consumer=os.environ["HUB_POLICY"],  # type: ignore[arg-type]
        )
    )

WORKER = os.environ.get("TETHER_WORKER_ID", "0")


async def app(ws: Connection) -> None:
    hub = default_hub()
    assert ws.request is not None
    path = ws.request.url_path
    if path.startswith("/sub/"):
        hub.subscribe(ws, path[5:])
        await ws.wait_closed()
        return
    await ws.send(json.dumps({"hello": WORKER, "pid": os.getpid()}))
    async for raw in ws:
        command = json.loads(raw)
        op = command["op"]
        if op == "sub":
            hub.subscribe(ws, command["topic"])
            await asyncio.wait_for(hub.synced(), 10)
            await ws.send(json.dumps({"reply": "sub"}))
        elif op == "pub":
            await hub.publish(command["topic"], command["data"])
            await ws.send(json.dumps({"reply": "pub"}))
        elif op == "blast":
            filler = b"x" * max(0, command["size"] - 8)
            for seq in range(command["count"]):
                await hub.publish(command["topic"], seq.to_bytes(8, "big") + filler)
            await ws.send(json.dumps({"reply": "blast", "count": command["count"]}))
        elif op == "stats":
            await ws.send(json.dumps({"reply": "stats", **hub.statistics().as_dict()}))
