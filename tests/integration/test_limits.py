"""`RequestLimits` in front of a FastAPI app served by uvicorn in its own process, over real sockets: chunked and
declared bodies past the limit, JSON too deep, streamed answers, and the server's memory while 50 MB arrive; then
the project's own app behind it, answering in its own error formats."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp

from api.limits import RequestLimits
from tests.catalog import ROOT

LIMIT = 1_000_000
TOO_LARGE = {"detail": "request body is larger than the limit of 1,000,000 bytes"}


def limited_app() -> ASGIApp:
    """The app the server runs (`uvicorn --factory`): it counts what each endpoint was called with and got."""
    app = FastAPI()
    seen: Counter[str] = Counter()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        seen["echo called"] += 1
        body = await request.body()
        seen["echo read"] += 1
        return {"length": len(body)}

    @app.post("/items")
    def items(payload: dict) -> dict[str, int]:  # FastAPI parses the body: a failed read is its own 400
        seen["items"] += 1
        return {"keys": len(payload)}

    @app.post("/stream")
    async def stream(payload: dict) -> StreamingResponse:
        async def parts() -> Iterator[bytes]:
            yield b"first\n"
            await asyncio.sleep(1.5)
            yield b"last\n"

        return StreamingResponse(parts())

    @app.get("/seen")
    def counts() -> dict[str, int]:
        return dict(seen)

    return RequestLimits(app, max_bytes=LIMIT, max_json_depth=32)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[httpx.Client, int]]:
    """The server's client and its process id."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("limits") / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "--factory", "tests.integration.test_limits:limited_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get("/seen")
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield client, process.pid
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def chunked(size: int, piece: bytes = b"x" * 65_536) -> Iterator[bytes]:
    """`size` bytes from a generator, which httpx sends with `Transfer-Encoding: chunked`."""
    while size > 0:
        yield piece[:size]
        size -= len(piece)


def deep_json(levels: int) -> bytes:
    return b'{"a": ' + b"[" * (levels - 1) + b"1" + b"]" * (levels - 1) + b"}"


def kilobytes(pid: int, field: str) -> int:
    """A memory figure of a process from /proc, e.g. VmRSS (now) or VmHWM (the peak so far)."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def test_a_chunked_body_past_the_limit_is_413_and_never_read_whole(server):
    client, _ = server
    before = client.get("/seen").json()
    response = client.post("/echo", content=chunked(3_000_000))
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json() == TOO_LARGE
    after = client.get("/seen").json()
    assert after.get("echo read", 0) == before.get("echo read", 0)  # called, but it never got the body


def test_a_chunked_json_body_past_the_limit_is_413_not_fastapis_400(server):
    client, _ = server
    before = client.get("/seen").json()
    body = b'{"a": "' + b"x" * 3_000_000 + b'"}'
    response = client.post("/items", content=chunked(len(body), body), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json() == TOO_LARGE
    plain = client.post("/items", content=chunked(len(body), body), headers={"content-type": "text/plain"})
    assert plain.status_code == 413 and plain.json() == TOO_LARGE  # read by FastAPI itself, cut all the same
    assert client.get("/seen").json().get("items", 0) == before.get("items", 0)


def test_a_declared_length_past_the_limit_is_413_before_the_endpoint(server):
    client, _ = server
    before = client.get("/seen").json()
    response = client.post("/echo", content=b"x" * (LIMIT + 1))
    assert response.request.headers["content-length"] == str(LIMIT + 1)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body of 1,000,001 bytes is larger than the limit of 1,000,000 bytes"}
    assert client.get("/seen").json().get("echo called", 0) == before.get("echo called", 0)


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT])
def test_a_body_up_to_the_limit_reaches_the_endpoint_whole(server, size):
    client, _ = server
    assert client.post("/echo", content=chunked(size)).json() == {"length": size}
    assert client.post("/echo", content=b"x" * size).json() == {"length": size}


def test_json_nested_too_deep_is_422_before_the_endpoint(server):
    client, _ = server
    before = client.get("/seen").json()
    response = client.post("/items", content=deep_json(300), headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json() == {"detail": "JSON nested 300 deep; the limit is 32"}
    assert client.get("/seen").json().get("items", 0) == before.get("items", 0)


def test_json_nested_within_the_limit_is_parsed_by_the_endpoint(server):
    client, _ = server
    body = deep_json(20)
    assert json.loads(body)  # a real document
    response = client.post("/items", content=chunked(len(body), body), headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json() == {"keys": 1}
    arrays = b'{"a": [' + b"[]," * 200_000 + b"[]]}"  # 600 KB of tiny arrays: shallow, so accepted
    assert client.post("/items", content=arrays, headers={"content-type": "application/json"}).json() == {"keys": 1}


def test_a_streamed_answer_is_not_held_back(server):
    client, _ = server
    started = time.monotonic()
    with client.stream("POST", "/stream", json={"a": [1]}) as response:
        parts = response.iter_raw()
        assert next(parts) == b"first\n"
        first = time.monotonic() - started
        assert b"".join(parts) == b"last\n"
        total = time.monotonic() - started
    assert first < 1.0 <= total  # the first part came while the second was still being made


@pytest.mark.parametrize(
    ("path", "content_type"), [("/echo", "application/octet-stream"), ("/items", "application/json")]
)
def test_50_mb_to_a_1_mb_limit_leaves_the_server_within_twice_the_limit(server, path, content_type):
    client, pid = server
    headers = {"content-type": content_type}
    # The same request once before measuring, so the measure is the body and not the code's first use.
    assert client.post(path, content=chunked(5_000_000), headers=headers).status_code == 413
    peak_before, resident_before = kilobytes(pid, "VmHWM"), kilobytes(pid, "VmRSS")
    response = client.post(path, content=chunked(50_000_000), headers=headers)
    assert response.status_code == 413 and response.json() == TOO_LARGE
    peak_growth = (kilobytes(pid, "VmHWM") - peak_before) * 1024
    resident_growth = (kilobytes(pid, "VmRSS") - resident_before) * 1024
    assert peak_growth < 2 * LIMIT and resident_growth < 2 * LIMIT, (peak_growth, resident_growth)
    assert client.post("/echo", content=b"still serving").json() == {"length": 13}


@pytest.fixture
def one_megabyte_limit(monkeypatch) -> None:
    """Before `secured`: the project's server with a 1 MB body limit."""
    monkeypatch.setenv("ORCH_MAX_REQUEST_BYTES", str(LIMIT))


