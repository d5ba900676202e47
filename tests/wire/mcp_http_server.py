"""A small MCP server of our own over streamable HTTP, built on the SDK's server side, for the service manager.

Tools: `echo(text)`, `add(a, b)`, `slow(seconds)`, `fail(message)` (answers with an error result), `calls()` (how
often each tool was called and the tool list was asked for, as JSON) and `register_extra()` (adds a tool `extra`
and sends `notifications/tools/list_changed`). Counts are also on `server.counts` for tests in the same process.

In a test: `server = McpHttpServer(); server.start(); server.url; ...; server.stop()` (uvicorn in a daemon thread
on a free port). Standalone: `python -m tests.wire.mcp_http_server --port 8931` serves until killed.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections import Counter
from typing import Any

import anyio
import uvicorn
from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError


class CountingServer(MCPServer):
    """Counts tool calls by name, and tool listings under `tools/list`."""

    def __init__(self) -> None:
        super().__init__("wire-mcp", version="1.0", log_level="WARNING")
        self.counts: Counter[str] = Counter()

    async def list_tools(self) -> list[types.Tool]:
        self.counts["tools/list"] += 1
        return await super().list_tools()

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> types.CallToolResult | types.InputRequiredResult:
        self.counts[name] += 1
        return await super().call_tool(name, arguments, context)


def build_server() -> CountingServer:
    server = CountingServer()

    @server.tool(description="Answer with the given text.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> str:
        return str(a + b)

    @server.tool(description="Wait, then answer: for timeouts.")
    async def slow(seconds: float) -> str:
        await anyio.sleep(seconds)
        return f"slept {seconds}s"

    @server.tool(description="Answer with an error result carrying the message.")
    def fail(message: str) -> str:
        raise ToolError(message)

    @server.tool(description="How often each tool was called, and the tool list asked for, as JSON.")
    def calls() -> str:
        return json.dumps(dict(server.counts))

    @server.tool(description="Add the tool `extra` and tell the client its tool list changed.")
    async def register_extra(ctx: Context) -> str:
        def extra() -> str:
            return "extra"

        server.add_tool(extra, name="extra", description="Registered at run time.")
        await ctx.session.send_tool_list_changed()
        return "registered"

    return server


class McpHttpServer:
    """The server under uvicorn in a daemon thread on 127.0.0.1; `port=0` takes any free port."""

    def __init__(self, port: int = 0) -> None:
        self.mcp = build_server()
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(self.mcp.streamable_http_app(), log_level="warning", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def counts(self) -> Counter[str]:
        return self.mcp.counts

    def start(self) -> McpHttpServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8931)
    port = parser.parse_args().port
    server = McpHttpServer(port).start()
    print(f"serving {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
