"""``edi-inbox serve``: the seed's HTTP API, a dashboard and ``/metrics``.

FastAPI on uvicorn, as the seed used: request parameters are checked and
documented (OpenAPI at ``/docs``) from the function signatures, and the
endpoints are plain functions over ``queries`` and ``admin``, the same calls
the CLI makes, so every ``/api`` answer is the JSON ``--json`` prints.

- ``app``: ``create_app(settings)``, the JSON API, ``/healthz`` and errors as JSON;
- ``dashboard``: the HTML pages at ``/``, rendered on the server (Jinja2);
- ``metrics``: a Prometheus collector that reads the database at scrape time;
- ``serving``: ``serve(settings)``, uvicorn with a request head's deadline and
  a cap on connections.

The optional dependencies live in the ``web`` extra (``pip install 'edi-inbox[web]'``).
"""

from __future__ import annotations

from .app import create_app
from .serving import serve

__all__ = ["create_app", "serve"]
