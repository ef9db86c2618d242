"""Serve an ASGI app for real on 127.0.0.1 (a free port) in a thread, for tests that talk HTTP to it."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


@contextmanager
def run_live(app):
    """Serve `app` with uvicorn on 127.0.0.1 in a thread; yields the base URL ("http://127.0.0.1:PORT")."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))  # a free port, held until uvicorn takes the socket over
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):  # wait for start-up (not a timing assertion: it fails only if it never starts)
            if srv.started or not thread.is_alive():
                break
            time.sleep(0.05)
        assert srv.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()
