"""The MCP front end through the SDK's own client, over streamable HTTP and over stdio, with real workers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters, types

from tests.integration.conftest import poll

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"orchestrate", "analyze_request", "get_metrics", "submit_job", "get_job", "cancel_job"}
QUESTION = "What is a noun?"


def mcp_url(api) -> str:
    return f"{str(api.base_url).rstrip('/')}/mcp"


def stdio_server(extra: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "api.cli", "mcp"], cwd=str(ROOT), env={**os.environ, **(extra or {})}
    )


def test_tools_and_their_schemas_over_http(api):
    async def main():
        async with Client(mcp_url(api)) as client:
            return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in anyio.run(main)}
    assert TOOLS <= set(tools)
    orchestrate = tools["orchestrate"]
    assert orchestrate.description.startswith("Answer a request with the cheapest capable model")
    properties = orchestrate.input_schema["properties"]
    assert {"request", "context", "options", "document", "document_id"} <= set(properties)
    assert "ctx" not in properties and orchestrate.input_schema["required"] == ["request"]
    options = orchestrate.input_schema["$defs"]["RequestOptions"]["properties"]
    assert {"preferred_models", "max_cost", "max_tokens", "strategy"} <= set(options)
    assert orchestrate.output_schema is not None
    assert tools["get_metrics"].input_schema["properties"]["period"]["enum"] == ["1m", "5m", "1h", "1d"]


def test_orchestrate_over_http_returns_the_result_with_progress_in_order(api, start_worker, wire_servers):
    start_worker()
    messages: list[tuple[float, str]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        messages.append((value, message))

    async def main():
        async with Client(mcp_url(api)) as client:
            return await client.call_tool(
                "orchestrate", {"request": QUESTION, "options": {"max_tokens": 200}}, progress_callback=progress
            )

    result = anyio.run(main)
    assert not result.is_error, result.content
    body = result.structured_content
    assert body["status"] == "succeeded" and body["model"] == "gemini-2.0-flash"
    assert body["result"] == f"[gemini-2.0-flash] {QUESTION}"
    assert body["cost_usd"] > 0 and body["savings_pct"] > 90
    assert "gemini-2.0-flash" in result.content[0].text  # readable text beside the structured content
    stages = [message for _, message in messages]
    assert stages[0] == "queued" and stages[-1] == "done"
    assert [value for value, _ in messages] == sorted(value for value, _ in messages)
    assert wire_servers["google"].requests[-1].body["generationConfig"]["maxOutputTokens"] == 200


def test_analyze_and_metrics_tools_match_the_http_api(api, start_worker):
    start_worker()
    poll(api, api.post("/v1/jobs", json={"request": QUESTION}).json()["id"])
    request = {"request": "Refactor the authentication module", "context": {"language": "Go"}}

    async def main():
        async with Client(mcp_url(api)) as client:
            analysis = await client.call_tool("analyze_request", request)
            metrics = await client.call_tool("get_metrics", {"period": "5m"})
            return analysis.structured_content, metrics.structured_content

    analysis, metrics = anyio.run(main)
    assert analysis == api.post("/v1/analyze", json=request).json()
    assert metrics == api.get("/v1/metrics", params={"period": "5m"}).json()
    assert metrics["successful_requests"] == 1


def test_bad_arguments_and_failures_are_tool_errors(api):
    async def main():
        async with Client(mcp_url(api)) as client:
            return [
                await client.call_tool("orchestrate", {"request": ""}),
                await client.call_tool("orchestrate", {"request": "hi", "options": {"max_cost": 1e-12}}),
                await client.call_tool("get_metrics", {"period": "2w"}),
                await client.call_tool("get_job", {"job_id": "nope"}),
                await client.call_tool("analyze_request", {"request": "hi", "options": {"preferred_models": ["x"]}}),
            ]

    results = anyio.run(main)
    assert all(result.is_error for result in results)
    texts = [result.content[0].text for result in results]
    assert "at least 1 character" in texts[0]
    assert "no model satisfies the constraints" in texts[1]
    assert "no job nope" in texts[3]
    assert "unknown model(s) x" in texts[4]


def test_submit_get_and_cancel_jobs_as_tools(api):
    async def main():
        async with Client(mcp_url(api)) as client:
            handle = (await client.call_tool("submit_job", {"request": QUESTION})).structured_content
            cancelled = (await client.call_tool("cancel_job", {"job_id": handle["id"]})).structured_content
            again = await client.call_tool("cancel_job", {"job_id": handle["id"]})
            fetched = (await client.call_tool("get_job", {"job_id": handle["id"]})).structured_content
            return handle, cancelled, again, fetched

    handle, cancelled, again, fetched = anyio.run(main)
    assert handle["queue"] == "llm.simple" and handle["status"] == "queued"
    assert cancelled["status"] == fetched["status"] == "cancelled"
    assert again.is_error and "already cancelled" in again.content[0].text


def test_orchestrate_over_stdio(start_worker, wire_servers):
    start_worker()

    async def main():
        async with Client(stdio_server()) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            result = await client.call_tool("orchestrate", {"request": QUESTION})
            return tools, result

    tools, result = anyio.run(main)
    assert TOOLS <= tools
    assert not result.is_error, result.content
    assert result.structured_content["result"] == f"[gemini-2.0-flash] {QUESTION}"


def test_the_hosts_model_serves_through_sampling_at_zero_cost(redis_env, provider_env, wire_servers):
    asked: list[types.CreateMessageRequestParams] = []

    async def sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant",
            model="host-model-1",
            stop_reason="maxTokens",
            content=types.TextContent(type="text", text="Paris, said the host."),
        )

    async def main():
        server = stdio_server({"ORCH_USE_HOST_MODEL": "true"})
        async with Client(server, sampling_callback=sampling, mode="legacy") as client:  # 2025-11-25 has sampling
            answer = await client.call_tool("orchestrate", {"request": QUESTION})
            metrics = await client.call_tool("get_metrics", {"period": "1m"})
            return answer, metrics

    answer, metrics = anyio.run(main)
    assert not answer.is_error, answer.content
    body = answer.structured_content
    assert body["result"] == "Paris, said the host." and body["model"] == "host-model-1"
    assert body["cost_usd"] == 0 and body["savings_pct"] == 100
    assert body["stop_reason"] == "length"  # the host's own reason, in the providers' words
    assert asked[0].model_preferences.hints[0].name == "gemini-2.0-flash"  # the planned model, as a hint
    assert asked[0].messages[0].content.text == QUESTION
    report = metrics.structured_content
    assert report["total_requests"] == 1 and report["total_cost_usd"] == 0
    assert report["provider_distribution"] == {"mcp-host": 1} and report["baseline_cost_usd"] > 0
    assert all(server.requests == [] for server in wire_servers.values())  # no provider was called


def test_without_sampling_on_the_protocol_the_providers_serve(start_worker, wire_servers):
    start_worker()

    async def sampling(context, params):
        raise AssertionError("a 2026-07-28 session cannot sample")

    async def main():
        async with Client(stdio_server({"ORCH_USE_HOST_MODEL": "true"}), sampling_callback=sampling) as client:
            return await client.call_tool("orchestrate", {"request": QUESTION})

    result = anyio.run(main)
    assert not result.is_error, result.content
    assert result.structured_content["model"] == "gemini-2.0-flash" and result.structured_content["cost_usd"] > 0


def test_stdio_server_runs_embedded_when_no_redis_is_configured(provider_env, wire_servers, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ORCH_REDIS_URL"} | {"ORCH_DATA_DIR": str(tmp_path)}
    server = StdioServerParameters(command=sys.executable, args=["-m", "api.cli", "mcp"], cwd=str(ROOT), env=env)

    async def main():
        async with Client(server) as client:
            return await client.call_tool("orchestrate", {"request": QUESTION})

    result = anyio.run(main)
    assert not result.is_error, result.content  # stdout stayed a clean MCP channel with the worker in-process
    assert result.structured_content["result"] == f"[gemini-2.0-flash] {QUESTION}"
    # the server ran on this data directory and was stopped with the session: no URL file left to join
    assert (tmp_path / "valkey" / "appendonlydir").exists() and not (tmp_path / "valkey" / "url").exists()
