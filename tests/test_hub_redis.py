"""tether.hub.redis against a real redis-server: relay between hubs once and in
order, subscriptions follow the topics, drop-or-raise while Redis is down, and
Redis killed and restarted under two `tether serve` workers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

import tether
from hub_support import RedisServer, Serve, clients_on_workers, free_port, redis_server
from tether.hub import BackplaneUnavailable, Hub
from tether.hub.redis import RedisBackplane

TIMEOUT = 10


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def room_app(hub: Hub) -> Callable[[tether.Connection], Awaitable[None]]:
    async def handler(ws: tether.Connection) -> None:
        assert ws.request is not None
        hub.subscribe(ws, ws.request.url_path.strip("/") or "room")
        await hub.synced()
        await ws.send("ready")
        await ws.wait_closed()

    return handler


async def join(port: int, n: int, path: str = "/room") -> list[tether.ClientConnection]:
    clients = [await tether.connect(f"ws://127.0.0.1:{port}{path}") for _ in range(n)]
    for client in clients:
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "ready"
    return clients


@pytest.fixture
async def two_hubs(redis: RedisServer) -> AsyncIterator[tuple[Hub, Hub, list[tether.Server]]]:
    hubs = (Hub(RedisBackplane(redis.url)), Hub(RedisBackplane(redis.url)))
    servers = [await tether.serve(room_app(hub), "127.0.0.1", 0) for hub in hubs]
    try:
        yield hubs[0], hubs[1], servers
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
        for hub in hubs:
            await hub.close()


async def test_relay_between_hubs_once_and_in_order(
    redis: RedisServer, two_hubs: tuple[Hub, Hub, list[tether.Server]]
) -> None:
    a, b, (sa, sb) = two_hubs
    clients = [*await join(sa.port, 2), *await join(sb.port, 2)]
    assert redis.numsub("tether:room") == 2
    n = 100

    async def publish(hub: Hub, name: str) -> None:
        for i in range(n):
            await hub.publish("room", f"{name}{i}")
            if i % 10 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(publish(a, "a"), publish(b, "b"))
    await a.publish("room", b"\x00binary\xff")
    for client in clients:
        got = [await asyncio.wait_for(client.recv(), TIMEOUT) for _ in range(2 * n + 1)]
        assert len(set(got)) == 2 * n + 1
        assert [m for m in got if isinstance(m, str) and m[0] == "a"] == [f"a{i}" for i in range(n)]
        assert [m for m in got if isinstance(m, str) and m[0] == "b"] == [f"b{i}" for i in range(n)]
        assert b"\x00binary\xff" in got
    stats = a.statistics()
    assert stats.published == n + 1 and stats.received == n
    assert stats.backplane["relayed"] == n + 1 and stats.backplane["relay_dropped"] == 0
    assert stats.backplane["connected"] is True
    # No echo of a hub's own messages: nothing more arrives.
    await a.publish("room", "last")
    for client in clients:
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "last"
        await client.close()


async def test_redis_subscriptions_follow_local_subscribers(
    redis: RedisServer, two_hubs: tuple[Hub, Hub, list[tether.Server]]
) -> None:
    a, _, (sa, _) = two_hubs
    clients = await join(sa.port, 2, "/news")
    assert redis.numsub("tether:news") == 1
    await clients[0].close()
    assert redis.numsub("tether:news") == 1  # one local subscriber left
    await clients[1].close()
    for _ in range(200):
        if redis.numsub("tether:news") == 0:
            break
        await asyncio.sleep(0.02)
    assert redis.numsub("tether:news") == 0
    assert a.topics() == []


async def test_publish_while_redis_is_down_drops_or_raises() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    dropping = Hub(RedisBackplane(url))
    raising = Hub(RedisBackplane(url, on_unavailable="raise"))
    servers = [await tether.serve(room_app(hub), "127.0.0.1", 0) for hub in (dropping, raising)]
    try:
        clients = []
        for server in servers:
            client = await tether.connect(f"ws://127.0.0.1:{server.port}/room")
            clients.append(client)
        await asyncio.sleep(0.05)
        # Local subscribers get the message either way.
        assert await dropping.publish("room", "one") == 1
        with pytest.raises(BackplaneUnavailable, match="not connected"):
            await raising.publish("room", "two")
        backplane = dropping.statistics().backplane
        assert backplane["relay_dropped"] == 1 and backplane["connected"] is False
        assert "onnect" in backplane["last_error"]
        for client, expected in zip(clients, ["one", "two"], strict=True):
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == expected
            await client.close()
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
        await dropping.close()
        await raising.close()


async def test_publishers_wait_when_the_relay_buffer_is_full(redis: RedisServer) -> None:
    a = Hub(RedisBackplane(redis.url, max_pending=3))
    b = Hub(RedisBackplane(redis.url))
    server = await tether.serve(room_app(b), "127.0.0.1", 0)
    try:
        (client,) = await join(server.port, 1)
        a._attach()
        await asyncio.wait_for(a.synced(), TIMEOUT)
        for i in range(300):
            await a.publish("room", str(i))  # waits for room now and then
        got = [await asyncio.wait_for(client.recv(), TIMEOUT) for _ in range(300)]
        assert got == [str(i) for i in range(300)]
        assert a.statistics().backplane["relay_dropped"] == 0
        await client.close()
    finally:
        server.close()
        await server.wait_closed()
        await a.close()
        await b.close()


def test_backplane_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        RedisBackplane(on_unavailable="queue")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RedisBackplane(max_pending=0)
    assert "disconnected" in repr(RedisBackplane())


# ----------------------------------------------------------------------
# Must-show 2: Redis killed and restarted under two workers


async def test_redis_restart_under_two_workers(redis: RedisServer) -> None:
    serve = Serve("hub_app:app", "--workers", "2", "--redis", redis.url)
    try:
        await asyncio.to_thread(serve.wait_for, "listening", 2)
        by_worker, _ = await clients_on_workers(serve.port, per_worker=1)
        one, two = by_worker["1"][0], by_worker["2"][0]

        inbox: dict[tether.Connection, list[str | bytes]] = {one: [], two: []}

        async def command(client: tether.Connection, **fields: object) -> dict[str, object]:
            await client.send(json.dumps(fields))
            while True:  # hub messages that come first wait in the inbox
                message = await asyncio.wait_for(client.recv(), TIMEOUT)
                if isinstance(message, str) and message.startswith('{"reply"'):
                    reply: dict[str, object] = json.loads(message)
                    return reply
                inbox[client].append(message)

        async def receive(client: tether.Connection) -> str | bytes:
            if inbox[client]:
                return inbox[client].pop(0)
            return await asyncio.wait_for(client.recv(), TIMEOUT)

        for client in (one, two):
            await command(client, op="sub", topic="room")
        await command(one, op="pub", topic="room", data="before")
        for client in (one, two):
            assert await receive(client) == "before"

        redis.kill()
        # Published while Redis is down: local subscribers get it, the relay
        # to the other worker is dropped and counted; nothing hangs.
        for _ in range(100):
            stats = await command(one, op="stats")
            if stats["backplane"]["connected"] is False:  # type: ignore[index]
                break
            await asyncio.sleep(0.02)
        await command(one, op="pub", topic="room", data="during")
        assert await receive(one) == "during"
        stats = await command(one, op="stats")
        assert stats["backplane"]["relay_dropped"] >= 1  # type: ignore[index]

        redis.start()  # same port, empty: the workers must subscribe again
        for _ in range(500):
            if redis.numsub("tether:room") == 2:
                break
            await asyncio.sleep(0.02)
        assert redis.numsub("tether:room") == 2
        await command(two, op="pub", topic="room", data="after-2")
        await command(one, op="pub", topic="room", data="after-1")
        for client in (one, two):
            got = [await receive(client) for _ in range(2)]
            assert sorted(got) == ["after-1", "after-2"]
        assert two.state is tether.State.OPEN  # the clients never noticed
        assert inbox == {one: [], two: []}  # nothing else arrived
        stats = await command(two, op="stats")
        assert stats["backplane"]["connects"] == 2  # type: ignore[index]
        for client in (one, two):
            await client.close()
        assert await asyncio.to_thread(serve.terminate, 30) == 0
        assert not [line for line in serve.lines if "Traceback" in line], serve.lines
        assert sum("lost the connection to Redis" in line for line in serve.lines) == 2
    finally:
        await asyncio.to_thread(serve.close)


def test_redis_backplane_is_imported_on_demand() -> None:
    import tether.hub

    assert tether.hub.RedisBackplane is RedisBackplane
    with pytest.raises(AttributeError):
        tether.hub.NoSuchThing  # noqa: B018