def test_the_project_app_refuses_before_any_work_in_its_own_formats(one_megabyte_limit, secured):
    settings, keys, client = secured
    assert settings.max_request_bytes == LIMIT
    api_key, secret = keys.create("careful", budget_usd=1.0)
    json_type = {"content-type": "application/json"}
    chat = b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"x" * 3_000_000 + b'"}]}'
    with client(secret) as c:
        too_large = c.post("/v1/chat/completions", content=chunked(len(chat), chat), headers=json_type)
        deep = b'{"request": "hi", "context": {"a": ' + b"[" * 300 + b"]" * 300 + b"}}"
        too_deep = c.post("/v1/jobs", content=deep, headers=json_type)
        long_stops = {"request": "hi", "options": {"stop": ["x" * 10_000] * 4}}
        stops = c.post("/v1/jobs", json=long_stops)
        chat_stops = c.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stop": ["x" * 10_000] * 4},
        )
        fine = c.post("/v1/analyze", json={"request": "Refactor the authentication module"})
    with client() as anonymous:  # no key: refused before a byte of the body is read
        unread = anonymous.post("/v1/jobs", content=chunked(3_000_000), headers=json_type)
    error = too_large.json()["error"]
    assert too_large.status_code == 413 and error["code"] == "request_too_large"
    assert error["message"] == TOO_LARGE["detail"]
    assert too_deep.status_code == 422 and too_deep.json()["detail"] == "JSON nested 302 deep; the limit is 32"
    assert stops.status_code == 422 and "at most 256 characters" in str(stops.json()["detail"])
    assert chat_stops.status_code == 400 and chat_stops.json()["error"]["param"] == "stop"
    assert fine.status_code == 200 and fine.json()["plan"]["model"]
    assert unread.status_code == 401
    assert keys.spent(api_key) == 0.0 and keys.unsettled(0) == []  # nothing was reserved for any of them


def test_the_api_server_holds_no_more_than_twice_the_limit_while_50_mb_arrive(redis_env, provider_env, tmp_path):
    """`orchestrator serve` itself, with a key: the routes that read a body, with 50 MB chunked at a 1 MB limit."""
    from shared.auth import KeyStore
    from shared.settings import get_settings
    from shared.store import redis_client

    settings = get_settings()
    _, secret = KeyStore(settings, redis_client(settings)).create("uploader")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ORCH_AUTH__ENABLED": "true", "ORCH_MAX_REQUEST_BYTES": str(LIMIT)}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    headers = {"authorization": f"Bearer {secret}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=headers) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "serve.log").read_text()
                    time.sleep(0.2)
            for path, kind in (("/v1/jobs", "application/json"), ("/v1/documents", "text/plain")):
                sent = {"content-type": kind}
                assert client.post(path, content=chunked(5_000_000), headers=sent).status_code == 413  # warm up
                peak_before = kilobytes(process.pid, "VmHWM")
                response = client.post(path, content=chunked(50_000_000), headers=sent)
                assert response.status_code == 413 and response.json()["detail"] == TOO_LARGE["detail"]
                growth = (kilobytes(process.pid, "VmHWM") - peak_before) * 1024
                assert growth < 2 * LIMIT, (path, growth)
    finally:
        process.terminate()
        process.wait(timeout=30)
