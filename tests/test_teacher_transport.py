"""The teacher's transport: URL credentials (used, never shown), TLS with a custom CA, proxies from the
environment (HTTP and SOCKS), and one-line errors for a transport that cannot be built."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from test_teacher_openai import _ctx
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.config import TeacherConfig
from mcts_engine.teachers.base import PromptState, TeacherError, TeacherUnavailable
from mcts_engine.teachers.openai_compat import OpenAITeacher
from mcts_engine.teachers.urls import public_url, public_urls, split_credentials
from mcts_engine.testing.refused_port import refused_url
from mcts_engine.testing.stub_server import StubServer

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr%40t"  # percent-encoded "s3cr@t"


def _teacher(url: str, **kw) -> OpenAITeacher:
    kw.setdefault("model", "stub-model")
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout_s", 5.0)
    return OpenAITeacher(TeacherConfig(kind="openai", base_url=url, **kw))


async def _use(t: OpenAITeacher, check: bool = True):
    try:
        if check:
            await t.check()
        return await t.complete(PromptState(_ctx()), 1)
    finally:
        await t.aclose()


def _with_user(url: str) -> str:
    return url.replace("://", f"://alice:{SECRET}@", 1)


# --------------------------------------------------------------------------------------------
# Credentials in the URL
# --------------------------------------------------------------------------------------------


def test_url_helpers():
    assert public_url("http://u:p@h:8000/v1") == "http://h:8000/v1"
    assert public_url("https://u@h/v1") == "https://h/v1"
    assert public_url("http://h:8000/v1") == "http://h:8000/v1"
    assert public_url("http://u:p@[::1]:8000/v1") == "http://[::1]:8000/v1"
    assert public_url("http://u:p@h:port/v1") == "http://h:port/v1"  # unparsable port: still stripped
    assert public_urls("http://a:b@x/v1, http://y/v1") == "http://x/v1,http://y/v1"
    assert split_credentials("http://h/v1") == ("http://h/v1", None)
    url, auth = split_credentials(f"http://alice:{SECRET}@h:1/v1")
    assert url == "http://h:1/v1" and base64.b64decode(auth.split()[1]) == b"alice:s3cr@t"


def test_url_credentials_are_sent_as_basic_auth_and_shown_nowhere(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "the-api-key")
    with StubServer() as srv:
        t = _teacher(_with_user(srv.url))
        asyncio.run(_use(t))
        sent = srv.last_headers["authorization"]
        desc = json.dumps(t.describe())
    assert sent == "Basic " + base64.b64encode(b"alice:s3cr@t").decode()  # in place of the Bearer key
    assert "s3cr" not in desc and "alice" not in desc and srv.url in desc
    with StubServer(fail_first=1) as srv:  # an error message names the server, not the credentials
        with pytest.raises(TeacherError) as ei:
            asyncio.run(_use(_teacher(_with_user(srv.url)), check=False))
    assert srv.url in str(ei.value) and "s3cr" not in str(ei.value) and "alice" not in str(ei.value)
    with refused_url() as dead, pytest.raises(TeacherUnavailable) as ei:
        asyncio.run(_teacher(_with_user(dead)).check())
    assert str(ei.value).startswith(f"cannot reach teacher at {dead}") and "s3cr" not in str(ei.value)


def test_url_credentials_stay_out_of_the_run_directory_and_printed_lines(tmp_path):
    with StubServer() as srv:
        url = _with_user(srv.url)
        res = CliRunner().invoke(app, ["generate", "--no-progress", "--teacher", "openai", "--base-url", url,
                                       "--model", "stub-model", "--limit", "2", "--out", str(tmp_path / "run"),
                                       "--set", "search.simulations=2"])
        assert res.exit_code == 0, res.output
        assert srv.last_headers["authorization"].startswith("Basic ")
    assert srv.url in res.output and "s3cr" not in res.output and "alice" not in res.output
    for f in (tmp_path / "run").glob("*.json*"):
        text = f.read_text()
        assert "s3cr" not in text and "alice:" not in text, f.name
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["config"]["teacher"]["base_url"] == srv.url and cfg["teacher"]["base_urls"] == [srv.url]
    with refused_url() as plain:
        dead = _with_user(plain)
        for cmd in (["generate", "--no-progress", "--out", str(tmp_path / "r2")], ["eval", "--out", str(tmp_path / "r3")]):
            res = CliRunner().invoke(app, [*cmd, "--teacher", "openai", "--base-url", dead, "--model", "m", "--limit", "1"])
            assert res.exit_code != 0 and f"cannot reach teacher at {plain}" in res.output, res.output
            assert "s3cr" not in res.output and "alice" not in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------------------------
# One-line errors for a transport that cannot be built
# --------------------------------------------------------------------------------------------


def test_socks_proxy_without_the_extra_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("ALL_PROXY", "socks5://user:pw@proxy.example:1080")
    monkeypatch.setitem(sys.modules, "aiohttp_socks", None)  # as if not installed
    with pytest.raises(TeacherUnavailable) as ei:
        asyncio.run(_teacher("http://gpu-node:8000/v1").check())
    msg = str(ei.value)
    assert "mcts-engine[socks]" in msg and "socks5://proxy.example:1080" in msg and "pw" not in msg and "\n" not in msg
    res = CliRunner().invoke(app, ["generate", "--no-progress", "--teacher", "openai", "--base-url",
                                   "http://gpu-node:8000/v1", "--model", "m", "--limit", "1", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "mcts-engine[socks]" in res.output and "Traceback" not in res.output
    monkeypatch.setenv("NO_PROXY", "gpu-node")  # a bypassed host needs no SOCKS
    asyncio.run(_teacher("http://gpu-node:8000/v1")._transport().aclose())


def test_ca_file_that_does_not_exist_or_is_not_pem_is_one_line(tmp_path):
    with pytest.raises(TeacherUnavailable, match=r"^teacher.ca_file /nowhere/ca.pem: no such file$"):
        asyncio.run(_teacher("https://gpu-node/v1", ca_file="/nowhere/ca.pem").check())
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(TeacherUnavailable, match="not a PEM certificate bundle") as ei:
        asyncio.run(_teacher("https://gpu-node/v1", ca_file=str(bad)).check())
    assert "\n" not in str(ei.value)
    res = CliRunner().invoke(app, ["generate", "--no-progress", "--teacher", "openai", "--base-url", "https://gpu-node/v1",
                                   "--model", "m", "--limit", "1", "--out", str(tmp_path / "r"),
                                   "--set", "teacher.ca_file=/nowhere/ca.pem"])
    assert res.exit_code != 0 and "teacher.ca_file /nowhere/ca.pem: no such file" in res.output
    assert "Traceback" not in res.output


# --------------------------------------------------------------------------------------------
# TLS with a custom CA, proxies from the environment
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=20)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx, d / "cert.pem"


def test_https_with_a_custom_ca_file_or_ssl_cert_file(self_signed, monkeypatch):
    server_ctx, cert = self_signed
    with StubServer(tls=server_ctx) as srv:
        assert srv.url.startswith("https://")
        reply = asyncio.run(_use(_teacher(srv.url, ca_file=str(cert))))
        assert len(reply.choices) == 1
        with pytest.raises(TeacherUnavailable, match="certificate verify failed|CERTIFICATE_VERIFY_FAILED") as ei:
            asyncio.run(_use(_teacher(srv.url)))  # an unknown CA is refused
        assert "\n" not in str(ei.value)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert len(asyncio.run(_use(_teacher(srv.url))).choices) == 1


async def _canned_proxy(seen: list[bytes]):
    """A stand-in HTTP proxy: records each request line and answers every chat request itself."""
    reply = json.dumps({"choices": [{"index": 0, "message": {"content": "<answer> via proxy </answer>"},
                                     "finish_reason": "stop"}]}).encode()
    models = json.dumps({"data": [{"id": "stub-model"}]}).encode()

    async def handle(reader, writer):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            seen.append(lines[0])
            length = next((int(h.split(b":")[1]) for h in lines if h.lower().startswith(b"content-length")), 0)
            await reader.readexactly(length)
            body = models if b"/models" in lines[0] else reply
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_http_proxy_from_the_environment_and_no_proxy(monkeypatch):
    async def go():
        seen: list[bytes] = []
        proxy = await _canned_proxy(seen)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        try:
            reply = await _use(_teacher("http://gpu-node.invalid:8000/v1"))
        finally:
            proxy.close()
        return seen, reply

    seen, reply = asyncio.run(go())
    assert reply.choices[0].text == "<answer> via proxy </answer>"
    assert seen == [b"GET http://gpu-node.invalid:8000/v1/models HTTP/1.1",
                    b"POST http://gpu-node.invalid:8000/v1/chat/completions HTTP/1.1"]
    with StubServer() as srv:  # NO_PROXY: straight to the server
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert len(asyncio.run(_use(_teacher(srv.url))).choices) == 1


async def _socks5_server(connects: list[tuple[str, int]]):
    """A minimal SOCKS5 proxy (no authentication, CONNECT only, RFC 1928)."""

    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def handle(reader, writer):
        _, nmethods = await reader.readexactly(2)
        await reader.readexactly(nmethods)
        writer.write(b"\x05\x00")
        _, _, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = ".".join(str(b) for b in await reader.readexactly(4))
        else:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        connects.append((host, port))
        r2, w2 = await asyncio.open_connection("127.0.0.1" if host == "teacher.internal" else host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_socks_proxy_with_the_extra(monkeypatch):
    pytest.importorskip("aiohttp_socks")
    with StubServer() as srv:
        async def go():
            connects: list[tuple[str, int]] = []
            proxy = await _socks5_server(connects)
            monkeypatch.setenv("ALL_PROXY", f"socks5://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            try:
                reply = await _use(_teacher(f"http://teacher.internal:{srv.port}/v1"))  # resolved by the proxy
            finally:
                proxy.close()
            return connects, reply

        connects, reply = asyncio.run(go())
        assert srv.stats.chat_requests == 1
    assert len(reply.choices) == 1 and ("teacher.internal", srv.port) in connects


def test_check_lists_models_through_the_openai_sdk(monkeypatch):
    """check() asks the SDK (client.models.list) once per server, with the transport's credentials."""
    import openai

    made = []
    real = openai.AsyncOpenAI

    def spy(**kw):
        made.append(kw)
        return real(**kw)

    monkeypatch.setattr(openai, "AsyncOpenAI", spy)
    with StubServer() as a, StubServer() as b:
        t = _teacher(f"{_with_user(a.url)},{b.url}")
        asyncio.run(_use(t))
    assert [kw["base_url"] for kw in made] == [a.url, b.url]
    assert made[0]["default_headers"]["Authorization"].startswith("Basic ")
    assert made[1]["default_headers"]["Authorization"].startswith("Bearer ")
    assert all(kw["max_retries"] == 0 for kw in made)
