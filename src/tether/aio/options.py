"""The settings of a connection, shared by every connection of a server.

One frozen :class:`Options` object is built per :func:`~tether.serve` or
:func:`~tether.connect` call and shared by all its connections, so a setting
costs no memory per connection. Each field's default comes from
:mod:`tether.limits`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tether import limits
from tether.protocol.deflate import DeflateOptions

__all__ = ["Options", "make_options"]


@dataclass(frozen=True, slots=True)
class Options:
    """Every knob of a WebSocket connection. Build it with :func:`make_options`."""

    #: Largest incoming message in bytes, after decompression; None: no limit.
    max_size: int | None = limits.MAX_SIZE
    #: Most frames in one incoming message; None: no limit.
    max_fragments: int | None = limits.MAX_FRAGMENTS
    #: Messages buffered for recv() before reading pauses; None: no limit.
    max_queue: int | None = limits.MAX_QUEUE
    #: Bytes buffered for writing before send() waits.
    write_limit: int = limits.WRITE_LIMIT
    open_timeout: float | None = limits.OPEN_TIMEOUT
    close_timeout: float | None = limits.CLOSE_TIMEOUT
    ping_interval: float | None = limits.PING_INTERVAL
    ping_timeout: float | None = limits.PING_TIMEOUT
    #: permessage-deflate settings, or None to neither offer nor accept it.
    compression: DeflateOptions | None = field(default_factory=DeflateOptions)
    subprotocols: Sequence[str] | None = None
    #: Answer pings automatically (RFC 6455 5.5.2); turn off only to answer them yourself.
    auto_pong: bool = True
    #: Emit frames of fragmented messages one by one instead of whole messages.
    fragments: bool = False
    #: Deliver Ping/Pong events to recv() (for faces that expose control frames).
    control_frames: bool = False
    max_line: int = limits.MAX_LINE
    max_headers: int = limits.MAX_HEADERS
    max_request: int = limits.MAX_REQUEST
    max_body: int = limits.MAX_BODY
    logger: logging.Logger | logging.LoggerAdapter[Any] = field(
        default_factory=lambda: logging.getLogger("tether")
    )

    def replace(self, **changes: Any) -> Options:
        """A copy with some fields changed (validated like :func:`make_options`)."""
        return make_options(self, **changes)


_FIELDS = {f.name for f in dataclasses.fields(Options)}


def make_options(base: Options | None = None, **kwargs: Any) -> Options:
    """Build :class:`Options` from keyword arguments, with clear errors.

    ``compression`` accepts ``"deflate"`` (the default settings), ``None`` or
    ``False`` (off), ``True``, or a :class:`DeflateOptions`.
    """
    unknown = set(kwargs) - _FIELDS
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    if "compression" in kwargs:
        value = kwargs["compression"]
        if value in ("deflate", True):
            kwargs["compression"] = DeflateOptions()
        elif value in (None, False):
            kwargs["compression"] = None
        elif not isinstance(value, DeflateOptions):
            raise TypeError(f"compression must be 'deflate', None or DeflateOptions, not {value!r}")
    for name in ("max_size", "max_fragments", "max_queue"):
        value = kwargs.get(name)
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive or None, not {value!r}")
    for name in ("open_timeout", "close_timeout", "ping_interval", "ping_timeout"):
        value = kwargs.get(name)
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0 or None, not {value!r}")
    if isinstance(kwargs.get("subprotocols"), str):
        raise TypeError("subprotocols must be a sequence of strings, not a string")
    if base is None:
        return Options(**kwargs)
    return dataclasses.replace(base, **kwargs)
