"""The sans-I/O state machine: bytes in, events and bytes out. No sockets."""

from __future__ import annotations

import struct

import pytest

from tether.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from tether.protocol.connection import Connection, Side, State
from tether.protocol.events import Fragment, Ping, Pong
from tether.protocol.frames import Close, apply_mask, build_frame, scan_frames

MASK = b"\x01\x02\x03\x04"


def client_frame(first: int, payload: bytes) -> bytes:
    """A frame as a client sends it (masked)."""
    return build_frame(first, payload, MASK)


def server_frame(first: int, payload: bytes) -> bytes:
    """A frame as a server sends it (unmasked)."""
    return build_frame(first, payload)


def server() -> Connection:
    return Connection(Side.SERVER, max_size=1 << 20)


def client() -> Connection:
    return Connection(Side.CLIENT, max_size=1 << 20, mask_source=lambda n: MASK)


def sent_frames(conn: Connection, masked: bool = False) -> list[tuple[int, bytes]]:
    data = b"".join(conn.data_to_send())
    frames, pos, err = scan_frames(data, 0, masked, 1 << 30, 0x40)
    assert err is None and pos == len(data)
    return frames


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


# --- messages -------------------------------------------------------------


def test_text_and_binary_messages() -> None:
    conn = server()
    conn.receive_data(client_frame(0x81, "café".encode()) + client_frame(0x82, b"\x00\xff"))
    assert conn.events_received() == ["café", b"\x00\xff"]
    assert conn.events_received() == []
    assert conn.data_to_send() == []


def test_empty_messages() -> None:
    conn = server()
    conn.receive_data(client_frame(0x81, b"") + client_frame(0x82, b""))
    assert conn.events_received() == ["", b""]


def test_byte_by_byte() -> None:
    conn = server()
    data = client_frame(0x81, b"hello" * 30) + client_frame(0x82, bytes(70000))
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
    assert conn.events_received() == ["hello" * 30, bytes(70000)]


def test_fragmented_text_with_interleaved_ping() -> None:
    conn = server()
    conn.receive_data(client_frame(0x01, b"fra"))
    conn.receive_data(client_frame(0x89, b"p"))
    conn.receive_data(client_frame(0x00, b"gm"))
    conn.receive_data(client_frame(0x80, b"ent"))
    assert conn.events_received() == [Ping(b"p"), "fragment"]
    assert sent_frames(conn) == [(0x8A, b"p")]


def test_fragmented_utf8_split_inside_character() -> None:
    data = "€".encode()
    conn = server()
    conn.receive_data(client_frame(0x01, data[:1]) + client_frame(0x80, data[1:]))
    assert conn.events_received() == ["€"]


def test_fragments_mode() -> None:
    conn = Connection(Side.SERVER, fragments=True)
    conn.receive_data(client_frame(0x02, b"ab") + client_frame(0x80, b"cd"))
    conn.receive_data(client_frame(0x81, b"whole"))
    assert conn.events_received() == [
        Fragment(b"ab", False, True, False),
        Fragment(b"cd", False, False, True),
        "whole",
    ]


def test_client_reads_unmasked_frames() -> None:
    conn = client()
    conn.receive_data(server_frame(0x81, b"hi"))
    assert conn.events_received() == ["hi"]


def test_client_masks_what_it_sends() -> None:
    conn = client()
    conn.send_text("hi")
    data = b"".join(conn.data_to_send())
    assert data == b"\x81\x82" + MASK + apply_mask(b"hi", MASK)


def test_server_does_not_mask() -> None:
    conn = server()
    conn.send_binary(b"abc")
    assert conn.data_to_send() == [b"\x82\x03abc"]


