"""Which transports the asyncio layer opens: compiled ones when it can.

``fastnet`` is the ``aiofastnet`` module (compiled asyncio transports, the
``tether[fast]`` extra, by picows' author) when it is installed and the
compiled accelerator is on, else ``None``. Most of a small message's cost is
the transport, not the WebSocket code: with it, the per-message path is
compiled end to end. ``TETHER_NO_FASTNET=1`` turns it off alone;
``TETHER_NO_SPEEDUPS=1`` turns it off with the rest.

It is used only on asyncio's own selector loop and without TLS: uvloop's
transports are compiled already (aiofastnet on uvloop measured 3x slower than
uvloop alone), and TLS stays on asyncio's transports.

What to call next: nothing; :func:`create_connection` and
:func:`create_server` are what the client and the server call.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tether.protocol import accel

__all__ = ["create_connection", "create_server", "fastnet"]

fastnet: Any = None
if accel.SPEEDUPS and not os.environ.get("TETHER_NO_FASTNET"):
    try:
        import aiofastnet as fastnet
    except ImportError:  # the optional extra is not installed
        fastnet = None


def _fastnet_for(loop: asyncio.AbstractEventLoop, kwargs: dict[str, Any]) -> Any:
    if (
        fastnet is not None
        and kwargs.get("ssl") is None
        and isinstance(loop, asyncio.SelectorEventLoop)
    ):
        return fastnet
    return None


def create_connection(loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Any:
    """``loop.create_connection``, through aiofastnet when it applies."""
    compiled = _fastnet_for(loop, kwargs)
    if compiled is not None:
        return compiled.create_connection(loop, *args, **kwargs)
    if not isinstance(loop, asyncio.BaseEventLoop):
        # uvloop's create_connection has no happy_eyeballs_delay: it tries
        # the addresses one after the other.
        kwargs.pop("happy_eyeballs_delay", None)
    return loop.create_connection(*args, **kwargs)


def create_server(loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Any:
    """``loop.create_server``, through aiofastnet when it applies."""
    compiled = _fastnet_for(loop, kwargs)
    if compiled is not None:
        return compiled.create_server(loop, *args, **kwargs)
    return loop.create_server(*args, **kwargs)
