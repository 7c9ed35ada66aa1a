"""The seeds' example apps, runnable.

- :mod:`tether.examples.demo`: the ZIO HTTP seed's advanced server
  (``/greet/{name}``, the ``/subscriptions`` WebSocket, and a page at ``/``);
  ``tether demo``.
- :mod:`tether.examples.demo_client`: the seed's advanced console client;
  ``tether demo-client``.
- :mod:`tether.examples.echo`: the seed's ``WebSocketEcho``;
  ``python -m tether.examples.echo``.
- :mod:`tether.examples.chat`: a chat room over the hub;
  ``tether serve tether.examples.chat:app``.
"""
