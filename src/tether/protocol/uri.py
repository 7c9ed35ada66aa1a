"""WebSocket URIs (RFC 6455 section 3): ``ws://`` and ``wss://``.

:func:`parse_uri` turns a string into a :class:`WSURI`, or raises
:class:`~tether.exceptions.InvalidURI` saying what is wrong with it.

What to call next: give the :class:`WSURI` to
:class:`~tether.protocol.handshake.ClientHandshake`, and connect a socket to
``(uri.host, uri.port)``, with TLS when ``uri.secure``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from tether.exceptions import InvalidURI

__all__ = ["WSURI", "parse_uri"]

# Characters left as they are when the path and query are percent-encoded:
# the RFC 3986 "pchar" set plus "/" and "?" and "%" (so that an already
# encoded URI is not encoded twice).
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"

# Control characters are never part of a URI (RFC 3986 section 2); spaces
# in the path or query are percent-encoded, elsewhere they are an error.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")

# RFC 3986 section 3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ),
# which also covers IPv4 addresses.
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+")


@dataclass(frozen=True, slots=True)
class WSURI:
    """A parsed ``ws://`` or ``wss://`` URI.

    ``secure``: ``wss``. ``host``: the host name (lower case, IDNA-encoded) or
    the IP address (an IPv6 address without brackets). ``port``: the port,
    80 or 443 when the URI gives none. ``resource``: path and query, the
    "resource-name" of RFC 6455 section 3 (``"/"`` at least), percent-encoded.
    ``user_info``: ``(user, password)`` percent-decoded, for HTTP Basic
    authentication, or ``None``.
    """

    secure: bool
    host: str
    port: int
    resource: str = "/"
    user_info: tuple[str, str] | None = None

    @property
    def default_port(self) -> int:
        """443 for ``wss``, 80 for ``ws``."""
        return 443 if self.secure else 80

    @property
    def host_header(self) -> str:
        """The value of the ``Host`` header: brackets around an IPv6
        address, and the port when it is not the default one (RFC 6455
        section 4.1, item 4 of the handshake requirements)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == self.default_port:
            return host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        """The URI without its user information (safe to log)."""
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{self.host_header}{self.resource}"


def parse_uri(uri: str) -> WSURI:
    """Parse a WebSocket URI (RFC 6455 section 3).

    Raises :class:`~tether.exceptions.InvalidURI` when the scheme is not
    ``ws`` or ``wss``, the host is missing, the port is not a number in
    1-65535, or the URI has a fragment. Non-ASCII characters in the path and
    query are percent-encoded (UTF-8); a non-ASCII host name is IDNA-encoded.
    """
    if not isinstance(uri, str):
        raise InvalidURI(f"{uri!r} is not a string")
    if _FORBIDDEN.search(uri):
        raise InvalidURI(f"{uri!r} contains control characters")
    if uri != uri.strip():
        raise InvalidURI(f"{uri!r} has leading or trailing spaces")
    # "Fragment identifiers are meaningless in the context of WebSocket URIs
    # and MUST NOT be used on these URIs. As with any URI scheme, the
    # character "#", when not indicating the start of a fragment, MUST be
    # escaped as %23." (RFC 6455 section 3)
    if "#" in uri:
        raise InvalidURI(f"{uri!r} has a fragment: WebSocket URIs must not (escape '#' as %23)")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} is not a valid URI: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        if not parts.scheme:
            raise InvalidURI(f"{uri!r} has no scheme: expected ws:// or wss://")
        raise InvalidURI(f"{uri!r} has scheme {parts.scheme!r}: expected ws or wss")
    secure = scheme == "wss"
    host = parts.hostname
    if not host:
        raise InvalidURI(f"{uri!r} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} has an invalid port: {exc}") from None
    if port is None:
        # ws-URI = "ws:" "//" host [ ":" port ] path [ "?" query ]; "The port
        # component is OPTIONAL; the default for "ws" is port 80, while the
        # default for "wss" is port 443." (RFC 6455 section 3)
        port = 443 if secure else 80
    elif port == 0:
        raise InvalidURI(f"{uri!r} has port 0")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURI(f"{uri!r} has a host name that IDNA cannot encode") from None
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:  # pragma: no cover - urlsplit checks it since Python 3.11.4
            raise InvalidURI(f"{uri!r} has an invalid IPv6 address") from None
    elif not _REG_NAME.fullmatch(host):
        raise InvalidURI(f"{uri!r} has an invalid host {host!r}")
    # "resource-name": "/" if the path component is empty; the path
    # component; "?" if the query component is non-empty; the query
    # component. (RFC 6455 section 3)
    resource = quote(parts.path, safe=_SAFE_PATH) or "/"
    if parts.query:
        resource = f"{resource}?{quote(parts.query, safe=_SAFE_QUERY)}"
    user_info = None
    if parts.username or parts.password is not None:
        user_info = (unquote(parts.username or ""), unquote(parts.password or ""))
    return WSURI(secure, host, port, resource, user_info)
