"""Plain HTTP answers for route handlers: :func:`text`, :func:`json`,
:func:`html`, each a :class:`tether.Response` with its ``Content-Type``::

    from tether import Routes, responses

    routes = Routes()

    @routes.get("/greet/{name}")
    def greet(request, name):
        return responses.text(f"Greetings {name}!")

    @routes.get("/items/{id:int}")
    def item(request, id):
        return responses.json({"id": id}, status=200)

``tether.Response(status, reason, headers, body)`` is the general form.
"""

from __future__ import annotations

from tether.protocol.http import Response

__all__ = ["html", "json", "text"]

#: ``text(body, status=200, headers=None)``: a ``text/plain; charset=utf-8`` response.
text = Response.text
#: ``html(body, status=200, headers=None)``: a ``text/html; charset=utf-8`` response.
html = Response.html
#: ``json(value, status=200, headers=None)``: an ``application/json`` response.
json = Response.json
