"""tether._transport, the compiled epoll transports, against real loopback
TCP sockets: the asyncio transport contract (the one of asyncio's
_SelectorSocketTransport) for writes, flow control, closing, EOF, errors,
extra info, protocols, the Listener, and no descriptor or poller leaks.

Where it helps, the same test also runs against asyncio's own transport
(``impl == "asyncio"``): that is the behaviour to match."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import struct
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tether.aio import transports

pytestmark = pytest.mark.skipif(
    transports.compiled is None,
    reason="tether._transport is not in use (pure-Python mode, not Linux, or not built)",
)

TIMEOUT = 5.0
OPENED: list[socket.socket] = []  # sockets the tests made (see close_leftovers)
# Kernel buffers are kept small where a test needs writes to back up, so that
# a few megabytes are always well past what the kernel can hold.
SMALL_BUF = 32 * 1024
BIG = 4 * 1024 * 1024


# ---------------------------------------------------------------------------
# helpers


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes whose order matters: every 4-byte word is its own index."""
    words = size // 4 + 1
    return b"".join(struct.pack(">I", (i + seed) & 0xFFFFFFFF) for i in range(words))[:size]


def tcp_pair(small: bool = False) -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (ours, peer), both non-blocking. With
    ``small``, our send buffer and the peer's receive buffer are tiny."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if small:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
        peer.connect(lsock.getsockname())
        ours, _ = lsock.accept()
    if small:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
    ours.setblocking(False)
    peer.setblocking(False)
    OPENED.extend((ours, peer))
    return ours, peer


def new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    OPENED.append(sock)
    return sock


def listening_socket() -> socket.socket:
    """A bound, non-blocking loopback socket for a Listener (which listens)."""
    sock = new_socket()
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def connect_client(lsock: socket.socket) -> socket.socket:
    """A non-blocking client socket, connected to ``lsock``."""
    client = new_socket()
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(client, lsock.getsockname()), TIMEOUT)
    return client


def poller() -> Any:
    return transports._poller(asyncio.get_running_loop())


def make_transport(sock: socket.socket, protocol: asyncio.BaseProtocol) -> Any:
    """A compiled Transport that takes over ``sock``'s descriptor."""
    return transports.compiled.Transport(poller(), sock.detach(), protocol)


async def open_transport(impl: str, sock: socket.socket, protocol: asyncio.BaseProtocol) -> Any:
    """The compiled transport, or asyncio's own one as the reference."""
    if impl == "asyncio":
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
        return transport
    return make_transport(sock, protocol)


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.002)

    await asyncio.wait_for(wait(), timeout)


