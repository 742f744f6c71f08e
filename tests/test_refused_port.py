"""The refused-port helper the "unreachable server" tests use instead of a port closed by convention."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from mcts_engine.testing.refused_port import refused_port, refused_url


def test_connecting_is_refused_at_once():
    with refused_port() as port:
        with socket.socket() as c:
            c.settimeout(5)  # a refusal is immediate; a timeout here would mean the port swallowed the SYN
            with pytest.raises(ConnectionRefusedError):
                c.connect(("127.0.0.1", port))


def test_asyncio_connections_are_refused_too():
    async def go(port: int) -> None:
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)

    with refused_port() as port:
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(go(port))


def test_nobody_else_can_take_the_port_while_it_is_held():
    with refused_port() as port:
        with socket.socket() as other, pytest.raises(OSError) as ei:
            other.bind(("127.0.0.1", port))
        assert ei.value.errno == errno.EADDRINUSE
    with socket.socket() as other:  # and it is let go afterwards
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))


def test_refused_url_is_an_openai_style_base_url():
    with refused_url() as url:
        host_port, path = url.removeprefix("http://").split("/", 1)
        host, port = host_port.split(":")
        assert host == "127.0.0.1" and int(port) > 0 and path == "v1"
