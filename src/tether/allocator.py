"""Tune the C allocator for a server that receives large messages.

Every incoming message becomes a new ``bytes`` object. With glibc's default
settings, the memory of a large one (say 1 MiB) is handed back to the kernel
when it is freed (the heap top is trimmed beyond 128 KiB of free space), so
the next message of that size starts on fresh pages: about 256 page faults
per MiB, which cost more than receiving, unmasking and echoing the message
together (measured with ``perf stat -e page-faults`` on ``tether echo`` under
``wsload -c 4 -s 1048576``: 190k faults/s and about half the throughput).

:func:`tune_malloc` makes glibc serve such buffers from the heap (raising
``M_MMAP_THRESHOLD`` to 32 MiB, the ceiling glibc's own adaptive threshold
uses) and keep up to ``top_pad`` bytes of freed heap mapped for reuse
(``M_TOP_PAD``). The tether server commands
(``tether echo``, ``tether serve``, ``tether demo``) call it at start-up; a
program that embeds tether may call it too, or set ``MALLOC_TOP_PAD_`` in
the environment. ``TETHER_NO_MALLOC_TUNING=1`` turns it off.

It is process-wide, so the library never calls it on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["DEFAULT_TOP_PAD", "MMAP_THRESHOLD", "tune_malloc"]

#: Freed memory kept mapped for reuse: 16 MiB (a few large messages' worth).
DEFAULT_TOP_PAD = 16 * 1024 * 1024
#: Allocations up to this size come from the heap, not from mmap().
MMAP_THRESHOLD = 32 * 1024 * 1024
#: mallopt() parameter numbers in glibc's <malloc.h>.
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def tune_malloc(top_pad: int = DEFAULT_TOP_PAD) -> bool:
    """Serve large buffers from the heap and keep up to ``top_pad`` bytes of
    freed heap memory mapped for reuse.

    Returns True if the allocator was tuned: on Linux with glibc, unless
    ``TETHER_NO_MALLOC_TUNING`` is set or ``MALLOC_TOP_PAD_`` already says
    what the user wants. Elsewhere it does nothing and returns False.
    """
    if os.environ.get("TETHER_NO_MALLOC_TUNING") or "MALLOC_TOP_PAD_" in os.environ:
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TOP_PAD, top_pad))