# --- framing errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(0x83, b""), 1002),  # reserved opcode 3
        (client_frame(0x87, b""), 1002),  # reserved opcode 7
        (client_frame(0x8B, b""), 1002),  # reserved control opcode 11
        (client_frame(0x8F, b""), 1002),  # reserved control opcode 15
        (client_frame(0xC1, b"x"), 1002),  # RSV1 without extension
        (client_frame(0xA1, b"x"), 1002),  # RSV2
        (client_frame(0x91, b"x"), 1002),  # RSV3
        (client_frame(0x09, b""), 1002),  # fragmented ping
        (client_frame(0x89, bytes(126)), 1002),  # control frame too long
        (client_frame(0x80, b"x"), 1002),  # continuation without start
        (client_frame(0x01, b"a") + client_frame(0x81, b"b"), 1002),  # new message inside one
        (server_frame(0x81, b"unmasked"), 1002),  # server requires masking
        (client_frame(0x81, b"\xff"), 1007),  # invalid UTF-8
        (client_frame(0x88, b"\x03"), 1002),  # 1-byte close payload
        (client_frame(0x88, close_payload(999)), 1002),
        (client_frame(0x88, close_payload(1004)), 1002),
        (client_frame(0x88, close_payload(1005)), 1002),
        (client_frame(0x88, close_payload(1006)), 1002),
        (client_frame(0x88, close_payload(1015)), 1002),
        (client_frame(0x88, close_payload(1016)), 1002),
        (client_frame(0x88, close_payload(2999)), 1002),
        (client_frame(0x88, close_payload(5000)), 1002),
        (client_frame(0x88, close_payload(1000) + b"\xff"), 1007),
        (b"\x81\xff" + (1 << 63).to_bytes(8, "big") + MASK, 1002),  # 64-bit MSB set
    ],
)
def test_server_fails_bad_frames(data: bytes, code: int) -> None:
    conn = server()
    conn.receive_data(data)
    out = conn.data_to_send()
    assert out[-1] == b""  # the server closes TCP first
    frames, _, _ = scan_frames(b"".join(out), 0, False, 1 << 20, 0)
    assert frames[-1][0] == 0x88
    assert struct.unpack("!H", frames[-1][1][:2])[0] == code
    assert conn.error is not None and conn.error.code == code
    assert conn.close_expected()
    # Nothing more is processed.
    conn.receive_data(client_frame(0x81, b"after"))
    assert "after" not in conn.events_received()


def test_valid_frames_before_an_error_are_delivered() -> None:
    conn = server()
    conn.receive_data(client_frame(0x81, b"ok") + client_frame(0x83, b""))
    assert conn.events_received() == ["ok"]
    assert conn.error is not None


def test_client_fails_on_masked_frame_and_waits_for_server() -> None:
    conn = client()
    conn.receive_data(build_frame(0x81, b"x", MASK))
    out = conn.data_to_send()
    assert b"" not in out  # the client waits for the server to close TCP
    assert conn.close_expected()
    assert conn.error is not None and conn.error.code == 1002


def test_utf8_fails_fast_inside_a_frame() -> None:
    """The invalid byte is detected before the frame is complete (Autobahn 6.4.3)."""
    conn = server()
    payload = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited" * 10
    frame = client_frame(0x81, payload)
    conn.receive_data(frame[: 6 + 14])  # header + mask + up to the bad byte
    assert conn.error is not None and conn.error.code == 1007


def test_utf8_fails_fast_across_fragments() -> None:
    conn = server()
    conn.receive_data(client_frame(0x01, "κόσμε".encode()))
    assert conn.error is None
    conn.receive_data(client_frame(0x00, b"\xf4\x90"))
    assert conn.error is not None and conn.error.code == 1007


def test_partial_binary_frame_is_not_validated() -> None:
    conn = server()
    frame = client_frame(0x82, b"\xff" * 100)
    conn.receive_data(frame[:50])
    assert conn.error is None
    conn.receive_data(frame[50:])
    assert conn.events_received() == [b"\xff" * 100]


def test_partial_ping_inside_text_message_is_not_validated() -> None:
    conn = server()
    conn.receive_data(client_frame(0x01, b"a"))
    ping = client_frame(0x89, b"\xff\xfe")
    conn.receive_data(ping[:-1])
    assert conn.error is None
    conn.receive_data(ping[-1:] + client_frame(0x80, b"b"))
    assert conn.events_received() == [Ping(b"\xff\xfe"), "ab"]


