"""Every limit and default of tether, in one place.

Each name here is a keyword argument of :func:`tether.connect` and
:func:`tether.serve` (lower-cased), and a field of the faces' config objects.
Change a default by passing the keyword; these constants document the values
you get when you pass nothing.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_TIMEOUT",
    "COMPRESSION",
    "HUB_MAX_BUFFER",
    "MAX_BODY",
    "MAX_FRAGMENTS",
    "MAX_HEADERS",
    "MAX_LINE",
    "MAX_QUEUE",
    "MAX_REQUEST",
    "MAX_SIZE",
    "OPEN_TIMEOUT",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "WRITE_LIMIT",
]

#: Largest incoming message (after decompression), in bytes. Over it: 1009.
MAX_SIZE = 1024 * 1024

#: Largest number of frames one incoming message may be split into. Over it: 1009.
MAX_FRAGMENTS = 65_536 + 1

#: Incoming messages buffered before the transport stops reading (backpressure).
MAX_QUEUE = 16

#: Bytes buffered for writing before ``send()`` waits for the peer to read.
WRITE_LIMIT = 64 * 1024

#: Seconds for DNS + TCP + TLS + the opening handshake.
OPEN_TIMEOUT = 10.0

#: Seconds to wait for the closing handshake (and the TCP close) to complete.
CLOSE_TIMEOUT = 10.0

#: Seconds between keepalive pings; ``None`` turns keepalive off.
PING_INTERVAL: float | None = 20.0

#: Seconds to wait for the pong of a keepalive ping before failing the connection.
PING_TIMEOUT: float | None = 20.0

#: Longest request line, status line or header line, in bytes.
#: Over it: 431 (414 for the request line).
MAX_LINE = 8192

#: Most header lines in a request or response. Over it: 431.
MAX_HEADERS = 128

#: Largest whole HTTP head (request line + headers), in bytes. Over it: 431.
MAX_REQUEST = 64 * 1024

#: Bytes a hub subscriber may have waiting in its write buffer before hub
#: traffic to it counts as a slow consumer (dropped, or the socket closed).
HUB_MAX_BUFFER = 1024 * 1024

#: Largest HTTP response body a client reads on a refused upgrade, in bytes.
MAX_BODY = 1024 * 1024

#: Whether permessage-deflate (RFC 7692) is offered/accepted by default.
#: Memory cost per connection at the default 15-bit windows and mem_level 8:
#: about 256 KiB for the deflater and 39 KiB for the inflater, each allocated
#: lazily on the first compressed message in its direction (see
#: :mod:`tether.protocol.deflate`); pass ``compression=None`` to turn it off.
COMPRESSION = "deflate"
