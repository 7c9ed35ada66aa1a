"""tether.routing (Routes) and tether.responses: patterns, typed parameters,
404/405, HEAD, handler results; in memory and over loopback sockets."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

import tether
from tether import Handler, Request, Response, Routes, Upgrade, WebSocketChannel, responses
from tether.routing import compile_path

TIMEOUT = 10


def request(method: str, path: str) -> Request:
    return Request(method, path, tether.Headers([("Host", "example")]))


async def answer(routes: Routes, method: str, path: str) -> Any:
    """What the table decides for a request, awaited if need be."""
    decision = routes.__tether_dispatch__(None, request(method, path))
    if asyncio.iscoroutine(decision):
        decision = await decision
    return decision


async def http(
    port: int, method: str, path: str, extra: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP/1.1 request over loopback: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
    data = await asyncio.wait_for(reader.read(), TIMEOUT)  # the server closes after answering
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


# ---------------------------------------------------------------------------
# Patterns


def test_static_pattern_has_no_regex() -> None:
    assert compile_path("/greet") == (None, {})


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/greet/{name}", "/greet/alice", {"name": "alice"}),
        ("/greet/{name}", "/greet/al%20ice", {"name": "al ice"}),
        ("/greet/{name}", "/greet/a%2Fb", {"name": "a/b"}),
        ("/greet/{name}", "/greet/", None),
        ("/greet/{name}", "/greet/a/b", None),
        ("/greet/{name}", "/greet/alice/", None),
        ("/items/{id:int}", "/items/42", {"id": 42}),
        ("/items/{id:int}", "/items/x42", None),
        ("/items/{id:int}", "/items/-1", None),
        ("/items/{id:int}", "/items/٣", None),  # only ASCII digits
        ("/price/{p:float}", "/price/1.5", {"p": 1.5}),
        ("/price/{p:float}", "/price/2", {"p": 2.0}),
        ("/files/{rest:path}", "/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        ("/files/{name}.txt", "/files/notes.txt", {"name": "notes"}),
        ("/files/{name}.txt", "/files/notes.md", None),
        ("/a.b/{x}", "/aXb/1", None),  # literal parts are escaped
        (
            "/u/{id:uuid}",
            "/u/12345678-1234-5678-1234-567812345678",
            {"id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        ),
        ("/u/{id:uuid}", "/u/not-a-uuid", None),
        ("/{a}/{b:int}", "/x/7", {"a": "x", "b": 7}),
    ],
)
def test_typed_parameters(pattern: str, path: str, expected: dict[str, Any] | None) -> None:
    routes = Routes().get(pattern, lambda request, **params: params)
    found = routes.resolve("GET", path)
    if expected is None:
        assert found.status == 404 and found.route is None
    else:
        assert found.status == 200 and found.params == expected
        assert {type(v) for v in found.params.values()} == {type(v) for v in expected.values()}


@pytest.mark.parametrize(
    "pattern",
    ["greet", "/x/{1bad}", "/x/{a}/{a}", "/x/{a:number}", "/x/{a", "/x/a}", "/x/{}"],
)
def test_bad_patterns_fail_when_added(pattern: str) -> None:
    with pytest.raises(ValueError):
        Routes().get(pattern, lambda request: "x")


def test_bad_targets_and_methods() -> None:
    with pytest.raises(TypeError):
        Routes().get("/", 42)
    with pytest.raises(ValueError):
        Routes().route([], "/", lambda request: "x")
    with pytest.raises(ValueError):
        Routes().include(Routes(), "api")


def test_bad_percent_escape_is_not_a_match() -> None:
    routes = Routes().get("/greet/{name}", lambda request, name: name)
    assert routes.resolve("GET", "/greet/%ff").status == 404  # not UTF-8


# ---------------------------------------------------------------------------
# Resolution: order, 404, 405, HEAD


def test_404_405_and_allow() -> None:
    routes = (
        Routes()
        .get("/items/{id:int}", lambda r, id: "get")
        .delete("/items/{id:int}", lambda r, id: "delete")
    )
    routes.post("/items", lambda r: "create")
    assert routes.resolve("GET", "/items/3").route is not None
    assert routes.resolve("DELETE", "/items/3").params == {"id": 3}
    assert routes.resolve("GET", "/nothing").status == 404
    found = routes.resolve("PUT", "/items/3")
    assert (found.status, found.allowed) == (405, ("DELETE", "GET", "HEAD"))
    assert routes.resolve("GET", "/items").allowed == ("POST",)  # no HEAD without GET


def test_static_routes_win_and_order_holds() -> None:
    routes = Routes()
    routes.get("/users/{name}", lambda r, name: f"user {name}")
    routes.get("/users/me", lambda r: "me")
    routes.get("/users/{other}", lambda r, other: "never")
    assert routes.resolve("GET", "/users/me").route.pattern == "/users/me"  # type: ignore[union-attr]
    assert routes.resolve("GET", "/users/bob").route.pattern == "/users/{name}"  # type: ignore[union-attr]
    assert len(routes) == 3
    assert [r.pattern for r in routes] == ["/users/{name}", "/users/me", "/users/{other}"]
    assert "GET /users/me" in repr(routes)


def test_decorator_form_and_methods() -> None:
    routes = Routes()

    @routes.get("/a")
    def a(request: Request) -> str:
        return "a"

    @routes.route(["put", "patch"], "/b")
    async def b(request: Request) -> str:
        return "b"

    assert a(request("GET", "/a")) == "a"  # the decorator returns the function
    assert routes.resolve("PATCH", "/b").route is not None
    assert routes.resolve("PUT", "/b").route is not None
    routes.put("/c", a).patch("/d", a).post("/e", a).delete("/f", a)
    assert [sorted(r.methods) for r in routes][2:] == [["PUT"], ["PATCH"], ["POST"], ["DELETE"]]


def test_include_and_add() -> None:
    api = Routes().get("/items/{id:int}", lambda r, id: f"item {id}")
    site = Routes().get("/", lambda r: "home")
    both = site + api
    assert both.resolve("GET", "/items/2").params == {"id": 2}
    nested = Routes().include(api, "/api")
    assert nested.resolve("GET", "/api/items/2").params == {"id": 2}
    assert nested.resolve("GET", "/items/2").status == 404


# ---------------------------------------------------------------------------
# Dispatch: what handlers return


async def test_handler_results() -> None:
    app = Handler.web_socket(lambda channel: channel.shutdown())
    routes = Routes()
    routes.get("/text", lambda r: responses.text("hi"))
    routes.get("/json", lambda r: responses.json({"a": [1, "é"]}, status=201))
    routes.get("/html", lambda r: responses.html("<p>x</p>", headers={"X-A": "b"}))
    routes.get("/str", lambda r: "plain")
    routes.get("/raw", lambda r: Response(204))
    routes.get("/kept", lambda r: Response(200, headers=[("Connection", "keep-alive")]))

    async def later(r: Request, n: int) -> Response:
        await asyncio.sleep(0)
        return responses.text(str(n * 2))

    routes.get("/async/{n:int}", later)
    routes.get("/ws", app)
    routes.get("/ws-response", lambda r: app.to_response())
    routes.get("/upgrade", lambda r: Upgrade(lambda ws: None))
    routes.get("/bad", lambda r: 42)

    text = await answer(routes, "GET", "/text?x=1")  # the query is ignored
    assert (text.status, text.body) == (200, b"hi")
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.headers["Connection"] == "close"
    data = await answer(routes, "GET", "/json")
    assert data.status == 201 and json.loads(data.body) == {"a": [1, "é"]}
    assert data.headers["Content-Type"] == "application/json"
    page = await answer(routes, "GET", "/html")
    assert page.headers["X-A"] == "b" and page.headers["Content-Type"].startswith("text/html")
    assert (await answer(routes, "GET", "/str")).body == b"plain"
    assert (await answer(routes, "GET", "/raw")).status == 204
    assert (await answer(routes, "GET", "/kept")).headers["Connection"] == "keep-alive"
    assert (await answer(routes, "GET", "/async/21")).body == b"42"

    class FakeConnection:
        options = tether.Options()

    for path in ("/ws", "/ws-response", "/upgrade"):
        decision = routes.__tether_dispatch__(FakeConnection(), request("GET", path))
        assert isinstance(decision, Upgrade), path
    with pytest.raises(TypeError):
        await answer(routes, "GET", "/bad")


async def test_head_drops_the_body_and_keeps_the_length() -> None:
    shared = responses.text("twelve bytes")
    routes = Routes().get("/", lambda r: shared)
    head = await answer(routes, "HEAD", "/")
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == "12"
    get = await answer(routes, "GET", "/")
    assert get.body == b"twelve bytes"
    assert "Connection" not in shared.headers  # the handler's response is not changed


async def test_404_and_405_responses() -> None:
    routes = Routes().get("/greet/{name}", lambda r, name: name)
    missing = await answer(routes, "GET", "/nope")
    assert missing.status == 404 and b"/nope" in missing.body
    wrong = await answer(routes, "POST", "/greet/x")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "GET, HEAD"


# ---------------------------------------------------------------------------
# Over sockets: plain HTTP and WebSocket on one port


async def test_routes_over_loopback() -> None:
    async def shout(channel: WebSocketChannel) -> None:
        async for event in channel:
            match event:
                case tether.ChannelEvent.Read(tether.WebSocketFrame.Text(text)):
                    await channel.send(text.upper())

    routes = Routes()
    routes.get("/greet/{name}", lambda r, name: responses.text(f"Greetings {name}!"))
    routes.get("/ws/{room}", lambda r, room: Handler.web_socket(shout))
    routes.get("/broken", lambda r: 1 / 0)

    async with tether.serve(routes, "127.0.0.1", 0) as server:
        status, headers, body = await http(server.port, "GET", "/greet/bob")
        assert (status, body) == (200, b"Greetings bob!")
        assert headers["Connection"] == "close" and headers["Content-Length"] == "14"
        status, headers, body = await http(server.port, "HEAD", "/greet/bob")
        assert (status, headers["Content-Length"], body) == (200, "14", b"")
        status, _, _ = await http(server.port, "GET", "/missing")
        assert status == 404
        status, headers, _ = await http(server.port, "DELETE", "/greet/bob")
        assert (status, headers["Allow"]) == (405, "GET, HEAD")
        status, _, _ = await http(server.port, "GET", "/broken")
        assert status == 500
        # A plain GET on a WebSocket route: the engine answers 426.
        status, headers, _ = await http(server.port, "GET", "/ws/lobby")
        assert status == 426 and headers["Upgrade"] == "websocket"
        async with ws_connect(f"ws://127.0.0.1:{server.port}/ws/lobby") as ws:
            await ws.send("hey")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "HEY"
