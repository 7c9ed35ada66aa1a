"""The client's masking keys: 4 bytes, never repeated, fresh after a fork; the
compiled and the pure-Python source behave alike."""

from __future__ import annotations

import os
import sys

import pytest

from tether.protocol import accel, frames
from tether.protocol.connection import Connection, Side

SOURCES = [pytest.param(frames.masking_key, id="pure")]
if accel.SPEEDUPS:
    from tether import _speedups

    SOURCES.append(pytest.param(_speedups.masking_key, id="compiled"))


@pytest.mark.parametrize("masking_key", SOURCES)
def test_keys_are_4_random_bytes_never_repeated(masking_key: object) -> None:
    keys = [masking_key() for _ in range(5000)]  # type: ignore[operator]
    assert all(type(key) is bytes and len(key) == 4 for key in keys)
    # 5000 keys out of 2**32: a repeat would mean bytes handed out twice.
    assert len(set(keys)) == len(keys)
    # Every byte value shows up: the bytes are spread, not a counter.
    assert len({byte for key in keys for byte in key}) == 256


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork")
@pytest.mark.parametrize("masking_key", SOURCES)
def test_a_forked_child_does_not_reuse_the_parents_keys(masking_key: object) -> None:
    masking_key()  # type: ignore[operator]  # the pool is now filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, b"".join(masking_key() for _ in range(8)))  # type: ignore[operator]
        os._exit(0)
    os.close(write)
    child = b""
    while len(child) < 32:
        chunk = os.read(read, 32)
        if not chunk:
            break
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = b"".join(masking_key() for _ in range(8))  # type: ignore[operator]
    assert len(child) == 32
    assert child != parent


def test_client_core_masks_with_the_pool_or_the_given_source() -> None:
    core = Connection(Side.CLIENT)
    frame = core.encode_message(b"hello")
    assert frame[1] == 0x80 | 5
    assert frames.apply_mask(frame[6:], frame[2:6]) == b"hello"
    fixed = Connection(Side.CLIENT, mask_source=lambda n: b"\x01\x02\x03\x04"[:n])
    assert fixed.encode_message(b"hello")[2:6] == b"\x01\x02\x03\x04"
