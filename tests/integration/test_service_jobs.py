"""Jobs that use downstream MCP services, end to end: the API plans and offers the tools, a real worker process runs
the tool-call loop against real MCP servers (`mcp-server-git` from PyPI over stdio, the project's own server over
streamable HTTP), and a provider wire server plays the model, asking for tools in OpenAI's or Anthropic's format."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from shared.requests import JobRequest
from shared.settings import get_settings
from tests.integration.conftest import poll
from tests.wire.mcp_http_server import McpHttpServer
from tests.wire.servers import Reply

pytestmark = pytest.mark.timeout(120)

GIT_QUESTION = "Show the last commits in the git log of the repository"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repository(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "Dev")
    for name, message in (("a.txt", "Teach the parser about tabs"), ("b.txt", "Fix the off-by-one in paging")):
        (repo / name).write_text(message)
        git(repo, "add", name)
        git(repo, "commit", "-q", "-m", message)
    return repo


@pytest.fixture
def calc():
    server = McpHttpServer().start()
    yield server
    server.stop()


@pytest.fixture
def services_env(repository, calc, monkeypatch) -> dict:
    services = {
        "git": {
            "type": "stdio",
            "command": [sys.executable, "-m", "mcp_server_git"],
            "args": ["--repository", str(repository)],
            "capabilities": ["read", "search", "analyze", "write", "git", "commit", "repository"],
        },
        "calc": {
            "type": "http",
            "url": calc.url,
            "capabilities": ["read", "analyze", "calculator", "sum"],
            "timeout_seconds": 5,
        },
    }
    monkeypatch.setenv("ORCH_MCP_SERVICES", json.dumps(services))
    get_settings.cache_clear()
    return services


@pytest.fixture
def running(services_env, api, start_worker):
    """API (this process) and one worker process, both configured with the services."""
    start_worker()
    return api


def submit(api, request: str, model: str) -> dict:
    response = api.post("/v1/jobs", json={"request": request, "options": {"preferred_models": [model]}})
    assert response.status_code == 202, response.text
    return poll(api, response.json()["id"], timeout=60)


def echo_results(results) -> str:
    return "From the tools: " + " | ".join(result.text for result in results)


def test_a_git_question_is_answered_from_the_real_git_log_openai_format(running, wire_servers, repository):
    openai = wire_servers["openai"]
    openai.push(
        Reply(tool_calls=[("git__git_log", {"repo_path": str(repository), "max_count": 5})]),
        Reply(respond=echo_results),
    )
    record = submit(running, GIT_QUESTION, "gpt-4o-mini")

    assert record["status"] == "succeeded", record
    assert "Teach the parser about tabs" in record["result"] and "Fix the off-by-one in paging" in record["result"]
    [call] = record["tool_calls"]
    assert (call["service"], call["tool"], call["outcome"], call["restarted"]) == ("git", "git_log", "ok", False)
    assert call["arguments"]["max_count"] == 5
    offered = [tool["function"]["name"] for tool in openai.requests[0].body["tools"]]
    assert "git__git_log" in offered and "git__git_commit" not in offered  # a read gets the read tools only
    assert [choice["service"] for choice in record["services"]["services"]] == ["git"]
    assert record["services"]["schema_tokens_offered"] < record["services"]["schema_tokens_all"]
    # the second turn carried the tool's answer back in OpenAI's format
    tool_turn = next(m for m in openai.requests[1].body["messages"] if m["role"] == "tool")
    assert "Teach the parser about tabs" in tool_turn["content"]
    # both turns are billed
    assert record["usage"]["input_tokens"] > 0

    metrics = running.get("/v1/metrics", params={"period": "5m"}).json()
    assert metrics["service_calls"] == {"git": 1}
    assert 'orchestrator_service_calls_total{service="git"} 1.0' in running.get("/metrics").text


def test_bad_arguments_never_reach_the_service_and_the_model_corrects_them_anthropic_format(
    running, wire_servers, calc
):
    anthropic = wire_servers["anthropic"]
    anthropic.push(
        Reply(tool_calls=[("calc__add", {"a": "forty", "b": 2})]),
        Reply(tool_calls=[("calc__add", {"a": 40, "b": 2})]),
        Reply(respond=echo_results),
    )
    record = submit(running, "Use the calculator to add 40 and 2", "claude-3-5-haiku-20241022")

    assert record["status"] == "succeeded", record
    assert [call["outcome"] for call in record["tool_calls"]] == ["invalid_arguments", "ok"]
    assert "a: 'forty' is not of type 'integer'" in record["tool_calls"][0]["error"]
    assert record["result"].endswith("| 42")  # the model read the refusal, then the sum
    assert calc.counts["add"] == 1  # the malformed call never reached the server
    # the refusal went back to the model as an error tool_result
    [refusal] = [
        block for block in anthropic.requests[1].body["messages"][-1]["content"] if block["type"] == "tool_result"
    ]
    assert refusal["is_error"] is True
    assert running.get("/v1/metrics", params={"period": "5m"}).json()["service_errors"] == {"calc": 1}


def test_a_request_that_needs_no_service_is_offered_no_tools(running, wire_servers):
    record = submit(running, "What is a noun?", "gpt-4o-mini")
    assert record["status"] == "succeeded"
    assert record["services"]["services"] == [] and record["tool_calls"] == []
    assert "tools" not in wire_servers["openai"].requests[-1].body


def test_a_tool_error_goes_back_to_the_model_and_the_job_still_succeeds(running, wire_servers):
    wire_servers["openai"].push(
        Reply(tool_calls=[("calc__fail", {"message": "disk on fire"})]), Reply(respond=echo_results)
    )
    record = submit(running, "Run the calculator's fail tool", "gpt-4o-mini")
    assert record["status"] == "succeeded"
    [call] = record["tool_calls"]
    assert call["outcome"] == "tool_error" and "disk on fire" in call["error"]
    assert "disk on fire" in record["result"]


def _git_server_pids(repository: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mcp_server_git" in command and str(repository).encode() in command:
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the server process through /proc")
def test_a_git_server_killed_mid_job_is_restarted_and_the_job_says_so(running, wire_servers, repository):
    openai = wire_servers["openai"]
    log_call = ("git__git_log", {"repo_path": str(repository), "max_count": 1})
    # turn 1 calls git_log (the server starts); turn 2 is answered a second late, while the server is killed
    openai.push(Reply(tool_calls=[log_call]), Reply(tool_calls=[log_call], delay_s=1.0), Reply(respond=echo_results))

    def kill_when_second_turn_arrives() -> None:
        deadline = time.monotonic() + 30
        while len(openai.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in _git_server_pids(repository):
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_second_turn_arrives)
    killer.start()
    record = submit(running, GIT_QUESTION, "gpt-4o-mini")
    killer.join()

    assert record["status"] == "succeeded", record
    first, second = record["tool_calls"]
    assert (first["outcome"], first["restarted"]) == ("ok", False)
    assert (second["outcome"], second["restarted"]) == ("ok", True)
    assert "Fix the off-by-one in paging" in record["result"]
    states = {state["name"]: state for state in running.get("/v1/services").json()}
    assert states["git"]["type"] == "stdio"


def test_services_endpoint_and_analysis_show_the_selection(services_env, api):
    analysis = api.post("/v1/analyze", json={"request": GIT_QUESTION}).json()
    selection = analysis["services"]
    assert [choice["service"] for choice in selection["services"]] == ["git"]
    assert selection["skipped"]["calc"] == "the request names none of its topics"
    assert 0 < selection["schema_tokens_offered"] < selection["schema_tokens_all"]

    states = {state["name"]: state for state in api.get("/v1/services").json()}
    assert set(states) == {"git", "calc"}
    assert "git_log" in states["git"]["tools"] and "add" in states["calc"]["tools"]
    assert states["git"]["breaker"] == "closed"


def test_a_host_reaches_downstream_tools_through_the_orchestrators_mcp_server(services_env, api, calc):
    from mcp import Client

    async def main():
        async with Client(f"{str(api.base_url).rstrip('/')}/mcp") as client:
            listing = await client.call_tool("list_services", {})
            good = await client.call_tool(
                "call_service_tool", {"service": "calc", "tool": "add", "arguments": {"a": 2, "b": 3}}
            )
            bad = await client.call_tool(
                "call_service_tool", {"service": "calc", "tool": "add", "arguments": {"a": "two"}}
            )
            unknown = await client.call_tool("call_service_tool", {"service": "nope", "tool": "x"})
            return listing, good, bad, unknown

    listing, good, bad, unknown = anyio.run(main)
    names = {service["name"] for service in listing.structured_content["result"]}
    assert names == {"git", "calc"}
    assert (good.structured_content["outcome"], good.structured_content["text"]) == ("ok", "5")
    assert bad.structured_content["outcome"] == "invalid_arguments"
    assert "'b' is a required property" in bad.structured_content["text"]
    assert calc.counts["add"] == 1  # only the valid call reached the server
    assert unknown.is_error and "no service 'nope'" in unknown.content[0].text


def test_the_step_limit_ends_a_model_that_keeps_calling_tools(
    services_env, monkeypatch, api, start_worker, wire_servers, calc
):
    monkeypatch.setenv("ORCH_MCP_CLIENT__MAX_TOOL_STEPS", "2")
    start_worker()
    wire_servers["openai"].set_model("gpt-4o-mini", Reply(tool_calls=[("calc__echo", {"text": "again"})]))
    record = submit(api, "Use the calculator echo tool forever", "gpt-4o-mini")
    assert record["status"] == "failed"
    assert "still asked for tools after 2 steps" in record["error"]
    # the two turns answered all the same: the job is billed for them, not for nothing
    assert record["usage"]["output_tokens"] > 0 and record["cost_usd"] > 0 and record["model_used"] == "gpt-4o-mini"
    assert [(call["step"], call["outcome"]) for call in record["tool_calls"]] == [(1, "ok"), (2, "ok")]
    assert calc.counts["echo"] == 2


def test_a_job_offered_tools_reserves_every_turn_of_the_tool_loop(services_env, redis_env, provider_env):
    from api.app import build_orchestrator
    from shared.auth import KeyStore, worst_case_cost

    settings = get_settings()
    turns = settings.mcp_client.max_tool_steps
    with build_orchestrator(settings) as orchestrator:
        api_key, _ = KeyStore(settings, orchestrator.jobs.redis).create("tools")
        with_tools = orchestrator.submit(JobRequest(request="Use the calculator to sum 2 and 3"), api_key=api_key)
        plain = orchestrator.submit(JobRequest(request="Write a haiku about autumn"), api_key=api_key)
    assert with_tools.services and with_tools.services.services and turns > 1
    assert with_tools.billing.reserved_usd == pytest.approx(worst_case_cost(with_tools.plan, settings, turns))
    assert not (plain.services and plain.services.services)
    assert plain.billing.reserved_usd == pytest.approx(worst_case_cost(plain.plan, settings))
