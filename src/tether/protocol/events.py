"""What the sans-I/O core emits from :meth:`Connection.events_received`.

A complete message is the most common event and arrives as itself: a
``str`` for a text message, ``bytes`` for a binary one. Everything else is one
of the frozen dataclasses below, or a :class:`~tether.protocol.frames.Close`
when the peer's close frame arrives.

What to call next: ``match`` on the events, or test ``type(event) is str``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.protocol.frames import Close

__all__ = ["Close", "Event", "Fragment", "Ping", "Pong"]


@dataclass(frozen=True, slots=True)
class Fragment:
    """One data frame of a fragmented message (only when the core was made
    with ``fragments=True``).

    ``text`` tells whether the message is a text message; ``data`` is then a
    ``str`` (the UTF-8 decoded so far, which may be empty when a character
    spans two frames), otherwise ``bytes``. ``first`` marks the frame that
    began the message, ``fin`` the one that ends it.
    """

    data: str | bytes
    text: bool
    first: bool
    fin: bool


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping frame arrived (the core has already queued the pong, unless it
    was made with ``auto_pong=False``)."""

    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong frame arrived (an answer to our ping, or unsolicited)."""

    data: bytes = b""


Event = str | bytes | Fragment | Ping | Pong | Close
