"""Type stub for the C extension tether._speedups (see _speedups.c).

The compiled twins of :func:`tether.protocol.frames.apply_mask`,
:func:`~tether.protocol.frames.build_frame`,
:func:`~tether.protocol.frames.scan_frames` and
:func:`~tether.protocol.frames.masking_key`, and ``ConnectionBase``, the
compiled per-message path of :class:`tether.aio.Connection`.
"""

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from _typeshed import ReadableBuffer

from tether.protocol.connection import Connection as Core

NOGIL_THRESHOLD: int

def apply_mask(data: ReadableBuffer, mask: ReadableBuffer) -> bytes: ...
def build_frame(
    first_byte: int, payload: ReadableBuffer, mask: ReadableBuffer | None = None
) -> bytes: ...
def scan_frames(
    buf: ReadableBuffer, pos: int, masked: bool, max_frame: int, rsv_allowed: int
) -> tuple[list[tuple[int, bytes]], int, tuple[int, str] | None]: ...
def masking_key() -> bytes: ...
def _kernels() -> tuple[str, ...]: ...
def _use_kernel(name: str, /) -> str: ...

class PayloadSink:
    size: int
    filled: int
    remaining: int
    def __init__(self, size: int, mask: ReadableBuffer | None = None) -> None: ...
    def feed(self, data: ReadableBuffer, start: int = 0, /) -> int: ...
    def written(self, n: int, /) -> None: ...
    def take(self) -> bytes: ...
    def peek(self, start: int, end: int, /) -> bytes: ...
    def buffer(self) -> memoryview: ...

def bind_core(core_type: type, open_state: object, /) -> None: ...

class ConnectionBase:
    core: Core | None
    transport: asyncio.Transport | None
    _message_handler: Callable[[str | bytes], Any] | None
    _scratch: memoryview
    _waiter: asyncio.Future[Any] | None
    _queue: collections.deque[Any] | None
    _lent: bool
    def get_buffer(self, sizehint: int, /) -> memoryview: ...
    def buffer_updated(self, nbytes: int, /) -> None: ...
    def send_nowait(self, message: str | bytes, /) -> None: ...
