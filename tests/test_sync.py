"""``tether.sync``: the synchronous client, against tether's server and the
`websockets` library's server (each run on a thread of its own)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest

import tether
import tether.sync
from faces_support import KINDS, serve_in_thread, settled_thread_count, wait_for_thread_count
from tether import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from tether.sync import LoopThread

TIMEOUT = 10


@pytest.fixture(params=KINDS, scope="module")
def base(request: pytest.FixtureRequest) -> Iterator[str]:
    with serve_in_thread(request.param, subprotocols=["chat"]) as url:
        yield url


def test_send_recv_close_and_one_thread_that_ends(base: str) -> None:
    threads = settled_thread_count()
    ws = tether.sync.connect(base + "/")
    assert threading.active_count() == threads + 1
    assert ws.thread.is_alive() and ws.thread is not threading.current_thread()
    assert ws.state is tether.State.OPEN
    ws.send("hello")
    assert ws.recv(timeout=TIMEOUT) == "hello"
    ws.send(b"\x00\xff")
    assert ws.recv(timeout=TIMEOUT) == b"\x00\xff"
    ws.send(["frag", "ments"])
    assert ws.recv(timeout=TIMEOUT) == "fragments"
    assert isinstance(ws.ping(), float)
    ws.close()
    assert ws.state is tether.State.CLOSED and ws.close_code == 1000
    assert not ws.thread.is_alive()
    assert threading.active_count() == threads
    ws.close()  # again: nothing


def test_context_manager_and_handshake_attributes(base: str) -> None:
    threads = settled_thread_count()
    with tether.sync.connect(
        base + "/path", subprotocols=["chat"], additional_headers={"X-Token": "t"}
    ) as ws:
        assert ws.subprotocol == "chat"
        assert ws.request is not None and ws.request.path == "/path"
        assert ws.response is not None and ws.response.status == 101
        ws.send("cmd:headers")
        seen = json.loads(ws.recv(timeout=TIMEOUT))
        assert seen == {"token": "t", "path": "/path", "subprotocol": "chat"}
        assert "OPEN" in repr(ws)
        assert ws.remote_address[0] == "127.0.0.1"
    assert ws.close_code == 1000 and ws.close_reason == ""
    assert wait_for_thread_count(threads) == threads


def test_recv_timeout_keeps_the_late_message(base: str) -> None:
    with tether.sync.connect(base + "/") as ws:
        with pytest.raises(TimeoutError, match=r"no message within 0\.05 s"):
            ws.recv(timeout=0.05)
        ws.send("late")
        time.sleep(0.2)
        # The recv() left waiting by the timeout got it: not lost, and no
        # ConcurrencyError; timeout=0 returns what is already there.
        assert ws.recv(timeout=0) == "late"
        ws.send("later")
        assert ws.recv(timeout=TIMEOUT) == "later"


def test_iteration_ends_on_a_normal_close(base: str) -> None:
    threads = settled_thread_count()
    ws = tether.sync.connect(base + "/")
    ws.send("cmd:flood:3")
    ws.send("cmd:close:1000:done")
    assert list(ws) == ["m0", "m1", "m2"]
    assert ws.close_code == 1000 and ws.close_reason == "done"
    # The thread ended when the server closed the socket.
    assert wait_for_thread_count(threads) == threads
    with pytest.raises(ConnectionClosedOK):
        ws.recv()
    with pytest.raises(ConnectionClosed):
        ws.send("after")
    with pytest.raises(ConnectionClosed):
        ws.ping()


def test_messages_received_before_the_close_are_still_read(base: str) -> None:
    ws = tether.sync.connect(base + "/")
    ws.send("cmd:flood:2")
    ws.send("cmd:close:1000:")
    ws.thread.join(TIMEOUT)
    assert not ws.thread.is_alive()
    assert ws.recv() == "m0"
    assert ws.recv(timeout=1) == "m1"
    with pytest.raises(ConnectionClosedOK):
        ws.recv()


def test_a_message_pending_in_a_timed_out_recv_survives_the_close(base: str) -> None:
    ws = tether.sync.connect(base + "/")
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)  # leaves a recv waiting on the loop
    ws.send("cmd:flood:1")
    ws.send("cmd:close:1000:")
    ws.thread.join(TIMEOUT)
    assert ws.recv() == "m0"
    with pytest.raises(ConnectionClosedOK):
        ws.recv()


def test_iteration_raises_on_an_error_close(base: str) -> None:
    with tether.sync.connect(base + "/") as ws:
        ws.send("cmd:close:4000:nope")
        with pytest.raises(ConnectionClosedError) as info:
            for _ in ws:
                pass
        assert info.value.code == 4000


def test_broken_connection(base: str) -> None:
    ws = tether.sync.connect(base + "/")
    ws.send("cmd:drop")
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=TIMEOUT)
    assert info.value.code == 1006
    ws.close()
    assert not ws.thread.is_alive()


def test_refused_upgrade_raises_and_leaves_no_thread(base: str) -> None:
    threads = settled_thread_count()
    with pytest.raises(InvalidStatus) as info:
        tether.sync.connect(base + "/deny")
    assert info.value.status == 403
    assert info.value.response.body == b"denied\n"
    assert wait_for_thread_count(threads) == threads


def test_same_options_and_errors_as_the_async_client(base: str) -> None:
    threads = settled_thread_count()
    with pytest.raises(TypeError, match="unknown option"):
        tether.sync.connect(base + "/", no_such_option=1)
    with pytest.raises(tether.InvalidURI):
        tether.sync.connect("http://127.0.0.1/")
    with tether.sync.connect(base + "/", max_size=10, compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers  # type: ignore[union-attr]
        ws.send("x" * 100)
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=TIMEOUT)
        assert info.value.sent is not None and info.value.sent.code == 1009  # we failed it
    assert wait_for_thread_count(threads) == threads


def test_connection_refused_raises_oserror() -> None:
    probe = __import__("socket").socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(OSError):
        tether.sync.connect(f"ws://127.0.0.1:{port}/", open_timeout=5)


def test_handshake_timeout() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        with pytest.raises(tether.HandshakeTimeout):
            tether.sync.connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", open_timeout=0.2)
    finally:
        listener.close()


# ----------------------------------------------------------------------
# LoopThread, the piece underneath


def test_loop_thread_call_submit_and_after_the_end() -> None:
    stop = threading.Event()
    thread = LoopThread("test loop")
    assert thread.loop is None and not thread.alive

    async def main() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.01)

    thread.start(main)
    assert thread.alive and thread.loop is not None
    assert thread.call(lambda: threading.current_thread()) is thread.thread
    future = thread.submit(lambda: asyncio.sleep(0, result=42))
    assert future is not None and future.result(TIMEOUT) == 42
    with pytest.raises(ZeroDivisionError):
        thread.call(lambda: 1 / 0)
    failing = thread.submit(lambda: asyncio.sleep("not a number"))  # type: ignore[arg-type]
    assert failing is not None
    with pytest.raises(TypeError):
        failing.result(TIMEOUT)
    forever = thread.submit(lambda: asyncio.sleep(3600))
    stop.set()
    thread.join(TIMEOUT)
    assert not thread.thread.is_alive() and not thread.alive
    assert forever is not None and forever.cancelled()  # pending work is cancelled
    assert thread.submit(lambda: asyncio.sleep(0)) is None
    assert thread.call(lambda: threading.current_thread()) is threading.current_thread()


def test_loop_thread_refuses_submit_from_its_own_thread() -> None:
    thread = LoopThread("test loop")
    seen: list[BaseException] = []

    async def main() -> None:
        try:
            thread.submit(lambda: asyncio.sleep(0))
        except RuntimeError as exc:
            seen.append(exc)

    thread.start(main)
    thread.join(TIMEOUT)
    assert len(seen) == 1 and "deadlock" in str(seen[0])
