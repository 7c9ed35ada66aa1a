"""The chat example in headless Chromium: two pages whose WebSockets landed on
two different workers of `tether serve --workers 2 --redis URL` see each
other's messages."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import tether
from hub_support import TESTS, RedisServer, Serve, redis_server
from tether.examples.chat import ChatApp
from tether.hub import Hub

CHROMIUM = os.environ.get("TETHER_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")

# Drives two pages; prints one JSON line per event. Page B is reloaded until
# its WebSocket is served by another worker than page A's (the kernel picks
# the worker of each connection).
SCRIPT = r"""
const { openBrowser, screenshot } = require(process.argv[2]);
const url = process.argv[3];
const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n');

async function open(page, name) {
  await page.goto(`${url}/?name=${name}`);
  await page.waitForSelector('body[data-ready="yes"]');
  return page.$eval('#status', (el) => el.dataset.worker);
}

async function say(page, text) {
  await page.fill('#message', text);
  await page.press('#message', 'Enter');
}

(async () => {
  const browser = await openBrowser({ timeoutMs: 15000 });
  try {
    const a = await browser.newPage();
    const b = await browser.newPage();
    for (const page of [a, b]) page.on('pageerror', (err) => emit({ pageerror: err.message }));
    const workerA = await open(a, 'alice');
    let workerB = await open(b, 'bob');
    for (let tries = 0; workerB === workerA && tries < 40; tries++) workerB = await open(b, 'bob');
    emit({ workerA, workerB });
    await say(a, 'hello from alice');
    await b.locator('#log').getByText('hello from alice').waitFor();
    await say(b, 'hi alice, bob here');
    await a.locator('#log').getByText('hi alice, bob here').waitFor();
    emit({ logA: await a.innerText('#log'), logB: await b.innerText('#log') });
    emit({ screenshot: await screenshot(a, 'chat-alice.png') });
    emit({ screenshot: await screenshot(b, 'chat-bob.png') });
    emit({ done: true });
  } catch (err) {
    emit({ done: false, error: String(err.message || err).split('\n')[0] });
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
})();
"""


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.mark.slow
def test_chat_across_two_workers_in_chromium(redis: RedisServer, tmp_path: Path) -> None:
    assert NODE, "node is not installed: run scripts/setup"
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run scripts/setup"
    serve = Serve("tether.examples.chat:app", "--workers", "2", "--redis", redis.url)
    try:
        serve.wait_for("listening", 2)
        script = tmp_path / "chat.js"
        script.write_text(SCRIPT)
        result = subprocess.run(
            [NODE, str(script), str(TESTS / "browser" / "browser.js"),
             f"http://127.0.0.1:{serve.port}"],
            capture_output=True, text=True, timeout=120, cwd=TESTS.parent,
        )  # fmt: skip
        events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert result.returncode == 0, (result.stdout, result.stderr[-2000:])
        assert not [e for e in events if "pageerror" in e], events
        workers = next(e for e in events if "workerA" in e)
        assert workers["workerA"] != workers["workerB"]  # two different workers
        logs = next(e for e in events if "logA" in e)
        for log in (logs["logA"], logs["logB"]):
            assert "alice: hello from alice" in log
            assert "bob: hi alice, bob here" in log
        # Each line says where it was typed: alice's on her worker, bob's on his.
        assert f"hello from alice (worker {workers['workerA']})" in logs["logB"]
        assert f"hi alice, bob here (worker {workers['workerB']})" in logs["logA"]
        assert events[-1] == {"done": True}
    finally:
        serve.close()
    assert not [line for line in serve.lines if "Traceback" in line], serve.lines


async def test_chat_app_in_process() -> None:
    """The page, the 404, and the room protocol, without a browser."""
    async with Hub() as hub, tether.serve(ChatApp(hub), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        page = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert page.startswith(b"HTTP/1.1 200") and b"<title>tether chat</title>" in page
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 404")
        writer.close()

        async def recv(client: tether.Connection) -> dict[str, object]:
            message = await asyncio.wait_for(client.recv(), 10)
            assert isinstance(message, str)
            event: dict[str, object] = json.loads(message)
            return event

        url = f"ws://127.0.0.1:{server.port}/ws?room=r1"
        alice = await tether.connect(url + "&name=alice")
        assert (await recv(alice))["type"] == "welcome"
        assert await recv(alice) == {"type": "join", "name": "alice", "worker": "1"}
        bob = await tether.connect(url + "&name=bob")
        assert (await recv(bob))["room"] == "r1"
        assert (await recv(bob))["name"] == "bob"
        assert (await recv(alice))["name"] == "bob"
        await alice.send("  plain line ")
        await bob.send(json.dumps({"name": "robert", "text": "json line"}))
        await bob.send(b"binary is ignored")
        for client in (alice, bob):
            first, second = await recv(client), await recv(client)
            assert (first["name"], first["text"]) == ("alice", "plain line")
            assert (second["name"], second["text"]) == ("robert", "json line")
        await bob.close()
        assert await recv(alice) == {"type": "leave", "name": "bob", "worker": "1"}
        assert hub.subscribers("chat:r1") != [] and len(hub.subscribers("chat:r1")) == 1
        await alice.close()