def test_max_size_single_frame() -> None:
    conn = Connection(Side.SERVER, max_size=10)
    conn.receive_data(client_frame(0x82, bytes(11))[:4])  # header only: rejected early
    assert conn.error is not None and conn.error.code == 1009


def test_max_size_across_fragments() -> None:
    conn = Connection(Side.SERVER, max_size=10)
    conn.receive_data(client_frame(0x02, bytes(6)) + client_frame(0x80, bytes(6)))
    assert isinstance(conn.error, PayloadTooBig)


def test_max_fragments() -> None:
    conn = Connection(Side.SERVER, max_fragments=3)
    frames = [client_frame(0x02, b"a")] + [client_frame(0x00, b"a")] * 3
    conn.receive_data(b"".join(frames))
    assert conn.error is not None and conn.error.code == 1009


def test_no_limits() -> None:
    conn = Connection(Side.SERVER, max_size=None, max_fragments=None)
    conn.receive_data(client_frame(0x82, bytes(2_000_000)))
    assert conn.events_received() == [bytes(2_000_000)]


# --- control frames -------------------------------------------------------


def test_ping_is_answered_with_pong() -> None:
    conn = server()
    conn.receive_data(client_frame(0x89, b"hello"))
    assert conn.events_received() == [Ping(b"hello")]
    assert sent_frames(conn) == [(0x8A, b"hello")]


def test_auto_pong_off() -> None:
    conn = Connection(Side.SERVER, auto_pong=False)
    conn.receive_data(client_frame(0x89, b"x"))
    assert conn.events_received() == [Ping(b"x")]
    assert conn.data_to_send() == []
    conn.send_pong(b"x")
    assert sent_frames(conn) == [(0x8A, b"x")]


def test_unsolicited_pong_is_accepted() -> None:
    conn = server()
    conn.receive_data(client_frame(0x8A, b"beat"))
    assert conn.events_received() == [Pong(b"beat")]
    assert conn.error is None


def test_send_ping_limits() -> None:
    conn = server()
    conn.send_ping(b"x" * 125)
    with pytest.raises(ValueError, match="125"):
        conn.send_ping(b"x" * 126)


# --- closing handshake ----------------------------------------------------


def test_peer_initiated_close_on_server() -> None:
    conn = server()
    conn.receive_data(client_frame(0x88, close_payload(1000, "bye")))
    assert conn.events_received() == [Close(1000, "bye")]
    out = conn.data_to_send()
    assert out[-1] == b""
    assert scan_frames(out[0], 0, False, 200, 0)[0] == [(0x88, close_payload(1000))]
    assert conn.state is State.CLOSING
    conn.receive_eof()
    assert conn.state is State.CLOSED
    exc = conn.close_exc()
    assert isinstance(exc, ConnectionClosedOK)
    assert exc.code == 1000 and exc.reason == "bye" and exc.rcvd_then_sent


def test_close_without_code_is_echoed_empty() -> None:
    conn = server()
    conn.receive_data(client_frame(0x88, b""))
    assert conn.events_received() == [Close(1005, "")]
    assert sent_frames(conn) == [(0x88, b"")]
    assert isinstance(conn.close_exc(), ConnectionClosedOK)


def test_locally_initiated_close_on_client() -> None:
    conn = client()
    conn.send_close(1001, "going")
    assert conn.close_expected()
    assert conn.state is State.CLOSING
    with pytest.raises(InvalidState):
        conn.send_text("late")
    conn.receive_data(server_frame(0x88, close_payload(1001)))
    assert conn.data_to_send()[-1] != b""  # the client never closes TCP first
    exc = conn.close_exc()
    assert isinstance(exc, ConnectionClosedOK)
    assert exc.rcvd_then_sent is False
    assert "sent 1001 (going away) going; then received 1001 (going away)" in str(exc)


def test_server_closes_tcp_after_reply() -> None:
    conn = server()
    conn.send_close()
    assert b"" not in conn.data_to_send()
    conn.receive_data(client_frame(0x88, close_payload(1000)))
    assert conn.data_to_send() == [b""]


