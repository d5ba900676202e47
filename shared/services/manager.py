"""Client sessions to the downstream MCP services: one per service per process, shared by every worker thread.

Workers are threads running sync code, while MCP sessions are async and tied to the task that opened them (anyio
task groups and cancel scopes must be left by the task that entered them). So each session lives in a task of its
own on one private event-loop thread (an anyio blocking portal), and the public methods are sync calls into it.
A service is started on first use; one that cannot start is reported, never fatal. A stdio server found dead is
started again and the call retried once. Calls pass the same circuit breakers as the providers, named `mcp:<name>`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO, TypeVar

import anyio
import httpx2
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client, types
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client

from shared.breaker import CircuitBreakers, Gate
from shared.services.config import McpService
from shared.services.models import ServiceState, ServiceTool, ToolResult
from shared.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest quiet spell on an HTTP service's event stream before the connection counts as lost.
HTTP_READ_TIMEOUT_SECONDS = 300.0


class ServiceUnavailable(Exception):
    """A service that cannot be started, initialised or listed; the message says why."""


@dataclass(eq=False)
class _Link:
    """One service's session and tool list. Changed under `lock` (or, for the tool list, on the loop thread);
    read from any thread without it, which is safe for single attribute reads."""

    name: str
    spec: McpService
    lock: threading.Lock = field(default_factory=threading.Lock)
    session: ClientSession | None = None
    task: Future[None] | None = None  # the task holding the session; cancelling it closes the session
    error: str | None = None  # why the last start failed
    restarts: int = 0
    tools: list[ServiceTool] | None = None
    listed_at: float | None = None  # wall-clock time of the last listing, for states
    fresh_until: float = 0.0  # monotonic; 0 = list again before use
    generation: int = 0  # bumped by tools/list_changed, so a listing already under way is not taken as fresh


class ServiceManager:
    """One per process. Sessions live on a private asyncio event-loop thread; the public methods are sync and
    thread-safe (workers call them from many threads at once)."""

    def __init__(self, settings: Settings, breakers: CircuitBreakers | None = None) -> None:
        self.settings = settings
        self.breakers = breakers
        self._links = {name: _Link(name, spec) for name, spec in settings.mcp_services.items() if spec.enabled}
        self._portal: BlockingPortal | None = None
        self._exits = ExitStack()
        self._portal_lock = threading.Lock()
        self._closed = False

    # -- public ------------------------------------------------------------------------------------------------

    def tools(self, service: str) -> list[ServiceTool]:
        """The service's tools, listed again after `tools_ttl_seconds` or once the server says they changed."""
        link = self._link(service)
        if (tools := _fresh(link)) is not None:
            return tools
        if not self._admit(service):
            raise ServiceUnavailable(f"{service}: circuit breaker open after repeated failures")
        generation = link.generation
        try:
            listed, _ = self._request(link, _list_tools)
        except Exception as error:  # whatever stops the listing makes the service unusable here
            self._count(service, healthy=False)
            if isinstance(error, ServiceUnavailable):
                raise
            raise ServiceUnavailable(f"{service}: cannot list tools: {_reason(error)}") from error
        self._count(service, healthy=True)
        tools = [
            ServiceTool(
                service=service, name=tool.name, description=tool.description or "", input_schema=tool.input_schema
            )
            for tool in listed
        ]
        link.tools, link.listed_at = tools, time.time()
        if link.generation == generation:
            link.fresh_until = time.monotonic() + self.settings.mcp_client.tools_ttl_seconds
        return tools

    def catalog(self) -> tuple[dict[str, list[ServiceTool]], dict[str, str]]:
        """Tools per usable service and the error per failed or disabled one. Services start in parallel, so one
        slow to start does not hold up the others."""
        names = list(self.settings.mcp_services)
        tools: dict[str, list[ServiceTool]] = {}
        errors: dict[str, str] = {}
        cached = {name: _fresh(self._links[name]) for name in names if name in self._links}
        if len(cached) == len(names) and None not in cached.values():  # the planning path's common case: no threads
            return cached, errors
        with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="mcp-catalog") as pool:
            listings = {name: pool.submit(self.tools, name) for name in names}
        for name, listing in listings.items():
            try:
                tools[name] = listing.result()
            except Exception as error:  # the catalog reports every trouble, whatever it is
                errors[name] = str(error)
        return tools, errors

    def call(self, service: str, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """Call one tool. Service trouble is an outcome, never an exception; arguments are checked a layer above."""
        started = time.perf_counter()
        result = self._call(service, tool, arguments)
        return result.model_copy(update={"duration_ms": round((time.perf_counter() - started) * 1000, 3)})

    def states(self) -> list[ServiceState]:
        """Every configured service as it stands now; connects nothing."""
        open_breakers = self.breakers.unavailable() if self.breakers else set()
        states = []
        for name, spec in self.settings.mcp_services.items():
            link = self._links.get(name)
            state = (
                "disabled"
                if link is None
                else "connected"
                if link.session is not None
                else "failed"
                if link.error
                else "idle"
            )
            states.append(
                ServiceState(
                    name=name,
                    type=spec.type,
                    capabilities=spec.capabilities,
                    state=state,
                    error=link.error if link else None,
                    tools=[tool.name for tool in (link.tools or [])] if link else [],
                    tools_listed_at=link.listed_at if link else None,
                    restarts=link.restarts if link else 0,
                    breaker="open" if f"mcp:{name}" in open_breakers else "closed",
                )
            )
        return states

    def close(self) -> None:
        """Stop every server and the loop thread; waits until the stdio servers have exited."""
        with self._portal_lock:
            self._closed = True
        for link in self._links.values():
            with link.lock:
                self._stop(link)
        self._exits.close()  # returns once every session task has unwound

    # -- calls -------------------------------------------------------------------------------------------------

    def _call(self, service: str, tool: str, arguments: dict[str, Any]) -> ToolResult:
        spec = self.settings.mcp_services.get(service)
        if spec is None or not spec.enabled:
            why = "disabled in the configuration" if spec else "no such service is configured"
            return ToolResult(outcome="unavailable", text=f"{service}: {why}")
        link = self._links[service]
        if not self._admit(service):
            return ToolResult(
                outcome="breaker_open", text=f"{service}: circuit breaker open after repeated failures; not called"
            )
        try:
            answer, restarted = self._request(link, partial(_call_tool, tool, arguments))
        except ServiceUnavailable as error:
            self._count(service, healthy=False)
            return ToolResult(outcome="unavailable", text=str(error))
        except TimeoutError:
            self._count(service, healthy=False)
            return ToolResult(outcome="timeout", text=f"{service}.{tool}: no answer within {spec.timeout_seconds}s")
        except MCPError as error:
            if error.code == types.CONNECTION_CLOSED:
                self._count(service, healthy=False)
                return ToolResult(outcome="failed", text=f"{service}.{tool}: connection lost: {error.message}")
            self._count(service, healthy=True)  # a JSON-RPC error is the server's answer (e.g. unknown tool)
            return ToolResult(outcome="tool_error", text=f"{service}.{tool}: {error.message}")
        except Exception as error:  # a transport or protocol fault the SDK let through
            log.warning("%s.%s failed", service, tool, exc_info=True)
            self._count(service, healthy=False)
            return ToolResult(outcome="failed", text=f"{service}.{tool}: {_reason(error)}")
        self._count(service, healthy=True)
        limit = self.settings.mcp_client.max_result_chars
        return ToolResult(
            outcome="tool_error" if answer.is_error else "ok", text=_text(answer, limit), restarted=restarted
        )

    def _request(self, link: _Link, request: Callable[[ClientSession], Awaitable[T]]) -> tuple[T, bool]:
        """Send one request on the service's session, starting the service first if needed. A closed connection
        means the server died (or forgot the session): it is started again and the request sent once more; the
        flag says so."""
        session = self._session(link)
        try:
            return self._loop().call(_within, link.spec.timeout_seconds, request, session), False
        except MCPError as error:
            if not _session_lost(link.spec, error):
                raise
            log.warning("MCP service %s: session lost (%s); starting it again", link.name, error.message)
        session = self._session(link, dead=session)
        return self._loop().call(_within, link.spec.timeout_seconds, request, session), True

    # -- sessions ----------------------------------------------------------------------------------------------

    def _session(self, link: _Link, dead: ClientSession | None = None) -> ClientSession:
        """The live session, started if there is none. Under the service's lock, so threads arriving together
        start one server, and of many calls that found the same session dead only the first starts another."""
        with link.lock:
            if dead is not None and link.session is dead:
                self._stop(link)
                link.restarts += 1
            if link.session is None:
                self._start(link)
            assert link.session is not None
            return link.session

    def _start(self, link: _Link) -> None:
        try:
            task, session = self._loop().start_task(self._hold, link, name=f"mcp:{link.name}")
        except Exception as error:
            closed = isinstance(error, MCPError) and error.code == types.CONNECTION_CLOSED
            link.error = "the server closed the connection before initialising" if closed else _reason(error)
            log.warning("MCP service %s cannot start: %s", link.name, link.error)
            raise ServiceUnavailable(f"{link.name}: cannot start: {link.error}") from error
        link.session, link.task, link.error = session, task, None
        link.fresh_until = 0.0  # a new server may offer other tools

    @staticmethod
    def _stop(link: _Link) -> None:
        if link.task is not None:
            link.task.cancel()  # the portal cancels the task; the SDK then stops the server
        link.session = link.task = None

    async def _hold(self, link: _Link, *, task_status: TaskStatus[ClientSession]) -> None:
        """Open the transport and the session, initialise, hand the session over, then keep both open until the
        task is cancelled. The deadline covers starting and initialising only."""
        seconds = self.settings.mcp_client.connect_timeout_seconds
        with anyio.CancelScope(deadline=anyio.current_time() + seconds) as scope:
            async with AsyncExitStack() as stack:
                read, write = await _open_transport(link.spec, stack, seconds)
                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=partial(_on_message, link))
                )
                await session.initialize()
                scope.deadline = float("inf")
                task_status.started(session)
                await anyio.sleep_forever()
        raise TimeoutError(f"not initialised within {seconds}s")

    def _loop(self) -> BlockingPortal:
        with self._portal_lock:
            if self._closed:
                raise ServiceUnavailable("the service manager is closed")
            if self._portal is None:
                self._portal = self._exits.enter_context(start_blocking_portal(name="mcp-services"))
            return self._portal

    def _link(self, service: str) -> _Link:
        link = self._links.get(service)
        if link is None:
            why = "disabled in the configuration" if service in self.settings.mcp_services else "no such service"
            raise ServiceUnavailable(f"{service}: {why}")
        return link

    # -- breakers ----------------------------------------------------------------------------------------------

    def _admit(self, service: str) -> bool:
        return self.breakers is None or self.breakers.acquire(f"mcp:{service}") is not Gate.open

    def _count(self, service: str, healthy: bool) -> None:
        if self.breakers is None:
            return
        if healthy:
            self.breakers.success(f"mcp:{service}")
        else:
            self.breakers.failure(f"mcp:{service}")


