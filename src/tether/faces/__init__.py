"""The faces of tether: the seeds' ways of talking WebSocket, each a thin skin
over the one engine in :mod:`tether.aio`.

- :mod:`tether.faces.channel`: ZIO HTTP's channel events
  (``Handler.web_socket``, ``channel.receive_all``, ``ChannelEvent.Read``).
- :mod:`tether.faces.callbacks`: Vapor's and the TypeScript class's callbacks
  (``on_text``, ``onmessage``, ``web_socket_upgrader``).
- :mod:`tether.faces.request`: sttp's request builder (``basic_request``).
- :mod:`tether.sync`: a threaded client for code without an event loop
  (``tether.sync.connect``).

Every face reaches every engine feature (limits, compression, keepalive,
subprotocols) through its own config object, which maps onto
:class:`tether.Options`; none of them parses a frame itself.
"""
