"""The service manager against real MCP servers: mcp-server-git and mcp-server-time over stdio, our own server over
streamable HTTP, and the circuit breakers in a real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.breaker import CircuitBreakers
from shared.services.manager import ServiceManager, ServiceUnavailable
from shared.settings import load_settings
from shared.store import redis_client
from tests.wire.mcp_http_server import McpHttpServer

MakeManager = Callable[..., ServiceManager]


def stdio(module: str, *args: str, **fields: Any) -> dict[str, Any]:
    return {"type": "stdio", "command": [sys.executable, "-m", module, *args], "capabilities": ["read"], **fields}


def time_service(**fields: Any) -> dict[str, Any]:
    return stdio("mcp_server_time", "--local-timezone", "UTC", **fields)


def server_pids(module: str) -> list[int]:
    """This process's children running `python -m <module>` (a killed one, a zombie, has no command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and module.encode() in argv:
            pids.append(int(entry.name))
    return pids


def wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with two commits."""
    path = tmp_path / "repo"
    path.mkdir()

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(path), "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    (path / "README.md").write_text("hello\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "Add the readme")
    (path / "notes.txt").write_text("notes\n")
    git("add", "notes.txt")
    git("commit", "-q", "-m", "Write the first notes")
    return path


@pytest.fixture
def http_server() -> Iterator[McpHttpServer]:
    server = McpHttpServer().start()
    yield server
    server.stop()


@pytest.fixture
def managers() -> Iterator[MakeManager]:
    """Build managers over the given services (and settings overrides); every one is closed afterwards."""
    made: list[ServiceManager] = []

    def make(services: dict[str, dict[str, Any]], breakers: bool = False, **overrides: Any) -> ServiceManager:
        settings = load_settings(mcp_services=services, **overrides)
        manager = ServiceManager(settings, CircuitBreakers(settings, redis_client(settings)) if breakers else None)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


def test_git_over_stdio_lists_tools_and_reads_the_log(repo, managers):
    manager = managers({"git": stdio("mcp_server_git", "--repository", str(repo))})
    assert {state.state for state in manager.states()} == {"idle"}
    tools = {tool.name: tool for tool in manager.tools("git")}
    assert "git_log" in tools and "repo_path" in tools["git_log"].input_schema["properties"]
    assert tools["git_log"].function_name == "git__git_log"

    result = manager.call("git", "git_log", {"repo_path": str(repo)})
    assert result.outcome == "ok", result.text
    assert "Add the readme" in result.text and "Write the first notes" in result.text
    assert result.duration_ms > 0 and not result.restarted
    [state] = manager.states()
    assert state.state == "connected" and "git_log" in state.tools and state.tools_listed_at
    assert len(server_pids("mcp_server_git")) == 1


def test_time_over_stdio(managers):
    manager = managers({"time": time_service()})
    assert "get_current_time" in {tool.name for tool in manager.tools("time")}
    result = manager.call("time", "get_current_time", {"timezone": "UTC"})
    assert result.outcome == "ok", result.text
    assert json.loads(result.text)["timezone"] == "UTC"


def test_http_answers_tool_errors_timeouts_and_cut_results(http_server, managers):
    manager = managers(
        {"wire": {"type": "http", "url": http_server.url, "capabilities": ["read"], "timeout_seconds": 0.5}},
        mcp_client={"max_result_chars": 100},
    )
    assert manager.call("wire", "echo", {"text": "hello"}).text == "hello"
    assert manager.call("wire", "add", {"a": 2, "b": 3}).text == "5"

    failed = manager.call("wire", "fail", {"message": "the disk is full"})
    assert failed.outcome == "tool_error" and "the disk is full" in failed.text
    unknown = manager.call("wire", "no_such_tool", {})
    assert unknown.outcome == "tool_error"

    started = time.monotonic()
    slow = manager.call("wire", "slow", {"seconds": 5})
    assert slow.outcome == "timeout" and time.monotonic() - started < 3
    assert manager.call("wire", "echo", {"text": "still here"}).outcome == "ok"  # the session outlives a timeout

    long = manager.call("wire", "echo", {"text": "x" * 1000})
    assert long.outcome == "ok" and len(long.text) <= 100 and long.text.startswith("xxxx") and "cut" in long.text
    assert http_server.counts["echo"] == 3 and http_server.counts["slow"] == 1


def test_tool_list_is_cached_and_refreshed_when_the_server_says_it_changed(http_server, managers):
    manager = managers({"wire": {"type": "http", "url": http_server.url, "capabilities": ["read"]}})
    assert "extra" not in {tool.name for tool in manager.tools("wire")}
    manager.tools("wire")
    assert http_server.counts["tools/list"] == 1

    assert manager.call("wire", "register_extra", {}).outcome == "ok"
    wait_for(lambda: "extra" in {tool.name for tool in manager.tools("wire")})
    assert http_server.counts["tools/list"] == 2  # the notification, not the five-minute TTL
    assert manager.call("wire", "extra", {}).text == "extra"


def test_tool_list_is_listed_again_after_its_ttl(http_server, managers):
    manager = managers(
        {"wire": {"type": "http", "url": http_server.url, "capabilities": ["read"]}},
        mcp_client={"tools_ttl_seconds": 0.2},
    )
    manager.tools("wire")
    manager.tools("wire")
    assert http_server.counts["tools/list"] == 1
    time.sleep(0.3)
    manager.tools("wire")
    assert http_server.counts["tools/list"] == 2


def test_a_killed_stdio_server_is_started_again_and_the_call_retried(repo, managers):
    manager = managers({"git": stdio("mcp_server_git", "--repository", str(repo))})
    assert manager.call("git", "git_log", {"repo_path": str(repo)}).outcome == "ok"
    [pid] = server_pids("mcp_server_git")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not server_pids("mcp_server_git"))

    result = manager.call("git", "git_log", {"repo_path": str(repo)})
    assert result.outcome == "ok" and result.restarted and "Add the readme" in result.text
    [new_pid] = server_pids("mcp_server_git")
    assert new_pid != pid
    [state] = manager.states()
    assert state.state == "connected" and state.restarts == 1
    assert not manager.call("git", "git_status", {"repo_path": str(repo)}).restarted


def test_an_http_server_that_restarted_gets_a_new_session(managers):
    server = McpHttpServer().start()
    manager = managers({"wire": {"type": "http", "url": server.url, "capabilities": ["read"]}})
    try:
        assert manager.call("wire", "echo", {"text": "before"}).outcome == "ok"
        server.stop()  # the new server on the same port does not know the old session id
        server = McpHttpServer(server.port).start()
        result = manager.call("wire", "echo", {"text": "after"})
        assert result.outcome == "ok" and result.text == "after" and result.restarted
        assert manager.states()[0].restarts == 1
    finally:
        manager.close()
        server.stop()


def test_a_service_that_cannot_start_is_reported_while_the_others_work(managers):
    manager = managers(
        {
            "broken": {"type": "stdio", "command": ["/nonexistent/mcp-server"], "capabilities": ["read"]},
            "off": time_service(enabled=False),
            "time": time_service(),
        }
    )
    tools, errors = manager.catalog()
    assert set(tools) == {"time"} and set(errors) == {"broken", "off"}
    assert "No such file" in errors["broken"] and "disabled" in errors["off"]
    with pytest.raises(ServiceUnavailable, match="No such file"):
        manager.tools("broken")

    assert manager.call("broken", "anything", {}).outcome == "unavailable"
    assert manager.call("off", "get_current_time", {"timezone": "UTC"}).outcome == "unavailable"
    assert manager.call("time", "get_current_time", {"timezone": "UTC"}).outcome == "ok"
    states = {state.name: state for state in manager.states()}
    assert states["broken"].state == "failed" and "No such file" in states["broken"].error
    assert states["off"].state == "disabled" and states["time"].state == "connected"
    assert len(server_pids("mcp_server_time")) == 1  # the disabled one never started


def test_a_server_that_never_initialises_fails_after_the_connect_timeout(managers):
    manager = managers(
        {
            "mute": {
                "type": "stdio",
                "command": [sys.executable, "-c", "import time; time.sleep(60)"],
                "capabilities": ["read"],
            }
        },
        mcp_client={"connect_timeout_seconds": 0.3},
    )
    result = manager.call("mute", "anything", {})
    assert result.outcome == "unavailable" and "not initialised within 0.3s" in result.text
    assert result.duration_ms < 10_000  # the deadline, then the SDK's bounded shutdown of the silent process
    assert manager.states()[0].state == "failed"


def test_repeated_start_failures_open_the_breaker(redis_env, managers):
    manager = managers(
        {"broken": {"type": "stdio", "command": ["/nonexistent/mcp-server"], "capabilities": ["read"]}},
        breakers=True,
        resilience={"breaker_failure_threshold": 2},
    )
    outcomes = [manager.call("broken", "anything", {}).outcome for _ in range(3)]
    assert outcomes == ["unavailable", "unavailable", "breaker_open"]
    [state] = manager.states()
    assert state.breaker == "open" and state.state == "failed"
    _, errors = manager.catalog()
    assert "circuit breaker open" in errors["broken"]


def test_sixteen_threads_share_one_server(managers):
    manager = managers({"time": time_service()})
    assert not server_pids("mcp_server_time")  # nothing starts before the first use
    barrier = threading.Barrier(16)
    outcomes: list[str] = []

    def work() -> None:
        barrier.wait()
        for _ in range(5):
            outcomes.append(manager.call("time", "get_current_time", {"timezone": "Europe/Paris"}).outcome)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["ok"] * 80
    assert len(server_pids("mcp_server_time")) == 1