def _fresh(link: _Link) -> list[ServiceTool] | None:
    """The service's cached tool list while it is fresh."""
    tools = link.tools
    return tools if tools is not None and time.monotonic() < link.fresh_until else None


# -- on the loop thread ------------------------------------------------------------------------------------------


async def _open_transport(spec: McpService, stack: AsyncExitStack, connect_seconds: float) -> tuple[Any, Any]:
    if spec.type == "stdio":
        server = StdioServerParameters(command=spec.argv[0], args=spec.argv[1:], env=spec.env or None, cwd=spec.cwd)
        return await stack.enter_async_context(stdio_client(server, errlog=_errlog()))
    timeout = httpx2.Timeout(connect_seconds, read=max(HTTP_READ_TIMEOUT_SECONDS, spec.timeout_seconds))
    client = await stack.enter_async_context(httpx2.AsyncClient(headers=spec.headers, timeout=timeout))
    assert spec.url is not None  # the config requires it for http
    return await stack.enter_async_context(streamable_http_client(spec.url, http_client=client))


async def _on_message(link: _Link, message: IncomingMessage) -> None:
    if isinstance(message, types.ToolListChangedNotification):
        link.generation += 1
        link.fresh_until = 0.0


async def _within(seconds: float, request: Callable[[ClientSession], Awaitable[T]], session: ClientSession) -> T:
    with anyio.fail_after(seconds):
        return await request(session)


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        if not page.next_cursor:
            return tools
        cursor = page.next_cursor


