"""`tether serve module:attr --workers N --redis URL`: worker processes on one
port (SO_REUSEPORT), topics shared through a real redis-server, restarts of
dead workers, graceful shutdown on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

import tether
from hub_support import TESTS, RedisServer, Serve, clients_on_workers, redis_server
from tether.cli.serve import Supervisor, Worker, add_parser, load_app

TIMEOUT = 10


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def workers(redis: RedisServer) -> Iterator[Serve]:
    serve = Serve("hub_app:app", "--workers", "2", "--redis", redis.url)
    try:
        serve.wait_for("listening", 2)
        yield serve
    finally:
        serve.close()
    assert not [line for line in serve.lines if "Traceback" in line], "\n".join(serve.lines)


async def command(client: tether.Connection, **fields: object) -> dict[str, object]:
    """Send a command to hub_app and return its reply (hub messages that
    arrive meanwhile are not expected here)."""
    await client.send(json.dumps(fields))
    reply = json.loads(await asyncio.wait_for(client.recv(), TIMEOUT))
    assert reply["reply"] == fields["op"], reply
    return reply  # type: ignore[no-any-return]


async def test_two_workers_share_topics_through_redis(redis: RedisServer, workers: Serve) -> None:
    """Must-show 1: two workers on one port, two clients on each; a publish
    from either worker reaches every client once, in order per publisher."""
    by_worker, _ = await clients_on_workers(workers.port, per_worker=2)
    clients = [client for group in by_worker.values() for client in group]
    for client in clients:
        await command(client, op="sub", topic="room")
    assert redis.numsub("tether:room") == 2  # one subscribed connection per worker
    n = 40
    publishers = {worker: group[0] for worker, group in by_worker.items()}

    async def publish_all(worker: str) -> None:
        client = publishers[worker]
        for i in range(n):
            await client.send(json.dumps({"op": "pub", "topic": "room", "data": f"{worker}:{i}"}))

    await asyncio.gather(*(publish_all(worker) for worker in publishers))

    async def collect(client: tether.Connection) -> list[str]:
        # Every hub message, and (for a publisher) the reply to each of its
        # n "pub" commands, so that no reply is left to be read later.
        acks_due = n if client in publishers.values() else 0
        got: list[str] = []
        acks = 0
        while len(got) < 2 * n or acks < acks_due:
            message = await client.recv()
            assert isinstance(message, str)
            if message.startswith("{"):
                assert json.loads(message) == {"reply": "pub"}
                acks += 1
            else:
                got.append(message)
        assert acks == acks_due
        return got

    results = await asyncio.wait_for(asyncio.gather(*(collect(c) for c in clients)), TIMEOUT)
    for got in results:
        assert len(got) == len(set(got)) == 2 * n  # each message once
        for worker in publishers:
            mine = [m for m in got if m.startswith(f"{worker}:")]
            assert mine == [f"{worker}:{i}" for i in range(n)]  # in publish order
    # Nothing more arrives (no duplicates later either).
    for client in clients:
        stats = await command(client, op="stats")
        assert stats["published"] in (0, n)
    for client in clients:
        await client.close()


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", "hub_app:app", "--app-dir", str(TESTS), *argv])


async def on_both_workers(
    port: int, not_pid: int = 0
) -> tuple[dict[str, list[tether.ClientConnection]], dict[str, int]]:
    """One client on each worker, once both listen (and none has ``not_pid``)."""
    for _ in range(100):
        try:
            found, pids = await clients_on_workers(port, per_worker=1)
        except (
            OSError,
            AssertionError,
            asyncio.TimeoutError,
            # A connection the kernel queued for a worker that was just killed
            # is reset during or right after its handshake: try again.
            tether.InvalidHandshake,
            tether.ConnectionClosed,
        ):
            await asyncio.sleep(0.1)
            continue
        if not_pid not in pids.values():
            return found, pids
        for group in found.values():
            await group[0].close()
        await asyncio.sleep(0.1)
    raise AssertionError("the workers did not come up")


async def test_supervisor_restarts_a_dead_worker_and_stops_them_all() -> None:
    """The supervisor, run in this process (its workers are processes)."""
    supervisor = Supervisor(serve_args("--port", "0", "--workers", "2", "--ping-interval", "0"))
    task = asyncio.ensure_future(supervisor.run(signals=False))
    try:
        while supervisor.port is None or len(supervisor.pids) < 2:
            await asyncio.sleep(0.01)
        first, pids = await on_both_workers(supervisor.port)
        assert pids == {"1": supervisor.pids[1], "2": supervisor.pids[2]}
        os.kill(pids["1"], signal.SIGKILL)
        with pytest.raises(tether.ConnectionClosedError):
            await asyncio.wait_for(first["1"][0].recv(), TIMEOUT)  # its client: dropped
        # A new worker 1 takes its place on the same port.
        by_worker, new_pids = await on_both_workers(supervisor.port, not_pid=pids["1"])
        assert new_pids["1"] == supervisor.pids[1] != pids["1"]
        assert new_pids["2"] == pids["2"]
        clients = [first["2"][0], *(group[0] for group in by_worker.values())]
        supervisor.stop()
        assert await asyncio.wait_for(task, 3 * TIMEOUT) == 0
        for client in clients:
            await asyncio.wait_for(client.wait_closed(), TIMEOUT)
            assert client.close_code == 1001
    finally:
        supervisor.stop()
        await asyncio.wait_for(task, 3 * TIMEOUT)


async def test_worker_in_process_stops_gracefully() -> None:
    args = serve_args("--port", "0")
    worker = Worker(load_app(args.app, args.app_dir), args)
    task = asyncio.ensure_future(worker.run(signals=False))
    while worker.port is None:
        await asyncio.sleep(0.01)
    client = await tether.connect(f"ws://127.0.0.1:{worker.port}/")
    assert "hello" in json.loads(await asyncio.wait_for(client.recv(), TIMEOUT))
    worker.stop()
    assert await asyncio.wait_for(task, TIMEOUT) == 0
    await asyncio.wait_for(client.wait_closed(), TIMEOUT)
    assert client.close_code == 1001


async def test_sigterm_closes_every_client_with_1001(workers: Serve) -> None:
    by_worker, _ = await clients_on_workers(workers.port, per_worker=2)
    clients = [client for group in by_worker.values() for client in group]
    code = await asyncio.to_thread(workers.terminate, 30)
    assert code == 0
    for client in clients:
        await asyncio.wait_for(client.wait_closed(), TIMEOUT)
        assert client.close_code == 1001
        assert isinstance(client.closed_exception, tether.ConnectionClosedOK)
    assert len([line for line in workers.lines if line.endswith("stopped")]) == 3


async def test_serve_one_process_without_redis() -> None:
    serve = Serve("hub_app:app")
    try:
        await asyncio.to_thread(serve.wait_for, "listening")
        a = await tether.connect(f"ws://127.0.0.1:{serve.port}/")
        b = await tether.connect(f"ws://127.0.0.1:{serve.port}/")
        for client in (a, b):
            assert json.loads(await asyncio.wait_for(client.recv(), TIMEOUT))["hello"] == "0"
            await command(client, op="sub", topic="t")
        await a.send(json.dumps({"op": "pub", "topic": "t", "data": "hi"}))
        assert await asyncio.wait_for(b.recv(), TIMEOUT) == "hi"
        stats = await command(b, op="stats")
        assert stats["backplane"] == {"kind": "memory", "hubs": 1, "relayed": 0}
        assert await asyncio.to_thread(serve.terminate) == 0
        await asyncio.wait_for(a.wait_closed(), TIMEOUT)
        assert a.close_code == 1001
    finally:
        await asyncio.to_thread(serve.close)


def test_load_app_kinds_and_errors() -> None:
    app = load_app("hub_app:app", str(TESTS))
    assert asyncio.iscoroutinefunction(app)
    chat = load_app("tether.examples.chat:app")
    assert hasattr(chat, "__tether_dispatch__")
    with pytest.raises(ValueError, match="module:attr"):
        load_app("hub_app")
    with pytest.raises(ValueError, match="no attribute"):
        load_app("hub_app:nope", str(TESTS))
    with pytest.raises(ValueError, match="expected an async handler"):
        load_app("hub_app:WORKER", str(TESTS))


def test_bad_app_exits_with_status_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tether.cli.serve", "hub_app:nope", "--port", "0"],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no attribute" in result.stderr
