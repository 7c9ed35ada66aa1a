"""Publish/subscribe fan-out for WebSocket connections.

::

    from tether.hub import default_hub

    async def chat(ws):
        hub = default_hub()             # in memory, or Redis with TETHER_REDIS_URL
        hub.subscribe(ws, "room")
        async for message in ws:
            await hub.publish("room", message)

:class:`Hub` (topics, fan-out, slow consumers) lives in :mod:`tether.hub.hub`;
the backplanes in :mod:`tether.hub.memory` (default) and
:mod:`tether.hub.redis` (``pip install 'tether[redis]'``; imported on first
use of ``tether.hub.RedisBackplane``).

What to call next: :class:`Hub`, :func:`default_hub`,
:class:`~tether.hub.redis.RedisBackplane`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.hub.hub import (
    MAX_BUFFER,
    REDIS_URL_ENV,
    Backplane,
    BackplaneUnavailable,
    Hub,
    HubStatistics,
    default_hub,
    set_default_hub,
)
from tether.hub.memory import MemoryBackplane

if TYPE_CHECKING:  # pragma: no cover
    from tether.hub.redis import RedisBackplane

__all__ = [
    "MAX_BUFFER",
    "REDIS_URL_ENV",
    "Backplane",
    "BackplaneUnavailable",
    "Hub",
    "HubStatistics",
    "MemoryBackplane",
    "RedisBackplane",
    "default_hub",
    "set_default_hub",
]


def __getattr__(name: str) -> Any:
    # redis-py is an optional extra: import it only when asked for.
    if name == "RedisBackplane":
        from tether.hub.redis import RedisBackplane

        return RedisBackplane
    raise AttributeError(f"module 'tether.hub' has no attribute {name!r}")
