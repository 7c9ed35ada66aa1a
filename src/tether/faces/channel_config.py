""":class:`WebSocketConfig`: every setting of the channel face, mapped onto
:class:`tether.Options`.

Two kinds of fields:

- the face's own (what the channel delivers): ``forward_close_frames``,
  ``forward_ping_frames``, ``forward_pong_frames``, ``fragments``;
- the engine's (limits, timeouts, keepalive, compression, subprotocols): each
  one is a field of :class:`tether.Options` under the same name, except
  ``handshake_timeout``, which is ``open_timeout``. They default to
  :data:`INHERIT`: the value of the server (``tether.serve(...,
  max_size=...)``) or of the client call, or else the library default from
  :mod:`tether.limits`.

::

    config = WebSocketConfig(subprotocols=["chat"], max_size=64 * 1024,
                             ping_interval=10, forward_close_frames=True)
    app = Handler.web_socket(handle).with_config(config)

On a server, the settings read while the request head is parsed
(``handshake_timeout``, ``max_line``, ``max_headers``, ``max_request``) are
the server's: give them to :meth:`HttpServer.serve
<tether.faces.server_runner.HttpServer.serve>` (``config=``) or to
:func:`tether.serve`. Every other field also works per app (per route).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from tether.aio.options import Options, make_options
from tether.protocol.deflate import DeflateOptions

__all__ = ["INHERIT", "Inherit", "WebSocketConfig"]


class Inherit(enum.Enum):
    """The type of :data:`INHERIT`."""

    INHERIT = "INHERIT"

    def __repr__(self) -> str:
        return "INHERIT"


#: "Not set here": the engine setting comes from the server or the client call.
INHERIT: Final = Inherit.INHERIT

# WebSocketConfig field -> Options field, for the engine's settings.
_ENGINE_FIELDS: Final = {
    "subprotocols": "subprotocols",
    "handshake_timeout": "open_timeout",
    "close_timeout": "close_timeout",
    "max_size": "max_size",
    "max_fragments": "max_fragments",
    "max_queue": "max_queue",
    "write_limit": "write_limit",
    "ping_interval": "ping_interval",
    "ping_timeout": "ping_timeout",
    "compression": "compression",
    "auto_pong": "auto_pong",
    "max_line": "max_line",
    "max_headers": "max_headers",
    "max_request": "max_request",
    "max_body": "max_body",
    "logger": "logger",
}


@dataclass(frozen=True, kw_only=True)
class WebSocketConfig:
    """The settings of a :class:`~tether.faces.channel.WebSocketApp`.

    Face settings:

    ``forward_close_frames``
        Deliver the peer's close frame as ``Read(Close(status, reason))``
        before ``Unregistered``. Either way the engine answers it (RFC 6455
        section 5.5.1 requires the echo), so the handler never has to.
    ``forward_ping_frames``
        Deliver pings as ``Read(Ping(data))``. The engine still answers them
        unless ``auto_pong=False`` (then send ``Pong`` yourself).
    ``forward_pong_frames``
        Deliver pongs as ``Read(Pong(data))`` (keepalive pongs included);
        by default they are dropped after the engine used them for keepalive.
    ``fragments``
        Deliver fragmented messages frame by frame: ``Text(..., is_final=False)``
        or ``Binary(..., is_final=False)``, then ``Continuation`` frames.

    Engine settings (default :data:`INHERIT`): ``subprotocols``,
    ``handshake_timeout`` (``open_timeout``), ``close_timeout``,
    ``max_size``, ``max_fragments``, ``max_queue``, ``write_limit``,
    ``ping_interval``, ``ping_timeout`` (keepalive), ``compression``
    (``"deflate"``, ``None`` or a :class:`~tether.DeflateOptions`),
    ``auto_pong``, ``max_line``, ``max_headers``, ``max_request``,
    ``max_body``, ``logger``. See :class:`tether.Options` for each one.

    What to call next: :meth:`to_options`, or give the config to
    ``WebSocketApp.with_config`` / ``HttpServer.serve(config=...)``.
    """

    default: ClassVar[WebSocketConfig]

    forward_close_frames: bool = False
    forward_ping_frames: bool = False
    forward_pong_frames: bool = False
    fragments: bool = False

    subprotocols: Sequence[str] | Inherit | None = INHERIT
    handshake_timeout: float | Inherit | None = INHERIT
    close_timeout: float | Inherit | None = INHERIT
    max_size: int | Inherit | None = INHERIT
    max_fragments: int | Inherit | None = INHERIT
    max_queue: int | Inherit | None = INHERIT
    write_limit: int | Inherit = INHERIT
    ping_interval: float | Inherit | None = INHERIT
    ping_timeout: float | Inherit | None = INHERIT
    compression: DeflateOptions | str | bool | Inherit | None = INHERIT
    auto_pong: bool | Inherit = INHERIT
    max_line: int | Inherit = INHERIT
    max_headers: int | Inherit = INHERIT
    max_request: int | Inherit = INHERIT
    max_body: int | Inherit = INHERIT
    logger: logging.Logger | logging.LoggerAdapter[Any] | Inherit = INHERIT

    def __post_init__(self) -> None:
        # Validate now, with make_options' clear errors, rather than at the
        # first connection.
        make_options(**self.engine_changes())

    @property
    def control_frames(self) -> bool:
        """Whether the engine must deliver control frames to the channel."""
        return self.forward_close_frames or self.forward_ping_frames or self.forward_pong_frames

    def engine_changes(self) -> dict[str, Any]:
        """The :class:`~tether.Options` fields this config sets (by Options name)."""
        changes: dict[str, Any] = {
            option: getattr(self, name)
            for name, option in _ENGINE_FIELDS.items()
            if getattr(self, name) is not INHERIT
        }
        if self.control_frames:
            changes["control_frames"] = True
        if self.fragments:
            changes["fragments"] = True
        return changes

    def to_options(self, base: Options | None = None) -> Options:
        """``base`` (or the defaults) with this config's settings applied."""
        changes = self.engine_changes()
        if base is not None and not changes:
            return base
        return make_options(base, **changes)

    def replace(self, **changes: Any) -> WebSocketConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def merged_over(self, base: WebSocketConfig) -> WebSocketConfig:
        """This config, with the engine fields it leaves to :data:`INHERIT`
        taken from ``base`` (the face fields are this config's)."""
        inherited = {
            name: getattr(base, name)
            for name in _ENGINE_FIELDS
            if getattr(self, name) is INHERIT and getattr(base, name) is not INHERIT
        }
        return self.replace(**inherited) if inherited else self


WebSocketConfig.default = WebSocketConfig()
