"""Downstream MCP services: the tool-schema tokens that selection saves, and what a tool call through it adds.

1. Three real services (the PyPI reference servers `mcp-server-git` and `mcp-server-time` over stdio, and the
   project's test server over streamable HTTP) are listed through the orchestrator's `ServiceManager`. For a mixed
   set of requests, the tool-schema tokens each request is offered with selection are summed against offering every
   tool of every service on every request.
2. One tool call (`get_current_time` on the time server) through the orchestrator (schema check, breaker, session
   on its event-loop thread) against the same call made directly with the SDK's `ClientSession`, sequentially,
   interleaved, median.

Run: python tests/bench/services.py. Targets: selection offers at most a third of the schema tokens; overhead
under 5 ms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from support import ROOT  # noqa: F401 - puts the project on the import path

from shared.routing import analyze
from shared.services.manager import ServiceManager
from shared.services.selection import select_services
from shared.services.toolbox import gateway_call
from shared.settings import load_settings
from tests.wire.mcp_http_server import McpHttpServer

CALLS = 300
REQUESTS = [
    "What is the capital of Australia?",
    "Write a Python function that merges two sorted lists",
    "Show the last five commits in the git log",
    "Summarize what changed in the repository since yesterday's commit",
    "What time is it in Tokyo right now?",
    "Convert 9am New York time to Berlin time zone",
    "Explain the difference between TCP and UDP",
    "Draft an email to the team about the release",
    "Which files are staged for commit in the repository?",
    "Echo back the phrase hello world with the echo tool",
    "Add 17 and 25 with the calculator",
    "Search the git history for the commit that added the README",
    "Translate 'good morning' into French",
    "Analyze the diff of the last commit for risky changes",
    "What is the current time in UTC?",
    "Refactor this class to use dataclasses",
    "List the git branches of the repository",
    "Design a REST API for a todo app",
    "Tell me a fun fact about octopuses",
    "Compute the sum of 3 and 4 with the calculator",
]


def git_repository(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    run = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("config", "user.email", "bench@example.com")
    run("config", "user.name", "Bench")
    (repo / "README.md").write_text("bench\n")
    run("add", "README.md")
    run("commit", "-q", "-m", "Add the README")
    return repo


async def direct_calls(count: int) -> list[float]:
    """The same tool called straight through the SDK: one stdio session, sequential calls."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_server_time", "--local-timezone", "UTC"])
    samples = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for _ in range(30):
            await session.call_tool("get_current_time", {"timezone": "UTC"})
        for _ in range(count):
            started = time.perf_counter()
            await session.call_tool("get_current_time", {"timezone": "UTC"})
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="services-bench-"))
    repo = git_repository(work)
    http_server = McpHttpServer().start()
    settings = load_settings(
        mcp_services={
            "git": {
                "type": "stdio",
                "command": [sys.executable, "-m", "mcp_server_git"],
                "args": ["--repository", str(repo)],
                "capabilities": ["read", "search", "analyze", "write", "git", "commit", "repository", "branch"],
            },
            "time": {
                "type": "stdio",
                "command": [sys.executable, "-m", "mcp_server_time"],
                "args": ["--local-timezone", "UTC"],
                "capabilities": ["read", "time", "timezone", "clock"],
            },
            "calc": {
                "type": "http",
                "url": http_server.url,
                "capabilities": ["read", "analyze", "calculator", "echo", "sum"],
            },
        }
    )
    manager = ServiceManager(settings)
    try:
        catalog, failed = manager.catalog()
        if failed:
            raise SystemExit(f"services did not start: {failed}")
        all_tokens = sum(tool.schema_tokens for tools in catalog.values() for tool in tools)
        selected_total, offered_counts = 0, []
        for request in REQUESTS:
            intent = analyze(request, {}, None, settings).intent
            selection = select_services(request, intent, settings.mcp_services, catalog)
            selected_total += selection.schema_tokens_offered
            offered_counts.append(selection.tools_offered)
        all_total = all_tokens * len(REQUESTS)

        for _ in range(30):
            gateway_call(manager, "time", "get_current_time", {"timezone": "UTC"})
        routed = []
        for _ in range(CALLS):
            started = time.perf_counter()
            result = gateway_call(manager, "time", "get_current_time", {"timezone": "UTC"})
            routed.append((time.perf_counter() - started) * 1000)
            assert result.outcome == "ok", result
        direct = asyncio.run(direct_calls(CALLS))
    finally:
        manager.close()
        http_server.stop()

    direct_ms, routed_ms = statistics.median(direct), statistics.median(routed)
    tools_all = sum(len(tools) for tools in catalog.values())
    table = Table(title="MCP services: tool selection and call overhead")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("services / tools configured", f"{len(catalog)} / {tools_all}")
    table.add_row(f"requests (mixed; {sum(1 for n in offered_counts if n)} offered any tool)", str(len(REQUESTS)))
    table.add_row("schema tokens offered, all tools on every request", f"{all_total:,}")
    table.add_row("schema tokens offered, with selection", f"{selected_total:,}")
    table.add_row("share offered", f"{selected_total / all_total:.1%}")
    table.add_row("tool call, SDK directly (median ms)", f"{direct_ms:.2f}")
    table.add_row("tool call through the orchestrator (median ms)", f"{routed_ms:.2f}")
    table.add_row("overhead (median ms)", f"{routed_ms - direct_ms:.2f}")
    Console().print(table)
    print(
        json.dumps(
            {
                "schema_tokens_selected": selected_total,
                "schema_tokens_all": all_total,
                "tool_call_overhead_ms_p50": round(routed_ms - direct_ms, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
