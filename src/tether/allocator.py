"""Tune the C allocator and Python's garbage collector for a server.

**malloc.**
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

**The garbage collector.** A server that accepts connections by the
thousand allocates many container objects per handshake (the request, its
headers, the connection and its protocol state). CPython 3.11 runs a young
collection every 700 net allocations of such objects, and each one that
promotes survivors pulls older collections along, which scan every live
connection: measured with ``wsload -i -c 10000`` against ``tether echo``,
the collector took about 15% of the handshake rate (7.9-9.3k/s with the
defaults, 9.6-10.8k/s without collections). :func:`tune_gc` moves what
start-up created out of the collector's way (``gc.freeze()``) and collects
the young generation every 10,000 allocations instead (the direction
CPython 3.13 took when it raised the threshold). Reference cycles are still
collected, a little later. ``TETHER_NO_GC_TUNING=1`` turns it off.

Both are process-wide, so the library never calls them on import; the server
commands (``tether echo``, ``tether serve``, ``tether demo``) call both at
start-up, through :func:`tune_server`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys

__all__ = [
    "DEFAULT_TOP_PAD",
    "GC_THRESHOLD",
    "MMAP_THRESHOLD",
    "tune_gc",
    "tune_malloc",
    "tune_server",
]

#: Freed memory kept mapped for reuse: 16 MiB (a few large messages' worth).
DEFAULT_TOP_PAD = 16 * 1024 * 1024
#: Allocations up to this size come from the heap, not from mmap().
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Net allocations of container objects between two young collections.
GC_THRESHOLD = 10_000
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


def tune_gc(threshold: int = GC_THRESHOLD) -> bool:
    """Freeze what exists now (start-up's modules, classes, constants) out of
    the collector's way and collect the young generation every
    ``threshold`` allocations (the older ones keep their ratios, 10 and 10).

    Call it once, after imports and configuration, before serving. Returns
    False, changing nothing, if ``TETHER_NO_GC_TUNING`` is set or the
    collector is disabled.
    """
    if os.environ.get("TETHER_NO_GC_TUNING") or not gc.isenabled():
        return False
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 10, 10)
    return True


def tune_server() -> None:
    """:func:`tune_malloc` and :func:`tune_gc`: what the server commands call."""
    tune_malloc()
    tune_gc()
