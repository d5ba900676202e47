"""The HTTP transport under every provider SDK's client: httpx2's interface on the standard library's `http.client`.

The SDKs (openai, anthropic, google-genai) keep all they do above the transport: URLs, auth, timeouts, typed errors,
response models, server-sent events. Only the HTTP/1.1 exchange itself moves: httpx2's default transport parses it
in pure Python (h11) and scans every pooled connection under a lock for each request, which with a worker's 32
threads cost about a sixth of the worker's CPU per job; `http.client` parses with the C parts of the standard
library. httpx2 honours proxies named by the environment only with its own transport, so there it stays.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import urllib.request
from collections import deque
from collections.abc import Iterator
from typing import NoReturn

import httpx2

Origin = tuple[str, str, int]
_READ_SIZE = 64 * 1024


def sdk_transport() -> StdlibTransport | None:
    """The transport for a provider SDK's client: None, for httpx2's own, when the environment names a proxy."""
    return None if urllib.request.getproxies() else StdlibTransport()


class StdlibTransport(httpx2.BaseTransport):
    """Keep-alive connections per origin, each serving one request at a time, as many as requests ever ran at once
    (a worker's threads bound them). A connection is pooled again only once its response was read to the end; one
    the server has closed while it sat idle is dropped, not reused. Request bodies are sent whole (the SDKs send JSON
    they have already built)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context or httpx2.create_ssl_context()
        self._idle: dict[Origin, deque[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        connection = self._reusable(origin) or self._connect(origin, timeouts.get("connect"))
        body = request.read()
        try:
            connection.sock.settimeout(timeouts.get("write"))
            connection.putrequest(
                request.method, url.raw_path.decode("ascii"), skip_host=True, skip_accept_encoding=True
            )  # httpx2 has set both headers already
            for name, value in request.headers.raw:
                connection.putheader(name, value)
            if request.headers.get("transfer-encoding") == "chunked":
                connection.endheaders([body] if body else [], encode_chunked=True)
            else:
                connection.endheaders(body or None)
        except BaseException as error:
            connection.close()
            _raise_as_httpx(error, httpx2.WriteTimeout, httpx2.WriteError)
        try:
            connection.sock.settimeout(timeouts.get("read"))
            response = connection.getresponse()
        except BaseException as error:
            connection.close()
            _raise_as_httpx(error, httpx2.ReadTimeout, httpx2.ReadError)
        return httpx2.Response(
            response.status,
            headers=response.getheaders(),
            stream=_ResponseStream(self, origin, connection, response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason.encode("latin-1")},
        )

    def close(self) -> None:
        with self._lock:
            pools, self._idle = list(self._idle.values()), {}
        for pool in pools:
            while pool:
                pool.pop().close()

    def _reusable(self, origin: Origin) -> http.client.HTTPConnection | None:
        """The most recently used idle connection to `origin` that the server has not closed (an idle socket with
        anything to read has either been closed by the peer or holds bytes no request asked for)."""
        pool = self._idle.get(origin)
        while pool:
            try:
                connection = pool.pop()  # a deque's pop and append are atomic: no lock needed
            except IndexError:
                return None
            if connection.sock is not None and not _readable(connection.sock):
                return connection
            connection.close()
        return None

    def _connect(self, origin: Origin, timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl_context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.connect()
        except BaseException as error:
            connection.close()
            _raise_as_httpx(error, httpx2.ConnectTimeout, httpx2.ConnectError)
        return connection

    def _release(self, origin: Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            pool = self._idle.setdefault(origin, deque())
        pool.append(connection)


class _ResponseStream(httpx2.SyncByteStream):
    """The body as it arrives (server-sent events piece by piece); closing hands the connection back to the pool if
    the body was read to its end on a connection the server keeps open, and closes it otherwise."""

    def __init__(
        self,
        transport: StdlibTransport,
        origin: Origin,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
    ) -> None:
        self._transport, self._origin = transport, origin
        self._connection, self._response = connection, response
        self._read_to_end = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self._response.read1(_READ_SIZE):
                yield chunk
        except BaseException as error:
            self._response.close()
            _raise_as_httpx(error, httpx2.ReadTimeout, httpx2.ReadError)
        self._read_to_end = True

    def close(self) -> None:
        self._response.close()
        if self._read_to_end and not self._response.will_close and self._connection.sock is not None:
            self._transport._release(self._origin, self._connection)
        else:
            self._connection.close()


def _readable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _raise_as_httpx(
    error: BaseException, timeout: type[httpx2.TimeoutException], failure: type[httpx2.TransportError]
) -> NoReturn:
    """Raise httpx2's exception for a failure of the standard library, so the SDKs map it as they map their own."""
    if isinstance(error, TimeoutError):
        raise timeout(str(error) or "timed out") from error
    if isinstance(error, http.client.HTTPException):
        raise httpx2.RemoteProtocolError(str(error) or type(error).__name__) from error
    if isinstance(error, OSError):
        raise failure(str(error) or type(error).__name__) from error
    raise error
