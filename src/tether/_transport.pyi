"""Type stub for the C extension tether._transport (see _transport.c):
asyncio transports over one epoll instance per loop (Linux)."""

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from _typeshed import ReadableBuffer

class Poller:
    registered: int
    watched: int
    epfd: int
    loop: asyncio.AbstractEventLoop
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def _poll(self) -> None: ...

class Listener:
    def __init__(
        self,
        poller: Poller,
        fd: int,
        factory: Callable[[], asyncio.BaseProtocol],
        backlog: int = 100,
        nodelay: bool = True,
    ) -> None: ...
    def close(self) -> None: ...

class Transport(asyncio.Transport):
    fd: int
    gathered: int
    def __init__(self, poller: Poller, fd: int, protocol: asyncio.BaseProtocol) -> None: ...
    def write(self, data: ReadableBuffer) -> None: ...
    def flush(self) -> None: ...
    def gather_writes(self) -> None: ...
    def set_read_low_water(self, n: int, /) -> None: ...
    def writelines(self, list_of_data: Iterable[ReadableBuffer]) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
