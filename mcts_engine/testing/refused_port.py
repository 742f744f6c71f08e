"""A local TCP port certain to refuse connections, for "the server cannot be reached" tests.

A hard-coded port (``127.0.0.1:9``) is closed only by convention, and a port found free and then let go
can be taken by another process before the test connects. :func:`refused_port` keeps the port bound by
this process without listening on it for as long as the ``with`` block lasts: a connection is refused at
once (the kernel answers a connection attempt to a bound, non-listening socket with a reset) and no other
process can bind the port meanwhile.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

HOST = "127.0.0.1"


@contextmanager
def refused_port(host: str = HOST) -> Iterator[int]:
    """A port on ``host`` that refuses connections while the context is open."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]


@contextmanager
def refused_url(path: str = "/v1", host: str = HOST) -> Iterator[str]:
    """``http://host:PORT{path}`` on a :func:`refused_port` (an OpenAI-style base URL by default)."""
    with refused_port(host) as port:
        yield f"http://{host}:{port}{path}"
