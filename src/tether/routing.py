""":class:`Routes`: path patterns to handlers, for plain HTTP answers and
WebSocket upgrades on one port.

::

    routes = Routes()
    routes.get("/greet/{name}", lambda request, name: responses.text(f"Greetings {name}!"))
    routes.get("/subscriptions", socket_app)            # a WebSocketApp (or any app)

    @routes.get("/items/{id:int}")                      # the decorator form
    async def item(request, id):
        return responses.json({"id": id})

    await tether.serve(routes, "127.0.0.1", 8080)      # Routes is an app

Patterns are compiled once, when a route is added. A ``{name}`` matches one
path segment (no ``/``), percent-decoded; ``{name:type}`` converts it:
``str`` (the default), ``int`` (digits), ``float``, ``uuid``, and ``path``
(the rest of the path, ``/`` included). A parameter may be a whole segment
or part of one (``/files/{name}.txt``). Matching is exact: ``/a/`` is not
``/a``; the query string is ignored.

Targets:

- a *handler* ``fn(request, **params)``, plain or async, returning a
  :class:`tether.Response` (see :mod:`tether.responses`), a ``str`` (a
  ``200 text/plain`` answer), or an app to upgrade with (a
  ``WebSocketApp``, ``app.to_response()``, any object with
  ``__tether_dispatch__``, or a :class:`tether.Upgrade`);
- an *app*: any object with ``__tether_dispatch__(connection, request)``
  (a ``WebSocketApp``, another face's upgrader, another :class:`Routes`),
  which then sees the request as is.

Answers: no route for the path is 404; a route for the path but not for the
method is 405 with an ``Allow`` header listing the methods that are
(RFC 9110 section 15.5.6: "The origin server MUST generate an Allow header
field in a 405 response containing a list of the target resource's currently
supported methods"). ``HEAD`` is served by the ``GET`` route, without the
body. A handler that raises gets 500 (the engine logs it). Request bodies are
not read: tether's HTTP side is the opening handshake's, and every plain
answer ends the TCP connection (``Connection: close``).

What to call next: :meth:`Routes.get` (and the other methods),
:meth:`Routes.resolve` to test a table without a server.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, overload
from urllib.parse import unquote

from tether.aio.server import Upgrade
from tether.protocol.http import Request, Response
from tether.responses import text

__all__ = ["CONVERTERS", "Match", "Route", "Routes", "compile_path"]

T = TypeVar("T")

Decision = Response | Upgrade


@dataclass(frozen=True, slots=True)
class _Converter:
    regex: str
    convert: Callable[[str], Any]


def _decode(value: str) -> str:
    return unquote(value, errors="strict")


#: The parameter types of patterns: ``{name:type}``.
CONVERTERS: dict[str, _Converter] = {
    "str": _Converter(r"[^/]+", _decode),
    "int": _Converter(r"[0-9]+", int),
    "float": _Converter(r"[0-9]+(?:\.[0-9]+)?", float),
    "uuid": _Converter(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        uuid.UUID,
    ),
    "path": _Converter(r".*", _decode),
}

_PARAM = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")


def compile_path(path: str) -> tuple[re.Pattern[str] | None, dict[str, Callable[[str], Any]]]:
    """Compile a pattern: ``(regex, converters)``, or ``(None, {})`` for a
    pattern without parameters (matched by string equality).

    Raises ``ValueError`` for a pattern that does not start with ``/``, an
    unknown type, a name that is not an identifier, or a repeated name.
    """
    if not path.startswith("/"):
        raise ValueError(f"a path pattern starts with '/': {path!r}")
    converters: dict[str, Callable[[str], Any]] = {}
    parts = []
    literals = []
    pos = 0
    for param in _PARAM.finditer(path):
        name, kind = param.group(1), param.group(2) or "str"
        if not name.isidentifier():
            raise ValueError(f"invalid parameter name {name!r} in {path!r}")
        if name in converters:
            raise ValueError(f"parameter {name!r} appears twice in {path!r}")
        converter = CONVERTERS.get(kind)
        if converter is None:
            known = ", ".join(CONVERTERS)
            raise ValueError(f"unknown parameter type {kind!r} in {path!r} (known: {known})")
        literals.append(path[pos : param.start()])
        parts.append(re.escape(literals[-1]))
        parts.append(f"(?P<{name}>{converter.regex})")
        converters[name] = converter.convert
        pos = param.end()
    rest = path[pos:]
    literals.append(rest)
    if any("{" in literal or "}" in literal for literal in literals):
        raise ValueError(f"unbalanced braces in path pattern {path!r}")
    if not converters:
        return None, {}
    parts.append(re.escape(rest))
    return re.compile("".join(parts)), converters


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of a :class:`Routes` table."""

    methods: frozenset[str]
    pattern: str
    target: Any
    regex: re.Pattern[str] | None
    converters: dict[str, Callable[[str], Any]]

    @property
    def is_app(self) -> bool:
        """Whether the target is an app (sees the request as is) rather
        than a handler (called with the path parameters)."""
        return hasattr(self.target, "__tether_dispatch__")

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted parameters if ``path`` matches, else ``None``.
        Raises ``ValueError`` if a parameter cannot be converted."""
        if self.regex is None:
            return {} if path == self.pattern else None
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {name: convert(found.group(name)) for name, convert in self.converters.items()}


@dataclass(frozen=True, slots=True)
class Match:
    """What :meth:`Routes.resolve` found: the route and its parameters, or
    ``route=None`` with ``status`` 404 (no route for the path) or 405 (not
    for this method; ``allowed`` lists the methods that are)."""

    route: Route | None
    params: dict[str, Any]
    status: int = 200
    allowed: tuple[str, ...] = ()


class Routes:
    """A routing table: an app for :func:`tether.serve` (and
    :class:`~tether.faces.server_runner.HttpServer`).

    Add routes with :meth:`get`, :meth:`post`, :meth:`put`, :meth:`patch`,
    :meth:`delete` or :meth:`route` (each returns the table, for chaining,
    or a decorator when the target is left out). Routes are tried in the
    order they were added, patterns without parameters first.
    """

    __slots__ = ("_dynamic", "_routes", "_static")

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._static: dict[str, list[Route]] = {}
        self._dynamic: list[Route] = []

    # ------------------------------------------------------------------
    # Building the table

    @overload
    def route(self, methods: str | Iterable[str], path: str) -> Callable[[T], T]: ...

    @overload
    def route(self, methods: str | Iterable[str], path: str, target: Any) -> Routes: ...

    def route(self, methods: str | Iterable[str], path: str, target: Any = None) -> Any:
        """Route ``methods`` (``"GET"`` or ``["GET", "POST"]``) on ``path`` to
        ``target``; without ``target``, a decorator that does it."""
        names = [methods] if isinstance(methods, str) else list(methods)
        if not names:
            raise ValueError("a route needs at least one method")
        method_set = frozenset(name.upper() for name in names)
        regex, converters = compile_path(path)

        def add(target: T) -> T:
            if not hasattr(target, "__tether_dispatch__") and not callable(target):
                raise TypeError(f"a route target is a handler function or an app, not {target!r}")
            route = Route(method_set, path, target, regex, converters)
            self._routes.append(route)
            if regex is None:
                self._static.setdefault(path, []).append(route)
            else:
                self._dynamic.append(route)
            return target

        if target is None:
            return add
        add(target)
        return self

    @overload
    def get(self, path: str) -> Callable[[T], T]: ...
    @overload
    def get(self, path: str, target: Any) -> Routes: ...
    def get(self, path: str, target: Any = None) -> Any:
        """Route GET (and HEAD) on ``path``; WebSocket upgrades are GETs."""
        return self.route("GET", path, target)

    @overload
    def post(self, path: str) -> Callable[[T], T]: ...
    @overload
    def post(self, path: str, target: Any) -> Routes: ...
    def post(self, path: str, target: Any = None) -> Any:
        """Route POST on ``path`` (the request body is not read)."""
        return self.route("POST", path, target)

    @overload
    def put(self, path: str) -> Callable[[T], T]: ...
    @overload
    def put(self, path: str, target: Any) -> Routes: ...
    def put(self, path: str, target: Any = None) -> Any:
        """Route PUT on ``path``."""
        return self.route("PUT", path, target)

    @overload
    def patch(self, path: str) -> Callable[[T], T]: ...
    @overload
    def patch(self, path: str, target: Any) -> Routes: ...
    def patch(self, path: str, target: Any = None) -> Any:
        """Route PATCH on ``path``."""
        return self.route("PATCH", path, target)

    @overload
    def delete(self, path: str) -> Callable[[T], T]: ...
    @overload
    def delete(self, path: str, target: Any) -> Routes: ...
    def delete(self, path: str, target: Any = None) -> Any:
        """Route DELETE on ``path``."""
        return self.route("DELETE", path, target)

    def include(self, other: Routes, prefix: str = "") -> Routes:
        """Add every route of ``other``, under ``prefix`` (``"/api"``)."""
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"a prefix starts with '/' and does not end with one: {prefix!r}")
        for route in other._routes:
            self.route(route.methods, prefix + route.pattern, route.target)
        return self

    def __add__(self, other: Routes) -> Routes:
        return Routes().include(self).include(other)

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        table = ", ".join(f"{'|'.join(sorted(r.methods))} {r.pattern}" for r in self._routes)
        return f"Routes({table})"

    # ------------------------------------------------------------------
    # Resolving

    def resolve(self, method: str, path: str) -> Match:
        """Find the route for ``method`` and ``path`` (a path without query)."""
        allowed: set[str] = set()
        fallback: Match | None = None
        for route, params in self._candidates(path):
            if method in route.methods:
                return Match(route, params)
            if method == "HEAD" and "GET" in route.methods and fallback is None:
                fallback = Match(route, params)
            allowed |= route.methods
        if fallback is not None:
            return fallback
        if not allowed:
            return Match(None, {}, 404)
        if "GET" in allowed:
            allowed.add("HEAD")
        return Match(None, {}, 405, tuple(sorted(allowed)))

    def _candidates(self, path: str) -> Iterator[tuple[Route, dict[str, Any]]]:
        for route in self._static.get(path, ()):
            yield route, {}
        for route in self._dynamic:
            try:
                params = route.match(path)
            except ValueError:  # a parameter that does not convert (bad %-escape)
                continue
            if params is not None:
                yield route, params

    def __tether_dispatch__(
        self, connection: Any, request: Request
    ) -> Decision | Awaitable[Decision]:
        """Answer ``request``: the engine calls this for every request head."""
        found = self.resolve(request.method, request.url_path)
        route = found.route
        if route is None:
            if found.status == 405:
                allow = ", ".join(found.allowed)
                return _finish(
                    text(f"405 Method Not Allowed: {request.method}\n", 405, [("Allow", allow)]),
                    request,
                )
            return _finish(text(f"404 Not Found: {request.url_path}\n", 404), request)
        target = route.target
        dispatch = getattr(target, "__tether_dispatch__", None)
        if dispatch is not None:
            return dispatch(connection, request)  # type: ignore[no-any-return]
        result = target(request, **found.params)
        if inspect.isawaitable(result):
            return _finish_async(result, connection, request)
        return _decide(result, connection, request)


def _decide(result: Any, connection: Any, request: Request) -> Decision | Awaitable[Decision]:
    """Turn what a handler returned into the engine's decision."""
    if isinstance(result, Response):
        return _finish(result, request)
    if isinstance(result, Upgrade):
        return result
    dispatch = getattr(result, "__tether_dispatch__", None)
    if dispatch is not None:
        return dispatch(connection, request)  # type: ignore[no-any-return]
    if isinstance(result, str):
        return _finish(text(result), request)
    raise TypeError(
        f"a route handler returns a Response, a str or an app to upgrade with, not {result!r}"
    )


async def _finish_async(result: Awaitable[Any], connection: Any, request: Request) -> Decision:
    decision = _decide(await result, connection, request)
    if inspect.isawaitable(decision):
        return await decision
    return decision


def _finish(response: Response, request: Request) -> Response:
    """Close the TCP connection after a plain answer (the engine does), and
    say so; for HEAD, keep the headers but drop the body (RFC 9110 section
    9.3.2: "the server MUST NOT send content in the response")."""
    head = request.method == "HEAD" and response.body
    if "Connection" in response.headers and not head:
        return response
    headers = response.headers.copy()  # the handler's response may be shared
    if "Connection" not in headers:
        headers["Connection"] = "close"
    if head:
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(len(response.body))
        return Response(response.status, response.reason, headers, b"")
    return Response(response.status, response.reason, headers, response.body)
