"""The HTTP/1.1 messages of the opening handshake: strict, bounded, sans-I/O.

:class:`Headers` is an ordered multi-map with case-insensitive names.
:class:`Request` and :class:`Response` are the two messages;
:func:`parse_request_head` and :func:`parse_response_head` turn bytes into
them, incrementally: call again with more bytes until they return a result.

Rules (RFC 9112, applied strictly because a WebSocket peer has no excuse):

* Lines end with CRLF. A bare LF or a bare CR anywhere in the head is
  rejected (400), at once, even before the head is complete. (RFC 9112
  section 2.2 lets a recipient accept a bare LF, as h11 does; we do not:
  every WebSocket client sends CRLF, and two parsers that disagree about line
  ends are how requests get smuggled past proxies.)
* The request line is ``method SP request-target SP HTTP/1.1`` with single
  spaces. ``HTTP/1.0`` and malformed versions are answered 400 (RFC 6455
  section 4.1: "the HTTP version MUST be at least 1.1"); a well-formed other
  major version (``HTTP/2.0``) 505.
* Header lines are ``token ":" OWS value OWS``: no space before the colon,
  no obs-fold (a line starting with SP or HTAB), no control character but
  HTAB in values (NUL, CR, DEL...): 400.
* Limits (:mod:`tether.limits`): a request line longer than ``max_line``
  is 414 (400 if its first ``max_line`` bytes hold no space: that is not a
  request line at all); a header line longer than ``max_line``, more than
  ``max_headers`` header lines, or a head larger than ``max_request``
  bytes is 431. Each is detected as soon as the bytes that break it arrive.

What to call next: servers and clients rarely call these functions
directly; :class:`~tether.protocol.handshake.ServerHandshake` and
:class:`~tether.protocol.handshake.ClientHandshake` feed them.
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Union
from urllib.parse import parse_qs

from tether import limits
from tether.exceptions import InvalidMessage

__all__ = [
    "Headers",
    "Request",
    "Response",
    "parse_request_head",
    "parse_response_head",
]

# RFC 9110 section 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" /
# "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
_token = re.compile(f"[{_TCHAR}]+").fullmatch
# RFC 9110 section 5.5: field-value = *( field-vchar / SP / HTAB ) with
# field-vchar = VCHAR / obs-text (0x80-0xFF). No NUL, CR, LF, DEL, no CTL.
_VALUE_CHARS = r"\t\x20-\x7e\x80-\xff"
_field_value = re.compile(f"[{_VALUE_CHARS}]*").fullmatch
# All the header lines of a head at once (after the start line): one regex
# call validates every name and value; only on failure do we look line by
# line for a precise error message.
_header_block = re.compile(f"(?:\r\n[{_TCHAR}]+:[{_VALUE_CHARS}]*)*").fullmatch
# RFC 9112 section 3.2: the request-target is visible ASCII, no spaces.
_target = re.compile(r"[\x21-\x7e]+").fullmatch
_version = re.compile(r"HTTP/[0-9]\.[0-9]").fullmatch
_status_code = re.compile(r"[0-9]{3}").fullmatch
# A byte that can never appear in an unfinished line: a CTL but HTAB (LF
# ends lines and is handled apart; CR is allowed only right before LF).
_bad_byte = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search
_hex = re.compile(rb"[0-9A-Fa-f]{1,16}").fullmatch

_PHRASES = {status.value: status.phrase for status in HTTPStatus}

HeadersLike = Union["Headers", Mapping[str, str], Iterable[tuple[str, str]]]


class Headers:
    """An ordered multi-map of HTTP headers with case-insensitive names.

    ``headers["Host"]`` and :meth:`get` give the first value of a name;
    :meth:`get_all` gives all of them. Iterating gives the name of each
    header line (a name repeats when the header does), ``len()`` counts the
    lines, and :meth:`items` lists ``(name, value)`` pairs in order with the
    names as they were written. ``headers[name] = value`` replaces every
    line of that name; :meth:`add` appends one.

    Names must be tokens and values must not contain CR, LF, NUL or other
    control characters (``ValueError`` otherwise): this keeps a value from
    injecting headers into a response.
    """

    # _items is the truth; _index (lower-case name -> first value) and _multi
    # (lower-case name -> all values, only for names that repeat) are built
    # on the first lookup and dropped on every change.
    __slots__ = ("_index", "_items", "_multi")

    def __init__(self, items: HeadersLike | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, str] | None = None
        self._multi: dict[str, list[str]] = {}
        if items is None:
            return
        if isinstance(items, Headers):
            self._items = list(items._items)
            return
        pairs = items.items() if isinstance(items, Mapping) else items
        for name, value in pairs:
            self.add(name, value)

    def _build(self) -> dict[str, str]:
        items = self._items
        index = {}
        for name, value in reversed(items):  # so that the first value wins
            index[name.lower()] = value
        multi: dict[str, list[str]] = {}
        if len(index) != len(items):
            for name, value in items:
                multi.setdefault(name.lower(), []).append(value)
            multi = {key: values for key, values in multi.items() if len(values) > 1}
        self._multi = multi
        self._index = index
        return index

    def compact(self) -> None:
        """Drop the lookup index to save memory; the next lookup rebuilds it.

        The server calls this once the handshake is answered: the request
        stays on the connection for its whole life, but is rarely read again.
        """
        self._index = None

    def add(self, name: str, value: str) -> None:
        """Append a header line (after checking the name and the value)."""
        if not isinstance(name, str) or not _token(name):
            raise ValueError(f"invalid header name {name!r}")
        if not isinstance(value, str) or not _field_value(value):
            raise ValueError(f"invalid value for header {name}: {value!r}")
        self._items.append((name, value))
        self._index = None

    def _add(self, name: str, value: str) -> None:
        # Unchecked: for names and values that are valid by construction.
        self._items.append((name, value))
        self._index = None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name``, or ``default``."""
        index = self._index if self._index is not None else self._build()
        return index.get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` in order (an empty list if none)."""
        index = self._index if self._index is not None else self._build()
        key = name.lower()
        value = index.get(key)
        if value is None:
            return []
        values = self._multi.get(key)
        return [value] if values is None else list(values)

    def __getitem__(self, name: str) -> str:
        index = self._index if self._index is not None else self._build()
        try:
            return index[name.lower()]
        except KeyError:
            raise KeyError(name) from None

    def __setitem__(self, name: str, value: str) -> None:
        if name in self:
            del self[name]
        self.add(name, value)

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        items = [item for item in self._items if item[0].lower() != key]
        if len(items) == len(self._items):
            raise KeyError(name)
        self._items = items
        self._index = None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        index = self._index if self._index is not None else self._build()
        return name.lower() in index

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def items(self) -> list[tuple[str, str]]:
        """The ``(name, value)`` pairs, in order, names as written."""
        return list(self._items)

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        if len(self._items) != len(other._items):
            return False
        return all(
            a[0].lower() == b[0].lower() and a[1] == b[1]
            for a, b in zip(self._items, other._items, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def _lines(self) -> list[str]:
        return [f"{name}: {value}" for name, value in self._items]


@dataclass(slots=True)
class Request:
    """An HTTP request: the WebSocket upgrade request, or any other.

    ``path`` is the request-target as sent (``/chat?room=1``, or an
    absolute URI). :attr:`url_path` is the path without the query,
    :attr:`query` the parsed query string.

    What to call next: on a server, give it to
    :meth:`~tether.protocol.handshake.ServerHandshake.accept`; on a client,
    send :meth:`serialize`.
    """

    method: str
    path: str
    headers: Headers = field(default_factory=Headers)
    version: str = "HTTP/1.1"

    def serialize(self) -> bytes:
        """The request head as bytes (a request has no body here)."""
        if not _token(self.method):
            raise ValueError(f"invalid method {self.method!r}")
        if not _target(self.path):
            raise ValueError(f"invalid request target {self.path!r}")
        lines = [f"{self.method} {self.path} {self.version}", *self.headers._lines(), "", ""]
        return "\r\n".join(lines).encode("latin-1")

    @property
    def host(self) -> str | None:
        """The ``Host`` header, or ``None``."""
        return self.headers.get("Host")

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header, or ``None`` (non-browser clients)."""
        return self.headers.get("Origin")

    @property
    def url_path(self) -> str:
        """The path of the request-target, without the query (``/chat``).

        For an absolute-form target (``http://host/chat?x``, RFC 6455 section
        4.2.1 allows it) this is the path part of the URI.
        """
        path = self.path
        if not path.startswith("/"):
            scheme_end = path.find("://")
            if scheme_end < 0:
                return path.partition("?")[0]
            rest = path[scheme_end + 3 :]
            cut = len(rest)
            for char in "/?":
                i = rest.find(char)
                if 0 <= i < cut:
                    cut = i
            path = rest[cut:]
            if not path.startswith("/"):
                return "/"
        return path.partition("?")[0]

    @property
    def query_string(self) -> str:
        """The query of the request-target, without ``?`` (maybe ``""``)."""
        return self.path.partition("?")[2]

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string parsed: ``{"room": ["1"]}`` for ``?room=1``."""
        return parse_qs(self.query_string, keep_blank_values=True)


@dataclass(slots=True)
class Response:
    """An HTTP response: the 101 of a WebSocket handshake, or a refusal.

    ``reason`` defaults to the standard phrase of ``status``; ``body`` is
    read by the client for statuses other than 101 (bounded by
    ``max_body``). Build a plain-text answer with :meth:`text`.
    """

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = _PHRASES.get(self.status, "")
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    @classmethod
    def text(cls, body: str, status: int = 200, headers: HeadersLike | None = None) -> Response:
        """A response with a UTF-8 ``text/plain`` body: ``Response.text("hi")``."""
        return cls._typed(status, body.encode("utf-8"), "text/plain; charset=utf-8", headers)

    @classmethod
    def html(cls, body: str, status: int = 200, headers: HeadersLike | None = None) -> Response:
        """A response with a UTF-8 ``text/html`` body."""
        return cls._typed(status, body.encode("utf-8"), "text/html; charset=utf-8", headers)

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: HeadersLike | None = None) -> Response:
        """An ``application/json`` response with ``value`` serialized (UTF-8)."""
        body = _json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return cls._typed(status, body, "application/json", headers)

    @classmethod
    def _typed(
        cls, status: int, body: bytes, content_type: str, headers: HeadersLike | None
    ) -> Response:
        hdrs = Headers(headers)
        if "Content-Type" not in hdrs:
            hdrs._add("Content-Type", content_type)
        return cls(status, "", hdrs, body)

    def serialize(self) -> bytes:
        """The response as bytes: status line, headers, blank line, body.

        A ``Content-Length`` header is written when the response may have a
        body (not 1xx, 204 or 304) and has none (``self.headers`` is left
        unchanged).
        """
        if not 100 <= self.status <= 999:
            raise ValueError(f"invalid status {self.status}")
        if not _field_value(self.reason):
            raise ValueError(f"invalid reason phrase {self.reason!r}")
        lines = [f"HTTP/1.1 {self.status} {self.reason}", *self.headers._lines()]
        status = self.status
        if (
            status >= 200
            and status not in (204, 304)
            and "content-length" not in self.headers
            and "transfer-encoding" not in self.headers
        ):
            lines.append(f"Content-Length: {len(self.body)}")
        lines += ("", "")
        head = "\r\n".join(lines).encode("latin-1")
        return head + self.body if self.body else head


# ---------------------------------------------------------------------------
# Parsing the head


class _HeadScanner:
    """Finds the end of an HTTP head in a growing buffer, and enforces the
    limits and the line rules on each line as soon as it is complete (so a
    malformed or oversized head fails before its end arrives).

    The work is incremental: each byte is looked at a bounded number of
    times however the head is split into pieces.
    """

    __slots__ = ("_lines", "_pos", "is_request", "max_headers", "max_line", "max_request")

    def __init__(self, is_request: bool, max_line: int, max_headers: int, max_request: int) -> None:
        self.is_request = is_request
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_request = max_request
        self._pos = 0  # start of the first line not yet complete
        self._lines = 0  # complete lines so far (start line included)

    def scan(self, buf: bytes | bytearray, old: int) -> int | None:
        """``buf`` grew from ``old`` bytes to ``len(buf)``: return the index
        just after the blank line ending the head, or ``None`` if the head is
        not complete yet. Raises :class:`InvalidMessage`."""
        end = buf.find(b"\r\n\r\n", max(0, self._pos - 2, old - 3))
        if end >= 0:
            end += 4
            if end > self.max_request:
                raise InvalidMessage(f"HTTP head over {self.max_request} bytes", 431)
            return end
        max_line = self.max_line
        pos = self._pos
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            if nl == 0 or buf[nl - 1] != 13:
                raise InvalidMessage("bare LF in the HTTP head: lines must end with CRLF")
            line = buf[pos : nl - 1].decode("latin-1")
            if self._lines == 0:
                _check_start_line(line, self.is_request, max_line)
            else:
                if len(line) > max_line:
                    raise InvalidMessage(f"header line over {max_line} bytes", 431)
                if not _header_block(f"\r\n{line}"):
                    raise InvalidMessage(_header_line_error(line))
                if self._lines > self.max_headers:
                    raise InvalidMessage(f"more than {self.max_headers} headers", 431)
            self._lines += 1
            pos = nl + 1
        self._pos = pos
        # The unfinished line: its bytes so far must be plausible already.
        tail_end = len(buf)
        if tail_end > pos and buf[tail_end - 1] == 13:
            tail_end -= 1  # a CR waiting for its LF
        if tail_end - pos > max_line:
            if self._lines == 0 and self.is_request:
                if buf.find(b" ", 0, tail_end) < 0:
                    raise InvalidMessage("malformed request line: no space in the first bytes")
                raise InvalidMessage(f"request line over {max_line} bytes", 414)
            raise InvalidMessage(f"line over {max_line} bytes without a line end", 431)
        bad = _bad_byte(buf, max(pos, old - 1), tail_end)
        if bad is not None:
            if bad.group() == b"\r":
                raise InvalidMessage("bare CR in the HTTP head")
            raise InvalidMessage("control character in the HTTP head")
        if len(buf) > self.max_request:
            raise InvalidMessage(f"HTTP head over {self.max_request} bytes", 431)
        return None


def _check_start_line(line: str, is_request: bool, max_line: int) -> None:
    if is_request:
        if len(line) > max_line:
            raise InvalidMessage(f"request line over {max_line} bytes", 414)
        _parse_request_line(line)
    else:
        if len(line) > max_line:
            raise InvalidMessage(f"status line over {max_line} bytes", 431)
        _parse_status_line(line)


def _parse_request_line(line: str) -> tuple[str, str, str]:
    # RFC 9112 section 3: request-line = method SP request-target SP HTTP-version
    parts = line.split(" ")
    if len(parts) != 3:
        if "\r" in line or "\n" in line:
            raise InvalidMessage("bare CR or LF in the request line")
        raise InvalidMessage(f"malformed request line {line[:100]!r}")
    method, target, version = parts
    if not _token(method):
        raise InvalidMessage(f"invalid method {method[:100]!r}")
    if not _target(target):
        raise InvalidMessage(f"invalid request target {target[:100]!r}")
    if version != "HTTP/1.1":
        _bad_version(version)
    return method, target, version


def _bad_version(version: str) -> None:
    if version == "HTTP/1.0":
        # RFC 6455 section 4.1: "The method of the request MUST be GET, and
        # the HTTP version MUST be at least 1.1."
        raise InvalidMessage("HTTP/1.0 is not supported: WebSocket requires HTTP/1.1")
    if _version(version) and not version.startswith("HTTP/1."):
        # RFC 9110 section 15.6.6: 505 "the server does not support, or
        # refuses to support, the major version of HTTP".
        raise InvalidMessage(f"unsupported HTTP version {version!r}", 505)
    raise InvalidMessage(f"unsupported or malformed HTTP version {version[:100]!r}")


def _parse_status_line(line: str) -> tuple[int, str]:
    # RFC 9112 section 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    # (a missing SP after the status code is tolerated: the reason is ignored).
    version, _, rest = line.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise InvalidMessage(f"unsupported or malformed HTTP version in status line {line[:100]!r}")
    code, sep, reason = rest[:3], rest[3:4], rest[4:]
    if not _status_code(code) or sep not in ("", " ") or not _field_value(reason):
        raise InvalidMessage(f"malformed status line {line[:100]!r}")
    status = int(code)
    if status < 100:
        raise InvalidMessage(f"invalid status code {status}")
    if version == "HTTP/1.0" and status == 101:
        raise InvalidMessage("101 Switching Protocols in an HTTP/1.0 response")
    return status, reason


def _header_line_error(line: str) -> str:
    """Why a header line is invalid, in words (only called on errors)."""
    if line[:1] in (" ", "\t"):
        # RFC 9112 section 5.2: "A server that receives an obs-fold in a
        # request message ... MUST either reject the message by sending a
        # 400 (Bad Request)... or replace each received obs-fold with one or
        # more SP octets".
        return "obsolete line folding (obs-fold) is not allowed"
    if "\r" in line or "\n" in line:
        return "bare CR or LF in a header line"
    name, colon, value = line.partition(":")
    if not colon:
        return f"header line without a colon: {line[:100]!r}"
    if name != name.rstrip(" \t"):
        # RFC 9112 section 5.1: "A server MUST reject, with a response status
        # code of 400 (Bad Request), any received request message that
        # contains whitespace between a header field name and colon."
        return f"whitespace between header name {name.strip()[:100]!r} and colon"
    if not _token(name):
        return f"invalid header name {name[:100]!r}"
    if "\x00" in value:
        return f"NUL character in header {name}"
    return f"control character in header {name}"


def _parse_head(
    buf: bytes | bytearray, end: int, is_request: bool, max_line: int, max_headers: int
) -> tuple[str, Headers]:
    """Split and check a complete head (``buf[:end]`` ends with CRLF CRLF).

    Returns the start line (not checked here) and the headers.
    """
    text = buf[: end - 4].decode("latin-1")
    lines = text.split("\r\n")
    start = lines[0]
    if len(lines) > max_headers + 1:
        raise InvalidMessage(f"more than {max_headers} headers", 431)
    if end > max_line and max(map(len, lines)) > max_line:
        if len(start) <= max_line:
            raise InvalidMessage(f"header line over {max_line} bytes", 431)
        if is_request:
            raise InvalidMessage(f"request line over {max_line} bytes", 414)
        raise InvalidMessage(f"status line over {max_line} bytes", 431)
    # One regex call checks every header line at once (names are tokens
    # directly followed by ":", values have no CTL but HTAB); only when it
    # fails do we look for the culprit, for a precise message.
    if not _header_block(text, len(start)):
        for line in lines[1:]:  # pragma: no branch - one of them is invalid
            if not _header_block(f"\r\n{line}"):
                raise InvalidMessage(_header_line_error(line))
    del lines[0]
    headers = Headers()
    items = headers._items
    index: dict[str, str] = {}
    repeated = False
    for line in lines:
        name, _, value = line.partition(":")
        # RFC 9112 section 5.1: "A field line value might be preceded and/or
        # followed by optional whitespace (OWS) ... excluded by parsers".
        value = value.strip(" \t")
        items.append((name, value))
        # The index is built in the same pass (a server looks headers up at
        # once); a repeated name makes Headers build it properly instead.
        key = name.lower()
        if key in index:
            repeated = True
        else:
            index[key] = value
    if not repeated:
        headers._index = index
    return start, headers


def _request_from_head(
    buf: bytes | bytearray, end: int, max_line: int, max_headers: int
) -> Request:
    start, headers = _parse_head(buf, end, True, max_line, max_headers)
    method, target, version = _parse_request_line(start)
    return Request(method, target, headers, version)


def _response_from_head(
    buf: bytes | bytearray, end: int, max_line: int, max_headers: int
) -> Response:
    start, headers = _parse_head(buf, end, False, max_line, max_headers)
    status, reason = _parse_status_line(start)
    return Response(status, reason, headers)


def parse_request_head(
    buf: bytes | bytearray,
    *,
    max_line: int = limits.MAX_LINE,
    max_headers: int = limits.MAX_HEADERS,
    max_request: int = limits.MAX_REQUEST,
) -> tuple[Request, int] | None:
    """Parse the head of an HTTP request at the start of ``buf``.

    Returns ``(request, end)`` where ``buf[end:]`` are the bytes after the
    head, or ``None`` when the head is not complete yet (call again with
    more bytes). Raises :class:`~tether.exceptions.InvalidMessage` with the
    status to answer (400, 414, 431, 505) as soon as the bytes are known to
    be malformed or over a limit, complete or not.

    This scans ``buf`` from its start each time; a server reading from a
    socket uses :class:`~tether.protocol.handshake.ServerHandshake`, which
    scans each byte once.
    """
    end = _HeadScanner(True, max_line, max_headers, max_request).scan(buf, 0)
    if end is None:
        return None
    return _request_from_head(buf, end, max_line, max_headers), end


def parse_response_head(
    buf: bytes | bytearray,
    *,
    max_line: int = limits.MAX_LINE,
    max_headers: int = limits.MAX_HEADERS,
    max_request: int = limits.MAX_REQUEST,
) -> tuple[Response, int] | None:
    """Parse the head of an HTTP response (same rules and results as
    :func:`parse_request_head`; the body, if any, is not read here:
    :class:`~tether.protocol.handshake.ClientHandshake` does that)."""
    end = _HeadScanner(False, max_line, max_headers, max_request).scan(buf, 0)
    if end is None:
        return None
    return _response_from_head(buf, end, max_line, max_headers), end


# ---------------------------------------------------------------------------
# Reading the body of a response (a client reads it when the upgrade is refused)


class _BodyReader:
    """Reads a response body framed by Content-Length, chunked encoding or
    the end of the connection (RFC 9112 section 6.3), bounded by
    ``max_body``."""

    __slots__ = ("_buf", "_chunk_left", "_lines", "_state", "body", "max_body", "max_line", "mode")

    def __init__(self, response: Response, max_body: int, max_line: int) -> None:
        self.max_body = max_body
        self.max_line = max_line
        self.body = bytearray()
        self._buf = bytearray()
        self._chunk_left = 0
        self._lines = 0
        self._state = "size"
        headers = response.headers
        status = response.status
        # RFC 9112 section 6.3, rule 1: "Any response ... with a 1xx
        # (Informational), 204 (No Content), or 304 (Not Modified) status
        # code is always terminated by the first empty line after the header
        # fields ... and thus cannot contain a message body".
        if status < 200 or status in (204, 304):
            self.mode = "none"
            return
        codings = [
            c.strip().lower() for v in headers.get_all("Transfer-Encoding") for c in v.split(",")
        ]
        codings = [c for c in codings if c]
        if codings:
            # Rule 4: chunked as the final coding frames the body; any other
            # final coding means "read until the server closes".
            self.mode = "chunked" if codings[-1] == "chunked" else "eof"
            return
        lengths = {c.strip() for v in headers.get_all("Content-Length") for c in v.split(",")}
        if lengths:
            # Rule 5: several Content-Length values must be all the same.
            if len(lengths) != 1:
                raise InvalidMessage("conflicting Content-Length values")
            value = lengths.pop()
            if not value.isdigit() or not value.isascii():
                raise InvalidMessage(f"invalid Content-Length {value[:40]!r}")
            self._chunk_left = int(value)
            if self._chunk_left > max_body:
                raise InvalidMessage(
                    f"HTTP {status} response body of {self._chunk_left} bytes is over "
                    f"max_body ({max_body})"
                )
            self.mode = "length"
            return
        self.mode = "eof"  # rule 8: read until the connection closes

    def _too_big(self) -> InvalidMessage:
        return InvalidMessage(f"response body over max_body ({self.max_body} bytes)")

    def feed(self, data: bytes | bytearray) -> bytes | None:
        """Add bytes; return the bytes after the body once it is complete,
        else ``None``."""
        mode = self.mode
        if mode == "none":
            return bytes(data)
        if mode == "length":
            take = self._chunk_left
            self.body += data[:take]
            self._chunk_left -= min(take, len(data))
            return bytes(data[take:]) if self._chunk_left == 0 else None
        if mode == "eof":
            self.body += data
            if len(self.body) > self.max_body:
                raise self._too_big()
            return None
        return self._feed_chunked(data)

    def _feed_chunked(self, data: bytes | bytearray) -> bytes | None:
        # RFC 9112 section 7.1: chunked-body = *chunk last-chunk trailer-section CRLF
        buf = self._buf
        buf += data
        pos = 0
        while True:
            state = self._state
            if state == "data":
                take = min(self._chunk_left, len(buf) - pos)
                self.body += buf[pos : pos + take]
                pos += take
                self._chunk_left -= take
                if self._chunk_left:
                    break
                self._state = "data-crlf"
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if len(buf) - pos > self.max_line:
                    raise InvalidMessage("chunked encoding line too long")
                break
            line = bytes(buf[pos:nl])
            pos = nl + 2
            if state == "size":
                # chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _hex(size):
                    raise InvalidMessage(f"invalid chunk size {line[:40]!r}")
                n = int(size, 16)
                if len(self.body) + n > self.max_body:
                    raise self._too_big()
                if n:
                    self._chunk_left = n
                    self._state = "data"
                else:
                    self._state = "trailer"
            elif state == "data-crlf":
                if line:
                    raise InvalidMessage("chunk data not followed by CRLF")
                self._state = "size"
            else:  # trailer: header lines until an empty line
                if not line:
                    self._state = "done"
                    self._buf = bytearray()
                    return bytes(buf[pos:])
                self._lines += 1
                if self._lines > 128:
                    raise InvalidMessage("too many trailer lines")
        del buf[:pos]
        return None
