"""A chat room: everyone on the page at ``/`` sees everyone's messages.

Run it in one process::

    tether serve tether.examples.chat:app --port 8000

or in several, sharing the room through Redis::

    tether serve tether.examples.chat:app --port 8000 --workers 2 --redis redis://127.0.0.1:6379/0

then open http://127.0.0.1:8000/ in two browser tabs. Each tab shows which
worker its WebSocket landed on; messages reach every tab whatever its worker,
because each message is published on the process-wide hub
(:func:`tether.hub.default_hub`), which ``--redis`` backs with Redis.

The WebSocket is at ``/ws?room=NAME&name=WHO``. It sends JSON objects:
``{"type": "welcome", "worker": ..., "pid": ..., "room": ...}`` once, then
``{"type": "join" | "leave", "name": ...}`` and
``{"type": "message", "name": ..., "text": ..., "worker": ...}``. It takes
one chat line per text message: plain text, or ``{"name": ..., "text": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from tether.aio.connection import Connection
from tether.aio.server import Upgrade
from tether.hub import Hub, default_hub
from tether.protocol.handshake import Request, Response
from tether.responses import html
from tether.routing import Routes

__all__ = ["ChatApp", "app"]

PAGE = Path(__file__).resolve().parent / "static" / "chat.html"
MAX_LINE = 2000


class ChatApp:
    """The chat app: ``/`` is the page, ``/ws`` the room's WebSocket, routed
    by :class:`~tether.routing.Routes` (other paths: 404, other methods: 405).

    ``hub``: the hub to publish on (default: :func:`~tether.hub.default_hub`,
    looked up at each connection, so ``tether serve --redis`` takes effect).
    """

    def __init__(self, hub: Hub | None = None) -> None:
        self.hub = hub
        self._page: str | None = None
        self.routes = Routes()
        self.routes.get("/", self.page)
        self.routes.get("/ws", lambda request: Upgrade(self.session))

    def __tether_dispatch__(
        self, connection: Connection, request: Request
    ) -> Response | Upgrade | Awaitable[Response | Upgrade]:
        return self.routes.__tether_dispatch__(connection, request)

    def page(self, request: Request) -> Response:
        """The chat page (read once)."""
        if self._page is None:
            self._page = PAGE.read_text(encoding="utf-8")
        return html(self._page, headers={"Cache-Control": "no-store"})

    async def session(self, ws: Connection) -> None:
        """One person in a room: subscribe, announce, relay their lines."""
        assert ws.request is not None
        query = ws.request.query
        room = (query.get("room") or ["lobby"])[0][:64] or "lobby"
        name = (query.get("name") or ["someone"])[0].strip()[:32] or "someone"
        worker = os.environ.get("TETHER_WORKER_ID", "1")
        hub = self.hub or default_hub()
        topic = f"chat:{room}"
        hub.subscribe(ws, topic)
        try:
            # With Redis, wait (a little) until the room's channel is
            # subscribed, so this person sees what others say from now on.
            await asyncio.wait_for(hub.synced(), 5.0)
        except asyncio.TimeoutError:
            pass
        welcome = {"type": "welcome", "worker": worker, "pid": os.getpid(), "room": room}
        await ws.send(json.dumps(welcome))
        await hub.publish(topic, _event("join", name=name, worker=worker))
        try:
            async for message in ws:
                if not isinstance(message, str):
                    continue
                who, text = _parse_line(message, name)
                if text:
                    await hub.publish(topic, _event("message", name=who, text=text, worker=worker))
        finally:
            hub.unsubscribe(ws, topic)
            await hub.publish(topic, _event("leave", name=name, worker=worker))


def _parse_line(message: str, name: str) -> tuple[str, str]:
    """A chat line: plain text, or ``{"name": ..., "text": ...}`` (the page
    sends that, so a change of name takes effect at once)."""
    if message.startswith("{"):
        try:
            data = json.loads(message)
        except ValueError:
            data = None
        if isinstance(data, dict):
            who = str(data.get("name") or name).strip()[:32] or name
            return who, str(data.get("text") or "").strip()[:MAX_LINE]
    return name, message.strip()[:MAX_LINE]


def _event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


#: The app for ``tether serve tether.examples.chat:app``.
app = ChatApp()