async def read_until_eof(peer: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything the peer receives up to EOF (or a reset)."""
    loop = asyncio.get_running_loop()
    out = bytearray()

    async def read() -> None:
        while True:
            try:
                chunk = await loop.sock_recv(peer, 1 << 20)
            except ConnectionResetError:
                return
            if not chunk:
                return
            out.extend(chunk)

    await asyncio.wait_for(read(), timeout)
    return bytes(out)


async def read_exactly(peer: socket.socket, size: int, timeout: float = TIMEOUT) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()

    async def read() -> None:
        while len(out) < size:
            chunk = await loop.sock_recv(peer, min(1 << 20, size - len(out)))
            assert chunk, f"EOF after {len(out)} of {size} bytes"
            out.extend(chunk)

    await asyncio.wait_for(read(), timeout)
    return bytes(out)


async def send(peer: socket.socket, data: bytes) -> None:
    await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(peer, data), TIMEOUT)


def reset(peer: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends an RST."""
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()


def capture_errors() -> list[dict[str, Any]]:
    """What the running loop's exception handler receives from now on."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    return errors


def open_fds() -> list[str]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:  # the descriptor listdir itself used
            pass
    return fds


def epoll_fds() -> int:
    return sum(1 for target in open_fds() if target == "anon_inode:[eventpoll]")


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def close_leftovers() -> Iterator[None]:
    """Close the sockets a failed test left open, so that its leftovers do
    not show up as ResourceWarnings in the next test."""
    yield
    while OPENED:
        OPENED.pop().close()


@pytest.fixture
def no_resource_warnings() -> Iterator[None]:
    gc.collect()  # what earlier tests left behind is not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


class Common:
    """What every test protocol records (shared by both protocol kinds)."""

    def __init__(self, eof_result: bool | None = None) -> None:
        self.transport: Any = None
        self.made = 0
        self.received = bytearray()
        self.eofs = 0
        self.eof_result = eof_result
        self.paused = 0
        self.resumed = 0
        self.size_at_pause: list[int] = []
        self.size_at_resume: list[int] = []
        self.lost_calls: list[BaseException | None] = []
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.made += 1

    def eof_received(self) -> bool | None:
        self.eofs += 1
        return self.eof_result

    def pause_writing(self) -> None:
        self.paused += 1
        self.size_at_pause.append(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self.resumed += 1
        self.size_at_resume.append(self.transport.get_write_buffer_size())

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    async def wait_lost(self) -> BaseException | None:
        return await asyncio.wait_for(asyncio.shield(self.lost), TIMEOUT)


class Proto(Common, asyncio.Protocol):
    def __init__(self, eof_result: bool | None = None) -> None:
        super().__init__(eof_result)
        self.chunks = 0

    def data_received(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.chunks += 1
        self.received += data


class BufProto(Common, asyncio.BufferedProtocol):
    def __init__(self, size: int = 65536, eof_result: bool | None = None) -> None:
        super().__init__(eof_result)
        self.buffer = bytearray(size)
        self.hints: list[int] = []

    def get_buffer(self, sizehint: int) -> memoryview:
        self.hints.append(sizehint)
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        assert 0 < nbytes <= len(self.buffer)
        self.received += self.buffer[:nbytes]


class Boom(Exception):
    pass


# ---------------------------------------------------------------------------
# Poller and Transport basics


async def test_one_poller_per_loop() -> None:
    loop = asyncio.get_running_loop()
    p = poller()
    assert transports._poller(loop) is p
    assert p.loop is loop
    assert p.registered == 0


async def test_connection_made_at_once_and_data_both_ways() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    fd = ours.fileno()
    t = make_transport(ours, proto)
    # connection_made ran inside the constructor, not later
    assert proto.made == 1 and proto.transport is t
    assert t.fd == fd
    assert poller().registered == 1
    assert t.is_reading() and not t.is_closing()
    assert t.get_protocol() is proto
    assert t.get_write_buffer_size() == 0
    assert t.can_write_eof()

    await send(peer, b"hello from the peer")
    await until(lambda: bytes(proto.received) == b"hello from the peer")
    t.write(b"and back")
    assert await read_exactly(peer, 8) == b"and back"

    t.close()
    assert t.is_closing()
    assert await proto.wait_lost() is None
    assert await read_until_eof(peer) == b""
    assert proto.lost_calls == [None]
    assert t.fd == -1
    assert poller().registered == 0
    peer.close()


async def test_connection_lost_comes_from_the_loop_not_from_close() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    t.close()
    assert proto.lost_calls == []  # call_soon, not a call from inside close()
    await asyncio.sleep(0)
    assert proto.lost_calls == [None]
    t.close()  # again: nothing more
    t.abort()
    await asyncio.sleep(0.01)
    assert proto.lost_calls == [None]
    assert t.get_protocol() is None or t.get_protocol() is proto
    peer.close()


async def test_write_from_connection_made() -> None:
    class Greeter(Proto):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.write(b"greeting")
            transport.close()

    ours, peer = tcp_pair()
    proto = Greeter()
    make_transport(ours, proto)
    assert await read_until_eof(peer) == b"greeting"
    assert await proto.wait_lost() is None
    peer.close()


async def test_plain_protocol_receives_everything_in_order() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    make_transport(ours, proto)
    data = pattern(1_000_003)
    await send(peer, data)
    await until(lambda: len(proto.received) >= len(data))
    assert bytes(proto.received) == data
    assert proto.chunks >= 2  # the C side reads at most 64 KiB at a time
    peer.close()
    await proto.wait_lost()
    assert proto.eofs == 1


async def test_buffered_protocol_with_a_tiny_buffer() -> None:
    ours, peer = tcp_pair()
    proto = BufProto(size=7)
    make_transport(ours, proto)
    data = pattern(50_001)
    await send(peer, data)
    await until(lambda: len(proto.received) >= len(data))
    assert bytes(proto.received) == data
    assert set(proto.hints) == {-1}  # asyncio's sizehint
    peer.close()
    assert await proto.wait_lost() is None
    assert proto.eofs == 1


async def test_empty_buffer_from_get_buffer_is_an_error() -> None:
    errors = capture_errors()
    ours, peer = tcp_pair()
    proto = BufProto(size=0)
    make_transport(ours, proto)
    await send(peer, b"x")
    exc = await proto.wait_lost()
    assert isinstance(exc, RuntimeError)
    assert [e["exception"] for e in errors] == [exc]
    peer.close()


async def test_set_protocol_switches_between_kinds() -> None:
    ours, peer = tcp_pair()
    first = Proto()
    t = make_transport(ours, first)
    await send(peer, b"one")
    await until(lambda: bytes(first.received) == b"one")

    second = BufProto(size=16)
    t.set_protocol(second)
    assert t.get_protocol() is second
    await send(peer, b"two")
    await until(lambda: bytes(second.received) == b"two")
    assert second.hints  # read through get_buffer/buffer_updated now

    third = Proto()
    t.set_protocol(third)
    await send(peer, b"three")
    await until(lambda: bytes(third.received) == b"three")
    assert bytes(first.received) == b"one" and bytes(second.received) == b"two"

    peer.close()
    assert await third.wait_lost() is None
    assert first.lost_calls == [] and second.lost_calls == []


async def test_pause_and_resume_reading() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    t.pause_reading()
    assert not t.is_reading()
    t.pause_reading()  # twice: no error
    await send(peer, b"held back")
    await asyncio.sleep(0.05)
    assert proto.received == b""
    t.resume_reading()
    assert t.is_reading()
    await until(lambda: bytes(proto.received) == b"held back")
    t.resume_reading()  # not paused: no-op
    await send(peer, b"!")
    await until(lambda: bytes(proto.received) == b"held back!")
    t.close()
    assert not t.is_reading()
    await proto.wait_lost()
    peer.close()


async def test_registered_counts_the_sockets_in_the_epoll_set() -> None:
    p = poller()
    pairs = [tcp_pair() for _ in range(3)]
    protos = [Proto() for _ in pairs]
    ts = [make_transport(ours, proto) for (ours, _), proto in zip(pairs, protos, strict=True)]
    assert p.registered == 3
    ts[0].close()
    await protos[0].wait_lost()
    assert p.registered == 2
    ts[1].abort()
    await protos[1].wait_lost()
    assert p.registered == 1
    pairs[2][1].close()  # the peer closes: EOF, eof_received() -> None closes
    await protos[2].wait_lost()
    assert p.registered == 0
    for _, peer in pairs:
        peer.close()


async def test_a_lone_socket_is_read_without_spinning_through_every_change() -> None:
    """With one socket in the set the poller reads it without asking the set
    which one is ready; the set learns the lone socket again when a second
    one goes, and a stale readiness never makes the loop spin."""
    import time

    ours, peer = tcp_pair()
    proto = BufProto()
    make_transport(ours, proto)  # alone in the set
    for i in range(20):
        await send(peer, b"%03d;" % i)
        await until(lambda i=i: proto.received.endswith(b"%03d;" % i))
    other_ours, other_peer = tcp_pair()
    other = BufProto()
    other_t = make_transport(other_ours, other)  # two in the set
    await send(peer, b"two;")
    await send(other_peer, b"other;")
    await until(lambda: proto.received.endswith(b"two;") and other.received == b"other;")
    other_t.close()  # alone again: which one is learnt from the next wait
    await other.wait_lost()
    for i in range(20, 40):
        await send(peer, b"%03d;" % i)
        await until(lambda i=i: proto.received.endswith(b"%03d;" % i))
    proto.transport.pause_reading()  # no longer waiting to read
    await send(peer, b"held;")
    await asyncio.sleep(0.05)
    assert not proto.received.endswith(b"held;")
    proto.transport.resume_reading()
    await until(lambda: proto.received.endswith(b"held;"))
    expected = b"".join(b"%03d;" % i for i in range(20)) + b"two;"
    expected += b"".join(b"%03d;" % i for i in range(20, 40)) + b"held;"
    assert bytes(proto.received) == expected
    # every read found data but for at most a few stale readinesses
    reads = len(proto.hints)
    assert reads <= 42 + 5, reads
    cpu = time.process_time()
    await asyncio.sleep(0.3)  # idle: the loop must sleep, not poll the socket
    assert time.process_time() - cpu < 0.1
    assert len(proto.hints) == reads
    proto.transport.close()
    await proto.wait_lost()
    peer.close()
    other_peer.close()


async def test_the_loop_watches_a_lone_connection_itself() -> None:
    """With one connection in the set, the loop watches its socket, not the
    set (a wake-up through a nested epoll costs a sequential client); a
    second socket, a pause or a wait for EPOLLOUT hands the watch back to
    the set, and the loop never keeps a descriptor that closed."""
    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    p = poller()
    listener_sock = socket.create_server(("127.0.0.1", 0))
    lfd = listener_sock.fileno()
    listener = transports.compiled.Listener(p, lfd, Proto)
    # a listener is watched by the loop itself, never in the set
    assert p.registered == 0 and lfd in selector.get_map()
    listener.close()
    assert lfd not in selector.get_map()
    listener_sock.close()

    ours, peer = tcp_pair(small=True)
    fd = ours.fileno()
    proto = BufProto()
    t = make_transport(ours, proto)
    epfd = p.epfd
    assert p.watched == fd and fd in selector.get_map() and epfd not in selector.get_map()
    await send(peer, b"one;")
    await until(lambda: proto.received == b"one;")

    other_ours, other_peer = tcp_pair()
    other = BufProto()
    other_t = make_transport(other_ours, other)
    assert p.watched == epfd and fd not in selector.get_map()
    await send(peer, b"two;")
    await until(lambda: proto.received == b"one;two;")
    other_t.close()
    await other.wait_lost()
    await send(peer, b"three;")  # the set learns which one is left alone
    await until(lambda: proto.received == b"one;two;three;")
    assert p.watched == fd

    t.pause_reading()
    assert p.watched == epfd
    t.resume_reading()
    assert p.watched == fd

    data = pattern(BIG)
    t.write(data)  # the kernel takes a part; the rest waits for EPOLLOUT
    assert t.get_write_buffer_size() > 0 and p.watched == epfd
    assert await read_exactly(peer, BIG) == data
    await until(lambda: t.get_write_buffer_size() == 0)
    assert p.watched == fd
    await send(peer, b"four;")
    await until(lambda: proto.received == b"one;two;three;four;")

    t.close()
    await proto.wait_lost()
    assert fd not in selector.get_map()
    assert p.watched in (epfd, -1)
    peer.close()
    other_peer.close()


# ---------------------------------------------------------------------------
# writing


async def test_write_rejects_str_and_non_buffers() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    with pytest.raises(TypeError):
        t.write("text")
    with pytest.raises(TypeError):
        t.write(12)
    with pytest.raises(TypeError):
        t.writelines([b"ok", "text"])
    with pytest.raises(TypeError):
        t.writelines(5)
    t.write(b"")
    t.writelines([])
    t.write(b"end")
    t.close()
    # nothing of the rejected calls went out
    assert await read_until_eof(peer) == b"end"
    await proto.wait_lost()
    peer.close()


async def test_write_accepts_every_bytes_like() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    t.write(b"ab")
    t.write(bytearray(b"cd"))
    t.write(memoryview(b"xxefxx")[2:4])
    t.write(memoryview(bytearray(b"gh")))
    t.write(memoryview(b"\x01\x00\x00\x00").cast("I"))
    t.close()
    assert await read_until_eof(peer) == b"abcdefgh\x01\x00\x00\x00"
    await proto.wait_lost()
    peer.close()


async def test_large_write_pauses_then_resumes_and_arrives_in_order() -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    assert t.get_write_buffer_limits() == (16384, 65536)
    data = pattern(BIG)
    t.write(data)
    # the kernel took a little; the rest waits, past the high-water mark
    queued = t.get_write_buffer_size()
    assert 65536 < queued < BIG
    assert proto.paused == 1 and proto.resumed == 0
    assert proto.size_at_pause == [queued]
    # more writes queue behind, no second pause_writing
    tail = pattern(100_000, seed=7)
    t.write(tail)
    assert t.get_write_buffer_size() == queued + len(tail)
    assert proto.paused == 1
    # the peer does not read: the queue stays past the high-water mark
    await asyncio.sleep(0.05)
    assert t.get_write_buffer_size() > 65536
    assert proto.resumed == 0

    got = await read_exactly(peer, len(data) + len(tail))
    assert got == data + tail
    await until(lambda: proto.resumed == 1)
    assert proto.paused == 1
    assert proto.size_at_resume[0] <= 16384
    await until(lambda: t.get_write_buffer_size() == 0)
    t.close()
    assert await read_until_eof(peer) == b""
    assert await proto.wait_lost() is None
    peer.close()


@pytest.mark.parametrize(
    "impl",
    [
        # resume_writing() as soon as the queue is at the low-water mark,
        # not only once it is empty (asyncio checks after every send)
        "compiled",
        "asyncio",
    ],
)
async def test_resume_writing_at_the_low_water_mark(impl: str) -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = await open_transport(impl, ours, proto)
    high, low = 2_000_000, 1_000_000
    t.set_write_buffer_limits(high=high, low=low)
    data = pattern(BIG)
    t.write(data)
    assert proto.paused == 1
    assert await read_exactly(peer, len(data)) == data
    await until(lambda: proto.resumed == 1)
    # resumed when the queue fell to the low-water mark: with small kernel
    # buffers each send moves a few tens of KiB, so it was far from empty
    [size] = proto.size_at_resume
    assert 0 < size <= low
    t.close()
    await proto.wait_lost()
    peer.close()


async def test_write_buffer_limits() -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    assert t.get_write_buffer_limits() == (16384, 65536)
    t.set_write_buffer_limits(high=1000)
    assert t.get_write_buffer_limits() == (250, 1000)
    t.set_write_buffer_limits(low=100)
    assert t.get_write_buffer_limits() == (100, 400)
    t.set_write_buffer_limits(high=300, low=300)
    assert t.get_write_buffer_limits() == (300, 300)
    t.set_write_buffer_limits()
    assert t.get_write_buffer_limits() == (16384, 65536)
    with pytest.raises(ValueError):
        t.set_write_buffer_limits(high=10, low=20)
    with pytest.raises(ValueError):
        t.set_write_buffer_limits(high=-1)
    assert t.get_write_buffer_limits() == (16384, 65536)

    # queue less than the high-water mark: no pause until the mark drops
    t.set_write_buffer_limits(high=BIG * 2)
    t.write(pattern(BIG))
    queued = t.get_write_buffer_size()
    assert queued > 0 and proto.paused == 0
    t.set_write_buffer_limits(high=queued - 1)
    assert proto.paused == 1
    assert len(await read_exactly(peer, BIG)) == BIG
    await until(lambda: proto.resumed == 1)
    t.close()
    await proto.wait_lost()
    peer.close()


async def test_queued_bytearray_is_copied_and_bytes_kept() -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    t.set_write_buffer_limits(high=BIG * 4)
    first = pattern(BIG)
    t.write(first)
    assert t.get_write_buffer_size() > 0  # from now on everything queues

    mutable = bytearray(b"A" * 1000)
    t.write(mutable)
    mutable[:] = b"B" * 1000  # the caller reuses its buffer
    mutable.extend(b"C")  # and may resize it: no export is held
    view_source = bytearray(b"D" * 1000)
    t.write(memoryview(view_source))
    view_source[:] = b"E" * 1000

    kept = pattern(5000, seed=3)
    before = sys.getrefcount(kept)
    t.write(kept)
    assert sys.getrefcount(kept) == before + 1  # queued as is, not copied
    assert t.get_write_buffer_size() >= 2000 + len(kept)

    got = await read_exactly(peer, BIG + 2000 + len(kept))
    assert got == first + b"A" * 1000 + b"D" * 1000 + kept
    await until(lambda: t.get_write_buffer_size() == 0)
    assert sys.getrefcount(kept) == before  # let go once sent
    t.close()
    await proto.wait_lost()
    peer.close()


async def test_writelines_mixed_buffers() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    parts: list[Any] = [
        b"bytes-",
        bytearray(b"bytearray-"),
        memoryview(b"..memoryview-..")[2:-2],
        b"",
        memoryview(bytearray(b"mv-of-bytearray-")),
        bytearray(),
        b"end",
    ]
    expected = b"".join(bytes(p) for p in parts)
    t.writelines(parts)
    t.writelines(iter([b"-gen", bytearray(b"erator")]))  # any iterable
    t.close()
    assert await read_until_eof(peer) == expected + b"-generator"
    await proto.wait_lost()
    peer.close()


async def test_writelines_more_than_64_buffers() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    parts: list[Any] = []
    for i in range(300):
        chunk = f"<{i}>".encode()
        parts.append((bytes, bytearray, memoryview)[i % 3](chunk))
    t.writelines(parts)
    t.close()
    assert await read_until_eof(peer) == b"".join(f"<{i}>".encode() for i in range(300))
    await proto.wait_lost()
    peer.close()


async def test_writelines_more_than_64_buffers_past_the_kernel_buffer() -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    parts: list[Any] = []
    for i in range(200):
        chunk = pattern(20_000 + i, seed=i * 100_000)
        parts.append((bytes, bytearray, memoryview)[i % 3](chunk))
    expected = b"".join(bytes(p) for p in parts)
    t.writelines(parts)
    assert t.get_write_buffer_size() > 65536
    assert proto.paused == 1
    # the caller's bytearrays may change now: queued data was copied
    for p in parts:
        if isinstance(p, bytearray):
            p[:] = b"\0" * len(p)
    t.writelines([b"|", bytearray(b"tail")])  # queues behind the rest
    assert await read_exactly(peer, len(expected) + 5) == expected + b"|tail"
    await until(lambda: proto.resumed == 1)
    t.close()
    assert await read_until_eof(peer) == b""
    await proto.wait_lost()
    peer.close()


# writelines() is all or nothing: a bad item past the first writev() batch
# (64 buffers) raises before any byte goes out, as asyncio's join does.
async def test_writelines_with_a_bad_item_past_64_sends_nothing() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    with pytest.raises(TypeError):
        t.writelines([b"a"] * 70 + ["not bytes"])
    t.write(b"END")
    t.close()
    assert await read_until_eof(peer) == b"END"
    await proto.wait_lost()
    peer.close()


async def test_write_after_connection_lost_is_ignored() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    t.abort()
    await proto.wait_lost()
    t.write(b"ignored")
    t.writelines([b"ignored"])
    with pytest.raises(TypeError):
        t.write("still a type error")
    assert t.get_write_buffer_size() == 0
    assert await read_until_eof(peer) == b""
    peer.close()


# ---------------------------------------------------------------------------
# closing


async def test_close_delivers_queued_data_before_eof() -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    data = pattern(BIG)
    t.write(data)
    assert t.get_write_buffer_size() > 0
    t.close()
    assert t.is_closing() and not t.is_reading()
    await asyncio.sleep(0.05)
    assert not proto.lost.done()  # still flushing: the peer has not read
    assert t.fd >= 0
    assert await read_until_eof(peer) == data
    assert await proto.wait_lost() is None
    assert proto.lost_calls == [None]
    assert proto.eofs == 0
    assert poller().registered == 0
    peer.close()


async def test_close_stops_reading() -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    t.write(pattern(BIG))
    t.close()
    await send(peer, b"too late")
    await asyncio.sleep(0.05)
    assert proto.received == b""
    assert len(await read_until_eof(peer)) == BIG
    await proto.wait_lost()
    assert proto.received == b""
    peer.close()


async def test_abort_drops_queued_data() -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    t.write(pattern(BIG))
    queued = t.get_write_buffer_size()
    assert queued > 0
    t.abort()
    assert t.is_closing()
    assert t.get_write_buffer_size() == 0
    assert proto.lost_calls == []
    assert await proto.wait_lost() is None
    got = await read_until_eof(peer)
    assert len(got) <= BIG - queued  # only what the kernel already had
    assert got == pattern(BIG)[: len(got)]
    assert proto.resumed == 0
    peer.close()


async def test_peer_reset_gives_oserror_without_reporting() -> None:
    errors = capture_errors()
    ours, peer = tcp_pair()
    proto = BufProto()
    make_transport(ours, proto)
    await send(peer, b"x")
    await until(lambda: proto.received == b"x")
    reset(peer)
    exc = await proto.wait_lost()
    assert isinstance(exc, ConnectionResetError)
    assert proto.eofs == 0
    assert errors == []
    assert poller().registered == 0


async def test_peer_reset_while_writing_gives_oserror() -> None:
    errors = capture_errors()
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    t.pause_reading()  # only the write side sees the reset
    t.write(pattern(BIG))
    assert t.get_write_buffer_size() > 0
    reset(peer)
    exc = await proto.wait_lost()
    assert isinstance(exc, OSError)
    assert errors == []
    assert t.get_write_buffer_size() == 0


async def test_write_to_a_reset_peer_gives_oserror() -> None:
    errors = capture_errors()
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    t.pause_reading()  # the reset is not noticed by a read
    reset(peer)
    await asyncio.sleep(0.02)
    t.write(b"into the void")
    exc = await proto.wait_lost()
    assert isinstance(exc, OSError)
    assert errors == []


# ---------------------------------------------------------------------------
# EOF


async def test_eof_received_falsy_closes() -> None:
    ours, peer = tcp_pair()
    proto = Proto(eof_result=False)
    t = make_transport(ours, proto)
    await send(peer, b"last words")
    peer.shutdown(socket.SHUT_WR)
    assert await proto.wait_lost() is None
    assert proto.eofs == 1
    assert bytes(proto.received) == b"last words"
    assert t.is_closing()
    assert await read_until_eof(peer) == b""
    peer.close()


async def test_eof_received_truthy_keeps_the_write_side_open() -> None:
    ours, peer = tcp_pair()
    proto = BufProto(eof_result=True)
    t = make_transport(ours, proto)
    peer.shutdown(socket.SHUT_WR)
    await until(lambda: proto.eofs == 1)
    await asyncio.sleep(0.02)
    assert not proto.lost.done()
    assert not t.is_closing()
    t.write(b"reply after eof")
    assert await read_exactly(peer, 15) == b"reply after eof"
    t.close()
    assert await read_until_eof(peer) == b""
    assert await proto.wait_lost() is None
    assert proto.eofs == 1
    peer.close()


@pytest.mark.parametrize(
    "impl",
    [
        # after eof_received() returns true, resume_reading() is a no-op: no
        # second eof_received() (asyncio only removes the reader)
        "compiled",
        "asyncio",
    ],
)
async def test_resume_reading_after_eof_does_not_repeat_eof_received(impl: str) -> None:
    ours, peer = tcp_pair()
    proto = Proto(eof_result=True)
    t = await open_transport(impl, ours, proto)
    peer.shutdown(socket.SHUT_WR)
    await until(lambda: proto.eofs == 1)
    t.resume_reading()  # e.g. a protocol whose buffer just drained
    await asyncio.sleep(0.05)
    assert proto.eofs == 1
    t.close()
    await proto.wait_lost()
    peer.close()


async def test_write_eof_after_the_queue_drains() -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    data = pattern(BIG)
    t.write(data)
    assert t.get_write_buffer_size() > 0
    t.write_eof()
    with pytest.raises(RuntimeError):
        t.write(b"more")
    with pytest.raises(RuntimeError):
        t.writelines([b"more"])
    t.write_eof()  # twice: no-op
    assert not t.is_closing()
    # the peer sees every byte, then EOF, while our read side stays open
    assert await read_until_eof(peer) == data
    await send(peer, b"the peer still talks")
    await until(lambda: bytes(proto.received) == b"the peer still talks")
    peer.shutdown(socket.SHUT_WR)
    assert await proto.wait_lost() is None  # eof_received() -> None closes
    assert proto.eofs == 1
    peer.close()


async def test_write_eof_with_nothing_queued_is_immediate() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    t.write(b"short")
    t.write_eof()
    assert await read_until_eof(peer) == b"short"
    assert not proto.lost.done()
    t.close()
    assert await proto.wait_lost() is None
    peer.close()


# ---------------------------------------------------------------------------
# protocol exceptions are reported and close the connection


def _raising(base: type[Common], name: str) -> Any:
    """A ``base`` protocol whose method ``name`` raises Boom(name)."""

    def fail(self: Any, *args: Any) -> Any:
        raise Boom(name)

    return type(f"Bad_{name}", (base,), {name: fail})()


@pytest.mark.parametrize(
    ("base", "name"),
    [
        (Proto, "data_received"),
        (BufProto, "buffer_updated"),
        (BufProto, "get_buffer"),
        (Proto, "eof_received"),
    ],
)
async def test_exception_in_a_callback_is_reported_and_closes(
    base: type[Common], name: str
) -> None:
    errors = capture_errors()
    ours, peer = tcp_pair()
    proto = _raising(base, name)
    t = make_transport(ours, proto)
    if name == "eof_received":
        peer.shutdown(socket.SHUT_WR)
    else:
        await send(peer, b"x")
    exc = await proto.wait_lost()
    assert isinstance(exc, Boom)
    assert [(e["exception"], e["transport"], e["protocol"]) for e in errors] == [(exc, t, proto)]
    assert name in errors[0]["message"]
    assert await read_until_eof(peer) == b""  # and the connection is closed
    peer.close()


async def test_exception_in_connection_made_is_reported() -> None:
    class Bad(Proto):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            raise Boom("connection_made")

    errors = capture_errors()
    ours, peer = tcp_pair()
    proto = Bad()
    t = make_transport(ours, proto)  # does not raise: reported instead
    assert proto.made == 1
    assert t.is_closing()
    exc = await proto.wait_lost()
    assert isinstance(exc, Boom)
    assert [(e["exception"], e["transport"]) for e in errors] == [(exc, t)]
    assert await read_until_eof(peer) == b""
    assert poller().registered == 0
    peer.close()


async def test_exception_in_pause_writing_is_reported_but_keeps_the_connection() -> None:
    class Bad(Proto):
        def pause_writing(self) -> None:
            super().pause_writing()
            raise Boom("pause_writing")

    errors = capture_errors()
    ours, peer = tcp_pair(small=True)
    proto = Bad()
    t = make_transport(ours, proto)
    data = pattern(BIG)
    t.write(data)  # does not raise
    assert proto.paused == 1
    assert [type(e["exception"]) for e in errors] == [Boom]
    assert "pause_writing" in errors[0]["message"]
    assert not t.is_closing()
    assert await read_exactly(peer, BIG) == data
    t.close()
    assert await proto.wait_lost() is None
    peer.close()


# An exception from connection_lost() reaches the loop's handler, and the
# transport's descriptor and the poller's epoll instance are still released
# (the next transport on the loop is watched again).
async def test_exception_in_connection_lost_is_reported(
    no_resource_warnings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Bad(Proto):
        def connection_lost(self, exc: BaseException | None) -> None:
            super().connection_lost(exc)
            raise Boom("connection_lost")

    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    loop = asyncio.get_running_loop()
    errors = capture_errors()
    base = epoll_fds()
    ours, peer = tcp_pair()
    proto = Bad()
    t = make_transport(ours, proto)
    fd = t.fd
    t.close()
    await proto.wait_lost()
    await until(lambda: len(errors) >= 1)
    await asyncio.sleep(0.01)
    peer.close()
    assert not fd_is_open(fd)
    assert poller().registered == 0
    assert epoll_fds() == base
    # the loop watches no descriptor that is gone
    selector = getattr(loop, "_selector", None)
    if selector is not None:
        assert all(fd_is_open(key) for key in selector.get_map())
    assert [str(u.exc_value) for u in unraisable] == []
    # asyncio reports it as an error in the connection_lost callback
    assert [type(e.get("exception")) for e in errors] == [Boom]


# ---------------------------------------------------------------------------
# extra info and the socket


async def test_get_extra_info() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    assert t.get_extra_info("peername") == peer.getsockname()
    assert t.get_extra_info("sockname") == peer.getpeername()
    assert t.get_extra_info("peername")[0] == "127.0.0.1"
    assert t.get_extra_info("no such thing") is None
    assert t.get_extra_info("no such thing", 42) == 42
    assert t.get_extra_info("sslcontext", default="dflt") == "dflt"
    t.close()
    await proto.wait_lost()
    peer.close()


@pytest.mark.parametrize(
    "impl",
    [
        # peername and sockname are read when the transport starts, as
        # asyncio does: a reset peer still has its address
        "compiled",
        "asyncio",
    ],
)
async def test_peername_survives_a_reset(impl: str) -> None:
    seen: list[Any] = []

    class Logs(Proto):
        def connection_lost(self, exc: BaseException | None) -> None:
            seen.append(self.transport.get_extra_info("peername"))
            super().connection_lost(exc)

    ours, peer = tcp_pair()
    address = peer.getsockname()
    proto = Logs()
    t = await open_transport(impl, ours, proto)
    reset(peer)
    assert isinstance(await proto.wait_lost(), OSError)
    assert seen == [address]
    assert t.get_extra_info("peername") == address


async def test_socket_extra_info_is_usable_and_closed_once(no_resource_warnings: None) -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    fd = t.fd
    sock = t.get_extra_info("socket")
    assert isinstance(sock, socket.socket)
    assert t.get_extra_info("socket") is sock  # made once
    assert sock.fileno() == fd
    assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    assert sock.getpeername() == peer.getsockname()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    # the transport still works with the socket object around
    t.write(b"ping")
    assert await read_exactly(peer, 4) == b"ping"

    t.close()
    assert await proto.wait_lost() is None
    assert t.fd == -1
    assert sock.fileno() == -1  # the transport closed it through the socket
    assert not fd_is_open(fd)
    assert t.get_extra_info("socket") is None
    # the number is free again: take it, and check that dropping the socket
    # object does not close it a second time (it would close our file)
    reused = os.open(os.devnull, os.O_RDONLY)
    try:
        del sock
        gc.collect()
        assert fd_is_open(reused)
    finally:
        os.close(reused)
    peer.close()


async def test_descriptor_closed_once_without_socket_extra_info(
    no_resource_warnings: None,
) -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    fd = t.fd
    t.abort()
    assert fd_is_open(fd)  # closed with connection_lost, not before
    await proto.wait_lost()
    assert not fd_is_open(fd)
    reused = os.open(os.devnull, os.O_RDONLY)
    try:
        t.close()
        t.abort()
        del t
        gc.collect()
        assert fd_is_open(reused)
    finally:
        os.close(reused)
    peer.close()


# ---------------------------------------------------------------------------
# Listener


async def test_listener_accepts_a_burst(no_resource_warnings: None) -> None:
    loop = asyncio.get_running_loop()
    p = poller()
    base_fds, base_epoll = len(open_fds()), epoll_fds()
    count = 200
    protos: list[Proto] = []

    def factory() -> Proto:
        proto = Proto()
        protos.append(proto)
        return proto

    lsock = listening_socket()
    listener = transports.compiled.Listener(p, lsock.fileno(), factory, 256)
    selector = loop._selector  # type: ignore[attr-defined]
    # the loop watches the listening socket itself; the set holds connections
    assert p.registered == 0 and lsock.fileno() in selector.get_map()
    assert epoll_fds() == base_epoll + 1

    clients = []
    for _ in range(count):
        c = new_socket()
        c.setblocking(False)
        clients.append(c)
    await asyncio.wait_for(
        asyncio.gather(*(loop.sock_connect(c, lsock.getsockname()) for c in clients)), TIMEOUT
    )
    await until(lambda: len(protos) == count)
    assert all(proto.made == 1 and proto.transport is not None for proto in protos)
    assert p.registered == count
    assert {proto.transport.get_extra_info("peername") for proto in protos} == {
        c.getsockname() for c in clients
    }
    # nodelay=True by default on accepted TCP sockets
    sample = protos[0].transport.get_extra_info("socket")
    assert sample.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    del sample

    # every connection works
    for i, proto in enumerate(protos):
        proto.transport.write(b"%d;" % i)
    by_peer = {proto.transport.get_extra_info("peername"): proto for proto in protos}
    for c in clients:
        i = protos.index(by_peer[c.getsockname()])
        expected = b"%d;" % i
        assert await read_exactly(c, len(expected)) == expected

    for c in clients:
        c.close()
    await asyncio.wait_for(asyncio.gather(*(proto.wait_lost() for proto in protos)), TIMEOUT)
    assert all(proto.lost_calls == [None] for proto in protos)
    assert p.registered == 0 and lsock.fileno() in selector.get_map()
    listener.close()
    listener.close()  # twice: no-op
    assert lsock.fileno() not in selector.get_map()
    assert epoll_fds() == base_epoll
    lsock.close()
    gc.collect()
    assert len(open_fds()) == base_fds


async def test_listener_nodelay_off_and_a_failing_factory() -> None:
    errors = capture_errors()
    protos: list[Proto] = []
    calls = 0

    def factory() -> Proto:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Boom("factory")
        proto = Proto()
        protos.append(proto)
        return proto

    lsock = listening_socket()
    listener = transports.compiled.Listener(poller(), lsock.fileno(), factory, nodelay=False)
    first = await connect_client(lsock)
    # the factory failed: reported, and that connection closed
    assert await read_until_eof(first) == b""
    assert [type(e["exception"]) for e in errors] == [Boom]

    second = await connect_client(lsock)
    await until(lambda: len(protos) == 1)
    sock = protos[0].transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    del sock
    protos[0].transport.close()
    await protos[0].wait_lost()
    listener.close()
    lsock.close()
    first.close()
    second.close()
    assert poller().registered == 0


async def test_a_server_with_one_connection_is_watched_like_a_client() -> None:
    """The listener is not in the set, so a server's lone connection is
    watched by the loop itself; a second connection hands the watch back to
    the set, and its leaving hands it back to the one left."""
    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    p = poller()
    protos: list[BufProto] = []

    def factory() -> BufProto:
        protos.append(BufProto())
        return protos[-1]

    lsock = listening_socket()
    listener = transports.compiled.Listener(p, lsock.fileno(), factory)
    one = await connect_client(lsock)
    await until(lambda: len(protos) == 1)
    fd = protos[0].transport.get_extra_info("socket").fileno()
    assert p.registered == 1 and p.watched == fd
    assert fd in selector.get_map() and lsock.fileno() in selector.get_map()
    await send(one, b"one;")
    await until(lambda: protos[0].received == b"one;")

    two = await connect_client(lsock)
    await until(lambda: len(protos) == 2)
    assert p.registered == 2 and p.watched == p.epfd
    await send(two, b"two;")
    await until(lambda: protos[1].received == b"two;")
    two.close()
    await protos[1].wait_lost()
    await send(one, b"three;")  # the set learns which one is left alone
    await until(lambda: protos[0].received == b"one;three;")
    assert p.watched == fd
    await send(one, b"four;")
    await until(lambda: protos[0].received == b"one;three;four;")

    listener.close()
    assert lsock.fileno() not in selector.get_map() and p.watched == fd
    await send(one, b"five;")  # accepted connections outlive the listener
    await until(lambda: protos[0].received == b"one;three;four;five;")
    protos[0].transport.close()
    await protos[0].wait_lost()
    lsock.close()
    one.close()
    assert p.registered == 0


async def test_listener_out_of_descriptors_pauses_then_resumes() -> None:
    """EMFILE on accept: reported once, the loop stops watching the listener
    (no spinning on a connection it cannot take) and resumes later."""
    import resource

    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    errors = capture_errors()
    protos: list[Proto] = []

    def factory() -> Proto:
        protos.append(Proto())
        return protos[-1]

    lsock = listening_socket()
    listener = transports.compiled.Listener(poller(), lsock.fileno(), factory)
    client = new_socket()
    client.setblocking(False)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    fillers = []  # take every free number below the limit
    try:
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        await asyncio.wait_for(loop.sock_connect(client, lsock.getsockname()), TIMEOUT)
        await until(lambda: len(errors) == 1)
        assert errors[0]["message"] == "socket.accept() out of system resource"
        assert isinstance(errors[0]["exception"], OSError)
        assert errors[0]["exception"].errno == errno.EMFILE
        assert lsock.fileno() not in selector.get_map() and protos == []
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    listener._resume_accepting()  # what the loop calls a second later
    assert lsock.fileno() in selector.get_map()
    await until(lambda: len(protos) == 1)
    assert len(errors) == 1
    protos[0].transport.write(b"taken")
    assert await read_exactly(client, 5) == b"taken"
    protos[0].transport.close()
    await protos[0].wait_lost()
    listener.close()
    lsock.close()
    client.close()


async def test_exception_in_connection_made_from_the_listener_is_reported() -> None:
    errors = capture_errors()
    protos: list[Proto] = []

    class Bad(Proto):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            raise Boom("connection_made")

    def factory() -> Proto:
        proto = Bad()
        protos.append(proto)
        return proto

    lsock = listening_socket()
    listener = transports.compiled.Listener(poller(), lsock.fileno(), factory)
    client = await connect_client(lsock)
    await until(lambda: len(protos) == 1)
    exc = await protos[0].wait_lost()
    assert isinstance(exc, Boom)
    assert [e["exception"] for e in errors] == [exc]
    assert await read_until_eof(client) == b""
    listener.close()
    lsock.close()
    client.close()


async def test_create_server_uses_the_compiled_transports() -> None:
    loop = asyncio.get_running_loop()

    class Echo(Proto):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.transport.write(data)

    protos: list[Echo] = []

    def factory() -> Echo:
        proto = Echo()
        protos.append(proto)
        return proto

    server = await transports.create_server(loop, factory, "127.0.0.1", 0)
    assert isinstance(server, transports.CompiledServer)
    assert server.is_serving()
    assert server.get_loop() is loop
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    writer.write(b"echo me")
    assert await asyncio.wait_for(reader.readexactly(7), TIMEOUT) == b"echo me"
    assert type(protos[0].transport) is transports.compiled.Transport
    server.close()
    assert not server.is_serving()
    await asyncio.wait_for(server.wait_closed(), TIMEOUT)
    # accepted connections stay open after the server closes
    writer.write(b"again")
    assert await asyncio.wait_for(reader.readexactly(5), TIMEOUT) == b"again"
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
    await protos[0].wait_lost()
    assert poller().registered == 0


# ---------------------------------------------------------------------------
# leaks


async def test_no_leaks_after_every_kind_of_ending(no_resource_warnings: None) -> None:
    p = poller()
    base_fds, base_epoll = len(open_fds()), epoll_fds()
    assert p.registered == 0

    endings = ["close", "abort", "peer-eof", "peer-reset", "close-queued", "error"]
    rounds = []
    for ending in endings * 3:
        ours, peer = tcp_pair(small=True)

        class P(BufProto):
            def buffer_updated(self, nbytes: int) -> None:
                super().buffer_updated(nbytes)
                if bytes(self.received) == b"boom":
                    raise Boom

        proto = P()
        t = make_transport(ours, proto)
        if ending in ("close-queued",):
            t.write(pattern(BIG))
        rounds.append((ending, t, peer, proto))
    assert p.registered == len(rounds)
    assert epoll_fds() == base_epoll + 1

    errors = capture_errors()
    for ending, t, peer, _ in rounds:
        if ending.startswith("close"):
            t.close()
        elif ending == "abort":
            t.abort()
        elif ending == "peer-eof":
            peer.shutdown(socket.SHUT_WR)
        elif ending == "peer-reset":
            reset(peer)
        else:
            await send(peer, b"boom")
    for ending, _, peer, _ in rounds:
        if ending == "close-queued":
            assert len(await read_until_eof(peer)) == BIG
    results = await asyncio.wait_for(
        asyncio.gather(*(proto.wait_lost() for _, _, _, proto in rounds)), TIMEOUT
    )
    for (ending, t, _, proto), exc in zip(rounds, results, strict=True):
        assert proto.lost_calls == [exc]
        assert t.fd == -1
        if ending == "peer-reset":
            assert isinstance(exc, OSError)
        elif ending == "error":
            assert isinstance(exc, Boom)
        else:
            assert exc is None
    assert len(errors) == endings.count("error") * 3

    for _, _, peer, _ in rounds:
        peer.close()
    del rounds, t, proto
    gc.collect()
    assert p.registered == 0
    assert epoll_fds() == base_epoll  # the poller closed its epoll instance
    assert len(open_fds()) == base_fds

    # and opens a new one when needed again
    ours, peer = tcp_pair()
    proto2 = Proto()
    t2 = make_transport(ours, proto2)
    assert epoll_fds() == base_epoll + 1
    await send(peer, b"again")
    await until(lambda: bytes(proto2.received) == b"again")
    t2.close()
    await proto2.wait_lost()
    peer.close()
    assert epoll_fds() == base_epoll
    assert len(open_fds()) == base_fds


# A transport left open when its loop is dropped goes away quietly with it
# (the poller does not call into a closed or half torn-down loop).
def test_transport_left_open_is_collected_with_its_loop_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    ours, peer = tcp_pair()
    fds: list[int] = []

    async def leave_open() -> None:
        t = make_transport(ours, Proto())
        t.pause_reading()
        fds.append(t.fd)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(leave_open())
    finally:
        loop.close()
    del loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    peer.close()
    assert not fd_is_open(fds[0])  # the descriptor went with the transport
    assert [repr(u.exc_value) for u in unraisable] == []


# ---------------------------------------------------------------------------
# writes from protocol callbacks are gathered until the batch ends


class Replier(Proto):
    """On each received chunk, runs ``reply(transport)`` and records the
    write buffer size seen right after it (inside the callback)."""

    def __init__(self, reply: Callable[[Any], None]) -> None:
        super().__init__()
        self.reply = reply
        self.size_inside: list[int] = []

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.reply(self.transport)
        self.size_inside.append(self.transport.gathered)


async def test_a_callback_in_a_dispatch_of_one_connection_sends_its_first_write_at_once() -> None:
    """A reply to a read of one connection waits for nothing: it reaches the
    kernel inside the callback; a second write of the same dispatch is
    gathered and leaves when the dispatch ends."""
    ours, peer = tcp_pair()
    proto = Replier(lambda t: t.write(b"reply"))
    t = make_transport(ours, proto)
    for i in range(3):
        await send(peer, b"go%d" % i)
        assert await read_exactly(peer, 5) == b"reply"
    assert proto.size_inside == [0, 0, 0]
    t.close()
    await proto.wait_lost()
    peer.close()

    ours, peer = tcp_pair()
    proto = Replier(lambda t: (t.write(b"first"), t.write(b"second")))
    t = make_transport(ours, proto)
    await send(peer, b"go")
    assert await read_exactly(peer, 11) == b"firstsecond"
    assert proto.size_inside == [6]
    t.close()
    await proto.wait_lost()
    peer.close()


async def test_a_gathered_write_is_kept_as_is_until_a_second_one() -> None:
    first, second = pattern(1000, seed=1), pattern(500, seed=2)
    extra_refs: list[int] = []

    def reply(t: Any) -> None:
        t.write(b"head")  # at once: what follows in this dispatch is gathered
        before = sys.getrefcount(first)
        t.write(first)
        extra_refs.append(sys.getrefcount(first) - before)  # gathered as is
        t.write(second)
        extra_refs.append(sys.getrefcount(first) - before)  # now copied with the second

    ours, peer = tcp_pair()
    proto = Replier(reply)
    t = make_transport(ours, proto)
    await send(peer, b"go")
    assert await read_exactly(peer, 1504) == b"head" + first + second
    assert extra_refs == [1, 0]
    assert proto.size_inside == [1500]
    t.close()
    await proto.wait_lost()


async def test_flush_offers_the_gathered_writes_at_once() -> None:
    """flush() hands gathered writes to the kernel inside the batch; what the
    kernel refuses becomes the counted backlog (the hub's slow-consumer check)."""
    seen: list[tuple[int, int]] = []

    def reply(t: Any) -> None:
        t.write(b"head")  # at once: what follows in this dispatch is gathered
        t.write(b"x" * 1000)
        before = (t.gathered, t.get_write_buffer_size())
        t.flush()
        seen.extend([before, (t.gathered, t.get_write_buffer_size())])
        t.flush()  # nothing gathered: no-op

    ours, peer = tcp_pair()
    proto = Replier(reply)
    t = make_transport(ours, proto)
    await send(peer, b"go")
    assert await read_exactly(peer, 1004) == b"head" + b"x" * 1000
    assert seen == [(1000, 0), (0, 0)]
    t.close()
    await proto.wait_lost()


async def test_the_unsent_tail_of_a_bytes_write_is_queued_without_a_copy() -> None:
    ours, peer = tcp_pair(small=True)
    proto = Proto()
    t = make_transport(ours, proto)
    t.set_write_buffer_limits(high=BIG * 4)
    for seed, write, head in (
        (1, t.write, b""),
        (2, lambda d: t.writelines([b"head", d]), b"head"),
    ):
        data = pattern(BIG, seed=seed)
        before = sys.getrefcount(data)
        write(data)
        assert 0 < t.get_write_buffer_size() < BIG  # the kernel took a part
        assert sys.getrefcount(data) == before + 1  # the rest is the object itself
        assert await read_exactly(peer, len(head) + BIG) == head + data
        await until(lambda: t.get_write_buffer_size() == 0)
        assert sys.getrefcount(data) == before
    t.close()
    await proto.wait_lost()
    peer.close()


async def test_small_writes_from_a_callback_go_out_together_in_order() -> None:
    parts = [pattern(20, seed=i) for i in range(1000)]  # 20 KB in all

    def reply(t: Any) -> None:
        for part in parts:
            t.write(part)

    ours, peer = tcp_pair()
    proto = Replier(reply)
    t = make_transport(ours, proto)
    await send(peer, b"go")
    assert await read_exactly(peer, 20_000) == b"".join(parts)
    # inside the callback only the first write had reached the kernel: the
    # rest was gathered
    assert proto.size_inside == [19_980]
    assert t.get_write_buffer_size() == 0
    t.close()
    await proto.wait_lost()


async def test_gather_writes_gathers_the_first_write_of_the_turn_too() -> None:
    """After gather_writes() (a read that brought several messages), the
    first small write waits with the rest: all leave in one send when the
    dispatch ends. The next read's first write goes at once again."""
    calls = 0

    def reply(t: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            t.gather_writes()
        t.write(b"one")
        t.write(b"two")

    ours, peer = tcp_pair()
    proto = Replier(reply)
    t = make_transport(ours, proto)
    await send(peer, b"go")
    assert await read_exactly(peer, 6) == b"onetwo"
    await send(peer, b"go")
    assert await read_exactly(peer, 6) == b"onetwo"
    # inside the callback: both writes gathered the first time, only the
    # second the next time (the first went to the kernel at once)
    assert proto.size_inside == [6, 3]
    t.close()
    await proto.wait_lost()


async def test_gathered_writes_flush_at_the_cap_and_keep_order_with_large_ones() -> None:
    small = [pattern(1000, seed=i * 1000) for i in range(100)]  # 100 KB: past the 64 KiB cap
    large = pattern(40_000, seed=7)

    def reply(t: Any) -> None:
        for part in small[:10]:
            t.write(part)
        t.write(large)  # at or over the gathering limit: goes out at once, after the 10
        for part in small[10:]:
            t.write(part)

    ours, peer = tcp_pair()
    proto = Replier(reply)
    t = make_transport(ours, proto)
    await send(peer, b"go")
    expected = b"".join(small[:10]) + large + b"".join(small[10:])
    assert await read_exactly(peer, len(expected)) == expected
    # 90 KB gathered after the large write: flushed once past 64 KiB, so
    # less than all of it was still waiting when the callback returned
    assert proto.size_inside[0] < 90_000
    t.close()
    await proto.wait_lost()


async def test_abort_in_a_callback_still_hands_gathered_writes_to_the_kernel() -> None:
    def reply(t: Any) -> None:
        t.write(b"last words")
        t.abort()

    ours, peer = tcp_pair()
    proto = Replier(reply)
    make_transport(ours, proto)
    await send(peer, b"go")
    assert await read_until_eof(peer) == b"last words"
    assert await proto.wait_lost() is None


async def test_close_in_a_callback_sends_gathered_writes_then_eof() -> None:
    def reply(t: Any) -> None:
        t.write(b"a" * 100)
        t.writelines([b"b" * 100, bytearray(b"c" * 100)])
        t.write(b"d" * 100)
        t.close()

    ours, peer = tcp_pair()
    proto = Replier(reply)
    make_transport(ours, proto)
    await send(peer, b"go")
    assert await read_until_eof(peer) == b"a" * 100 + b"b" * 100 + b"c" * 100 + b"d" * 100
    assert await proto.wait_lost() is None


async def test_gathered_writes_past_a_full_kernel_buffer_wait_for_epollout() -> None:
    chunk = pattern(8000)
    count = 8  # 64 KB: more than the small kernel buffers hold

    def reply(t: Any) -> None:
        for _ in range(count):
            t.write(chunk)

    ours, peer = tcp_pair(small=True)
    proto = Replier(reply)
    t = make_transport(ours, proto)
    await send(peer, b"go")
    await asyncio.sleep(0.05)  # the peer does not read yet: the rest stays queued
    assert await read_exactly(peer, len(chunk) * count) == chunk * count
    await until(lambda: t.get_write_buffer_size() == 0)
    t.close()
    await proto.wait_lost()


def as_task(reply: Callable[[Any], None]) -> Callable[[Any], None]:
    """``reply`` run as a coroutine woken inside the read's callback runs
    (tether.aio.waiter): with a task current on the loop."""

    def run(t: Any) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(asyncio.sleep(0))
        asyncio.tasks._enter_task(loop, task)
        try:
            reply(t)
        finally:
            asyncio.tasks._leave_task(loop, task)

    return run


async def test_a_coroutine_woken_in_a_dispatch_of_one_connection_sends_at_once() -> None:
    ours, peer = tcp_pair()
    proto = Replier(as_task(lambda t: t.write(b"reply")))
    t = make_transport(ours, proto)
    await send(peer, b"go")
    assert await read_exactly(peer, 5) == b"reply"
    assert proto.size_inside == [0]  # not gathered: it went to the kernel at once
    t.close()
    await proto.wait_lost()
    peer.close()


@pytest.mark.parametrize("writer", ["callback", "woken coroutine"])
async def test_replies_in_a_dispatch_of_several_connections_leave_together(writer: str) -> None:
    def reply(t: Any) -> None:
        t.write(b"reply")

    pairs = [tcp_pair() for _ in range(2)]
    protos = [Replier(reply if writer == "callback" else as_task(reply)) for _ in pairs]
    ts = [make_transport(ours, proto) for (ours, _), proto in zip(pairs, protos, strict=True)]
    for _, peer in pairs:
        peer.send(b"go")  # both ready before the loop next polls: one batch
    for _, peer in pairs:
        assert await read_exactly(peer, 5) == b"reply"
    assert [proto.size_inside for proto in protos] == [[5], [5]]  # gathered, sent with the batch
    for t, proto in zip(ts, protos, strict=True):
        t.close()
        await proto.wait_lost()
    for _, peer in pairs:
        peer.close()


async def test_a_coroutine_burst_goes_out_first_at_once_then_together() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    await asyncio.sleep(0)  # a new loop turn
    t.write(b"first")
    assert t.gathered == 0  # a first write goes straight to the kernel
    for i in range(1000):
        t.write(b"%04d" % i)
    # the rest of the burst waits for the loop's next turn, gathered; that
    # is not a backlog (the kernel was not offered it yet)
    assert t.gathered == 4000
    assert t.get_write_buffer_size() == 0
    expected = b"first" + b"".join(b"%04d" % i for i in range(1000))
    assert await read_exactly(peer, len(expected)) == expected
    assert t.get_write_buffer_size() == 0
    # a later turn: the first write goes out at once again
    assert t.gathered == 0
    await asyncio.sleep(0)
    t.write(b"again")
    assert t.gathered == 0
    assert await read_exactly(peer, 5) == b"again"
    t.close()
    await proto.wait_lost()


async def test_a_gathered_burst_then_close_or_write_eof_keeps_everything() -> None:
    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    await asyncio.sleep(0)
    t.write(b"a")
    t.write(b"b")
    t.write_eof()  # after the gathered bytes
    assert await read_until_eof(peer) == b"ab"
    t.close()
    await proto.wait_lost()

    ours, peer = tcp_pair()
    proto = Proto()
    t = make_transport(ours, proto)
    await asyncio.sleep(0)
    t.write(b"a")
    t.write(b"b")
    t.close()
    assert await read_until_eof(peer) == b"ab"
    assert await proto.wait_lost() is None


class LowWaterProto(BufProto):
    """Asks for a read low-water mark (``asks``, one per read, None: ask for
    nothing) and records SO_RCVLOWAT as the kernel has it before each read."""

    def __init__(self, asks: list[int | None]) -> None:
        super().__init__()
        self.asks = asks
        self.seen: list[int] = []

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        sock = self.transport.get_extra_info("socket")
        self.seen.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))
        ask = self.asks.pop(0) if self.asks else None
        if ask is not None:
            self.transport.set_read_low_water(ask)


async def test_set_read_low_water_holds_the_wake_up_for_one_read_then_lapses() -> None:
    """socket(7): with SO_RCVLOWAT at n, epoll reports the socket readable
    only once n bytes are in. The mark asked for during a read is set after
    it (capped at 256 KiB) and lapses after the next read unless asked
    again, so a protocol that stops asking is back on the default of 1."""
    ours, peer = tcp_pair()
    proto = LowWaterProto([5000, None, 10 * 1024 * 1024, 0])
    t = make_transport(ours, proto)
    await send(peer, b"a")
    await until(lambda: len(proto.received) == 1)
    sock = t.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 5000
    # 4,999 bytes do not wake the transport; the 5,000th does
    await send(peer, b"b" * 4999)
    await asyncio.sleep(0.2)
    assert len(proto.received) == 1
    await send(peer, b"c")
    await until(lambda: len(proto.received) == 5001)
    # that read asked for nothing: back to the default
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
    await send(peer, b"d")
    await until(lambda: len(proto.received) == 5002)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 256 * 1024
    # a FIN still wakes it with fewer bytes in: the 0 asked for by this read
    # puts the default back, and end of file arrives
    await send(peer, b"e")
    peer.shutdown(socket.SHUT_WR)
    await until(lambda: proto.eofs == 1)
    assert bytes(proto.received[-1:]) == b"e"
    assert proto.seen[:3] == [1, 5000, 1]
    with pytest.raises(ValueError, match=">= 0"):
        t.set_read_low_water(-1)
    t.close()
    await proto.wait_lost()
