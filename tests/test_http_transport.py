"""The provider SDKs' HTTP transport: keep-alive, connections the server closed, streaming, errors, threads.

A local HTTP/1.1 server counts the connections it accepts, so reuse is observed from the server's side; the SDK-level
behaviour over this transport (status codes, SSE, usage, timeouts) is covered by the provider wire tests.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import openai
import pytest
import trustme

from shared.providers.http_transport import StdlibTransport, sdk_transport


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"])) if "content-length" in self.headers else b""
        if self.headers.get("transfer-encoding") == "chunked":
            body = self._read_chunked()
        self._answer(json.dumps({"path": self.path, "body": body.decode()}).encode())

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for piece in (b"first", b"second"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                self.server.release_rest.wait(5)
            self.wfile.write(b"0\r\n\r\n")
            return
        self._answer(self.path.encode(), close=self.path == "/close", silent_close=self.path == "/silent-close")

    def _answer(self, body: bytes, close: bool = False, silent_close: bool = False) -> None:
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        if close:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = close or silent_close  # silent: closed without saying so, as idle timeouts do

    def _read_chunked(self) -> bytes:
        body = b""
        while size := int(self.rfile.readline().strip(), 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return body

    def log_message(self, *_: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.connections = 0
        self.release_rest = threading.Event()


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.release_rest.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client(server: _Server) -> Iterator[httpx2.Client]:
    with httpx2.Client(
        base_url=f"http://127.0.0.1:{server.server_address[1]}", transport=StdlibTransport(), timeout=5
    ) as http:
        yield http


def test_requests_reuse_one_kept_alive_connection(server: _Server, client: httpx2.Client) -> None:
    answers = [client.post(f"/n/{i}", json={"i": i}).json() for i in range(5)]
    assert answers == [{"path": f"/n/{i}", "body": json.dumps({"i": i}).replace(" ", "")} for i in range(5)]
    assert server.connections == 1


def test_a_connection_the_server_closed_while_idle_is_not_reused(server: _Server, client: httpx2.Client) -> None:
    assert client.get("/silent-close").text == "/silent-close"
    time.sleep(0.2)  # the server's close reaches the idle connection
    assert client.get("/after").text == "/after"
    assert server.connections == 2


def test_a_response_that_closes_its_connection_is_not_pooled(server: _Server, client: httpx2.Client) -> None:
    assert [client.get("/close").text for _ in range(3)] == ["/close"] * 3
    assert server.connections == 3


def test_a_streamed_body_arrives_piece_by_piece(server: _Server, client: httpx2.Client) -> None:
    with client.stream("GET", "/stream") as response:
        pieces = response.iter_raw()
        assert next(pieces) == b"first"  # before the server has sent the rest
        server.release_rest.set()
        assert b"".join(pieces) == b"second"
    assert client.get("/next").text == "/next"
    assert server.connections == 1  # read to its end: the connection went back to the pool


def test_a_stream_closed_before_its_end_gives_up_its_connection(server: _Server, client: httpx2.Client) -> None:
    with client.stream("GET", "/stream") as response:
        assert next(response.iter_raw()) == b"first"
    server.release_rest.set()
    assert client.get("/next").text == "/next"
    assert server.connections == 2


def test_a_chunked_request_body_arrives_whole(server: _Server, client: httpx2.Client) -> None:
    answer = client.post("/upload", content=iter([b"one ", b"two"])).json()
    assert answer == {"path": "/upload", "body": "one two"}


def test_failures_are_httpx_exceptions(server: _Server, client: httpx2.Client) -> None:
    with pytest.raises(httpx2.ReadTimeout):
        client.get("/slow", timeout=0.2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(httpx2.ConnectError):
        client.get(f"http://127.0.0.1:{closed_port}/")
    assert client.get("/still-fine").text == "/still-fine"


def test_threads_share_the_pool_without_mixing_answers(server: _Server, client: httpx2.Client) -> None:
    def call(i: int) -> str:
        return client.post(f"/t/{i}", content=str(i).encode()).json()["body"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(200)))
    assert answers == [str(i) for i in range(200)]
    assert server.connections <= 8


def test_https_verifies_the_server_and_keeps_its_connection(server: _Server) -> None:
    authority = trustme.CA()
    authority.issue_cert("127.0.0.1").configure_cert(tls := ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    url = f"https://127.0.0.1:{server.server_address[1]}"
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    with httpx2.Client(base_url=url, transport=StdlibTransport(trusting), timeout=5) as client:
        assert [client.get(f"/tls/{i}").text for i in range(3)] == [f"/tls/{i}" for i in range(3)]
    assert server.connections == 1
    with httpx2.Client(base_url=url, transport=StdlibTransport(), timeout=5) as client:  # the system's trust
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get("/untrusted")


def test_a_proxy_named_by_the_environment_is_honoured(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    assert isinstance(sdk_transport(), StdlibTransport)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
    assert sdk_transport() is None  # httpx2 honours the proxy only with its own transport
    with openai.DefaultHttpxClient(transport=sdk_transport()) as client:
        assert client.get("http://provider.invalid/v1/models").text == "http://provider.invalid/v1/models"
