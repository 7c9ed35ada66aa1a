"""Plain HTTP answers for route handlers: :func:`text`, :func:`json`,
:func:`html`, each a :class:`tether.Response` with its ``Content-Type``::

    from tether import Routes, responses

    routes = Routes()

    @routes.get("/greet/{name}")
    def greet(request, name):
        return responses.text(f"Greetings {name}!")

    @routes.get("/items/{id:int}")
    def item(request, id):
        return responses.json({"id": id}, status=200)

``tether.Response(status, reason, headers, body)`` is the general form.
"""

from __future__ import annotations

import json as _json
from typing import Any

from tether.protocol.http import Headers, HeadersLike, Response

__all__ = ["html", "json", "text"]


def _response(status: int, body: bytes, content_type: str, headers: HeadersLike | None) -> Response:
    out = Headers(headers)
    if "Content-Type" not in out:
        out["Content-Type"] = content_type
    return Response(status, "", out, body)


def text(body: str, status: int = 200, headers: HeadersLike | None = None) -> Response:
    """A ``text/plain; charset=utf-8`` response."""
    return _response(status, body.encode("utf-8"), "text/plain; charset=utf-8", headers)


def html(body: str, status: int = 200, headers: HeadersLike | None = None) -> Response:
    """A ``text/html; charset=utf-8`` response."""
    return _response(status, body.encode("utf-8"), "text/html; charset=utf-8", headers)


def json(value: Any, status: int = 200, headers: HeadersLike | None = None) -> Response:
    """An ``application/json`` response with ``value`` serialized (UTF-8)."""
    body = _json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _response(status, body, "application/json", headers)
