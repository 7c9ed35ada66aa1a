"""The in-memory backplane: the default, nothing to install.

A :class:`MemoryBackplane` connects the hubs of one process that share it.
Every :class:`~tether.hub.hub.Hub` made without a backplane gets a private
one, so its publishes reach its own subscribers only::

    hub = Hub()                                   # alone

    bus = MemoryBackplane()                       # two hubs, one bus: a
    a, b = Hub(bus), Hub(bus)                     # publish on a reaches b's
                                                  # subscribers too

What to call next: :class:`~tether.hub.redis.RedisBackplane` to reach other
processes.
"""

from __future__ import annotations

from typing import Any

from tether.hub.hub import Backplane, Deliver

__all__ = ["MemoryBackplane"]


class MemoryBackplane(Backplane):
    """Relays each publish, synchronously, to the other hubs attached to it
    that have subscribers to the topic. Never drops, never raises."""

    def __init__(self) -> None:
        self._hubs: dict[Deliver, set[str]] = {}
        self._relayed = 0

    def attach(self, deliver: Deliver) -> None:
        self._hubs.setdefault(deliver, set())

    def detach(self, deliver: Deliver) -> None:
        self._hubs.pop(deliver, None)

    def topic_added(self, deliver: Deliver, topic: str) -> None:
        self._hubs.setdefault(deliver, set()).add(topic)

    def topic_removed(self, deliver: Deliver, topic: str) -> None:
        topics = self._hubs.get(deliver)
        if topics is not None:
            topics.discard(topic)

    async def relay(self, deliver: Deliver, topic: str, text: bool, payload: bytes) -> None:
        for other, topics in list(self._hubs.items()):
            if other != deliver and topic in topics:
                self._relayed += 1
                other(topic, text, payload)

    def statistics(self) -> dict[str, Any]:
        return {"kind": "memory", "hubs": len(self._hubs), "relayed": self._relayed}