def test_close_code_validation() -> None:
    conn = server()
    for code in (999, 1004, 1100, 1006, 1015, 2000, 5000):
        with pytest.raises(ValueError):
            conn.send_close(code)
    with pytest.raises(ValueError, match="123"):
        conn.send_close(1000, "x" * 124)
    with pytest.raises(ValueError, match="reason"):
        conn.send_close(1005, "no")
    conn.send_close(1005)
    assert sent_frames(conn) == [(0x88, b"")]
    with pytest.raises(InvalidState):
        conn.send_close()


def test_data_after_close_is_ignored() -> None:
    conn = server()
    conn.receive_data(client_frame(0x88, close_payload(1000)) + client_frame(0x81, b"x"))
    assert conn.events_received() == [Close(1000, "")]


def test_eof_without_close_is_an_error() -> None:
    conn = server()
    conn.receive_eof()
    exc = conn.close_exc("connection lost")
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1006 and exc.reason == "connection lost"


def test_error_close_carries_cause() -> None:
    conn = server()
    conn.receive_data(client_frame(0x83, b""))
    assert conn.data_to_send()  # the close frame
    conn.receive_eof()
    exc = conn.close_exc()
    assert isinstance(exc, ConnectionClosedError)
    assert isinstance(exc.__cause__, ProtocolError)
    assert "reserved opcode 3" in str(exc)


def test_close_with_error_code_is_error() -> None:
    conn = server()
    conn.receive_data(client_frame(0x88, close_payload(1011, "oops")))
    exc = conn.close_exc()
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1011


# --- sending --------------------------------------------------------------


def test_send_fragmented() -> None:
    conn = server()
    conn.send_text("ab", fin=False)
    with pytest.raises(InvalidState):
        conn.send_text("x")
    with pytest.raises(InvalidState):
        conn.encode_message("x")
    conn.send_continuation("cd", fin=False)
    conn.send_continuation(b"ef", fin=True)
    assert sent_frames(conn) == [(0x01, b"ab"), (0x00, b"cd"), (0x80, b"ef")]
    with pytest.raises(InvalidState):
        conn.send_continuation(b"x", fin=True)


def test_encode_message() -> None:
    conn = server()
    assert conn.encode_message("hé") == b"\x81\x03h\xc3\xa9"
    assert conn.encode_message(b"\x00") == b"\x82\x01\x00"
    conn.send_close()
    with pytest.raises(InvalidState):
        conn.encode_message("x")


def test_fail_api() -> None:
    conn = server()
    conn.fail(1011, "internal error")
    frames = sent_frames(conn)
    assert frames == [(0x88, close_payload(1011, "internal error"))]
    assert conn.error is not None and conn.error.code == 1011


def test_replies_to_messages_before_an_error_go_first() -> None:
    """Strict failure: messages before the bad frame are answered, then the close."""
    conn = server()
    conn.receive_data(
        client_frame(0x81, b"first") + client_frame(0x83, b"") + client_frame(0x89, b"")
    )
    assert conn.events_received() == ["first"]
    assert conn.error is not None and conn.close_expected()
    reply = conn.encode_message("first")  # still allowed: the close is not sent yet
    frames = sent_frames(conn)
    assert frames == [(0x88, close_payload(1002, "reserved opcode 3"))]
    assert reply == b"\x81\x05first"
    with pytest.raises(InvalidState):
        conn.encode_message("late")


def test_reply_to_a_message_before_the_peers_close_goes_first() -> None:
    """RFC 6455 5.5.1: the close reply may wait until the current message is sent."""
    conn = server()
    conn.receive_data(client_frame(0x82, b"big") + client_frame(0x88, close_payload(1000)))
    assert conn.events_received() == [b"big", Close(1000, "")]
    assert conn.state is State.OPEN and conn.close_expected()
    reply = conn.encode_message(b"big")  # the echo is still allowed
    assert reply == b"\x82\x03big"
    out = conn.data_to_send()
    assert out[-1] == b""  # then the close reply, and the server closes TCP
    assert scan_frames(out[0], 0, False, 200, 0)[0] == [(0x88, close_payload(1000))]
    assert conn.state is State.CLOSING
    with pytest.raises(InvalidState):
        conn.encode_message("late")