async def _call_tool(tool: str, arguments: dict[str, Any], session: ClientSession) -> types.CallToolResult:
    return await session.call_tool(tool, arguments)


# -- helpers -----------------------------------------------------------------------------------------------------


def _text(result: types.CallToolResult, limit: int) -> str:
    """The result as the model reads it: text items joined, other content named briefly, cut to `limit`."""
    parts = []
    for item in result.content:
        if isinstance(item, types.TextContent):
            parts.append(item.text)
        elif isinstance(item, types.ImageContent | types.AudioContent):
            parts.append(f"[{item.type}: {item.mime_type}]")
        elif isinstance(item, types.EmbeddedResource):
            resource = item.resource
            text = resource.text if isinstance(resource, types.TextResourceContents) else None
            parts.append(text if text is not None else f"[resource: {resource.uri}]")
        elif isinstance(item, types.ResourceLink):
            parts.append(f"[resource link: {item.uri}]")
        else:
            parts.append(f"[{item.type}]")
    if not parts and result.structured_content is not None:
        parts.append(str(result.structured_content))
    text = "\n".join(parts)
    if len(text) <= limit:
        return text
    note = f"\n[cut from {len(text)} characters]"
    return text[: limit - len(note)] + note if limit > 2 * len(note) else text[:limit]


def _session_lost(spec: McpService, error: MCPError) -> bool:
    """Is the session gone, rather than the request refused? A closed connection means a stdio server exited or
    an HTTP stream broke. An HTTP server that restarted answers 404 to the old session id, which the SDK reports
    as INVALID_REQUEST ("Session not found"/"Session terminated"); the spec says to start a new session then."""
    return error.code == types.CONNECTION_CLOSED or (spec.type == "http" and error.code == types.INVALID_REQUEST)


def _reason(error: BaseException) -> str:
    """A one-line reason, looking through the exception groups anyio wraps transport failures in."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, MCPError):
        return error.message
    return str(error) or type(error).__name__


def _errlog() -> TextIO:
    """Where stdio servers' stderr goes: the process's own stderr. Celery replaces `sys.stderr` with a logging
    proxy that has no file descriptor, which a child process cannot inherit."""
    return sys.__stderr__ or sys.stderr
