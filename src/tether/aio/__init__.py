"""The I/O layer: the only part of tether that imports asyncio.

:func:`~tether.aio.client.connect` and :func:`~tether.aio.server.serve` make
:class:`~tether.aio.connection.Connection` objects, which drive the sans-I/O
core in :mod:`tether.protocol`.
"""
