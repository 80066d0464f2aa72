"""`postroom serve`'s app in a real uvicorn server on a free loopback port, for the web tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from postroom.app import Postroom
from postroom.web.app import create_app


@contextmanager
def serving(postroom: Postroom, app: Any = None) -> Iterator[httpx.Client]:
    """A client of the app (by default Postroom's whole web app) served by uvicorn in a
    thread; the server stops on exit."""
    server = uvicorn.Server(uvicorn.Config(app or create_app(postroom), host="127.0.0.1",
                                           port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        thread.join(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
