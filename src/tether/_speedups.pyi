"""Type stub for the C extension tether._speedups (see _speedups.c).

The compiled twins of :func:`tether.protocol.frames.apply_mask`,
:func:`~tether.protocol.frames.build_frame`,
:func:`~tether.protocol.frames.scan_frames` and
:func:`~tether.protocol.frames.masking_key`.
"""

from _typeshed import ReadableBuffer

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
