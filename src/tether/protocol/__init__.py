"""The sans-I/O core of tether: bytes in, events and bytes out.

Nothing in this package imports asyncio, socket, ssl, time or threading (a
test enforces it): it never reads the clock and never does I/O. It says what
to send, and when it expects the peer to close; the I/O layer in
:mod:`tether.aio` does the rest.
"""
