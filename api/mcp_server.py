"""The MCP front end: the original tools (`orchestrate`, `analyze_request`, `get_metrics`) and job tools, on the
same shared core and queue as the HTTP API, over stdio (`orchestrator mcp`) or streamable HTTP (`/mcp`).

`orchestrate` queues the job and waits for it, reporting progress (queued, preprocessing chunk k/n, running, done)
to a client that asked for it; if the call is cancelled, so is the job. With `use_host_model` on and a client that
declared the (deprecated) sampling capability, the host's own model answers instead, through
`sampling/createMessage` with the planned model as a hint, and the call is recorded at zero API cost.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Literal

import anyio
from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from shared.auth import ApiKey, owner_of
from shared.errors import OrchestratorError
from shared.jobs import JobInput, JobRecord, JobStatus, Usage, new_job_id
from shared.metrics import MetricsReport
from shared.orchestrator import Orchestrator
from shared.pricing import Percent, Usd
from shared.prompts import system_prompt, user_prompt
from shared.providers.base import StopReason, stop_reason
from shared.requests import JobAccepted, JobRequest, Proposal
from shared.routing import RequestOptions
from shared.services.models import ServiceState, ToolResult
from shared.services.toolbox import gateway_call

HOST_PROVIDER = "mcp-host"
_POLL_SECONDS = 0.1


class JobResult(BaseModel):
    """What `orchestrate` and `get_job` return: the answer and its accounting."""

    id: str
    status: JobStatus
    stage: str
    progress: float
    result: str | None
    stop_reason: StopReason | None = None
    model: str | None
    usage: Usage | None
    cost_usd: Usd | None
    baseline_cost_usd: Usd | None
    savings_usd: Usd | None
    savings_pct: Percent | None
    error: str | None
    document_tokens_sent: int | None = None
    document_tokens_saved: int | None = None

    @classmethod
    def of(cls, record: JobRecord) -> JobResult:
        return cls(
            id=record.id,
            status=record.status,
            stage=record.stage,
            progress=record.progress,
            result=record.result,
            stop_reason=record.stop_reason,
            model=record.model_used or record.plan.model,
            usage=record.usage,
            cost_usd=record.cost_usd,
            baseline_cost_usd=record.baseline_cost_usd,
            savings_usd=record.savings_usd,
            savings_pct=record.savings_pct,
            error=record.error,
            document_tokens_sent=record.document.sent_tokens if record.document else None,
            document_tokens_saved=record.document.tokens_saved if record.document else None,
        )


def create_mcp_server(orchestrator: Orchestrator) -> MCPServer:
    settings, tools = orchestrator.settings, orchestrator.tools
    server = MCPServer(
        "dynamic-orchestrator",
        instructions=(
            "Routes each request to the cheapest model that can do it and reports tokens, cost and savings. "
            "Use orchestrate for an answer, analyze_request to see the plan without running it."
        ),
    )

    def body(
        request: str,
        context: dict[str, Any] | None,
        options: RequestOptions | None,
        document: str | None = None,
        document_id: str | None = None,
    ) -> JobRequest:
        try:
            return JobRequest(
                request=request,
                context=context or {},
                options=options or RequestOptions(),
                document=document,
                document_id=document_id,
            )
        except ValidationError as error:
            raise ToolError(f"invalid arguments: {error.errors()[0]['msg']}") from None

    async def run(function, *args):
        """Run in a worker thread; the orchestrator's errors are tool errors the client reads."""
        try:
            return await anyio.to_thread.run_sync(function, *args)
        except OrchestratorError as error:
            raise ToolError(error.message) from None

    def needs_services(job: JobRequest, caller: ApiKey | None) -> bool:
        if tools is None or not settings.mcp_services:
            return False
        selection = orchestrator.propose(job, caller).services
        return bool(selection and selection.services)

    async def queue(job: JobRequest, ctx: Context, sync: bool = False) -> JobRecord:
        """Submit on the caller's key (and budget) when it came over HTTP with one."""
        return await run(partial(orchestrator.submit, api_key=_caller(ctx), sync=sync), job)

    @server.tool()
    async def orchestrate(
        request: str,
        ctx: Context,
        context: dict[str, Any] | None = None,
        options: RequestOptions | None = None,
        document: str | None = None,
        document_id: str | None = None,
        wait_seconds: float = 300,
    ) -> JobResult:
        """Answer a request with the cheapest capable model. `context` holds facts as key/value pairs; `options`
        takes preferred_models, max_cost (USD), max_tokens, strategy; `document` (text) or `document_id` (from an
        upload) is compressed when it does not fit. Returns the answer with its tokens, cost and savings."""
        job = body(request, context, options, document, document_id)
        if (
            settings.use_host_model
            and document is None
            and document_id is None
            and _host_can_sample(ctx)
            and not await run(needs_services, job, _caller(ctx))
        ):  # sampling cannot run the tool-call loop
            return await _from_host(job, ctx, orchestrator, _caller(ctx))
        record = await queue(job, ctx, sync=True)
        try:
            return JobResult.of(await _follow(orchestrator, record.id, ctx, wait_seconds))
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_cancel_quietly, orchestrator, record, _caller(ctx))
            raise

    @server.tool()
    async def analyze_request(
        request: str,
        ctx: Context,
        context: dict[str, Any] | None = None,
        options: RequestOptions | None = None,
        document_id: str | None = None,
    ) -> Proposal:
        """Intent, skill, difficulty, the tier the quality target calls for, token counts and the plan (model,
        fallbacks, estimated and baseline cost, a document's compression), without running anything, and the
        downstream services and tools it would be offered."""
        job = body(request, context, options, document_id=document_id)
        return await run(orchestrator.propose, job, _caller(ctx))

    @server.tool()
    async def list_services() -> list[ServiceState]:
        """The downstream MCP services this orchestrator routes to: their state, tools and circuit breaker."""
        return await anyio.to_thread.run_sync(orchestrator.services)

    @server.tool()
    async def call_service_tool(service: str, tool: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        """Call one tool of a downstream service through the orchestrator (its breaker and timeout apply);
        `list_services` names them. The arguments are checked against the tool's schema first."""
        if tools is None or service not in settings.mcp_services:
            raise ToolError(f"no service {service!r}; configured: {', '.join(settings.mcp_services) or 'none'}")
        return await anyio.to_thread.run_sync(gateway_call, tools, service, tool, arguments or {})

    @server.tool()
    async def get_metrics(
        ctx: Context, period: Literal["1m", "5m", "1h", "1d"] = "5m", scope: Literal["tenant", "all"] = "tenant"
    ) -> MetricsReport:
        """Requests, tokens, cost, savings against the baseline, latency percentiles and distributions over the
        last minute, 5 minutes, hour or day: the caller's tenant's, or every tenant's (`all`, an admin key)."""
        return await run(orchestrator.metrics_report, period, _caller(ctx), scope == "all")

    @server.tool()
    async def submit_job(
        request: str,
        ctx: Context,
        context: dict[str, Any] | None = None,
        options: RequestOptions | None = None,
        document: str | None = None,
        document_id: str | None = None,
    ) -> JobAccepted:
        """Queue a request and return at once with its job id; poll it with get_job."""
        record = await queue(body(request, context, options, document, document_id), ctx)
        return JobAccepted.of(record)

    @server.tool()
    async def get_job(job_id: str, ctx: Context) -> JobResult:
        """A job's status, progress, answer, tokens, cost and savings."""
        return JobResult.of(await run(orchestrator.job, job_id, _caller(ctx)))

    @server.tool()
    async def cancel_job(job_id: str, ctx: Context) -> JobResult:
        """Cancel a queued or running job."""
        return JobResult.of(await run(orchestrator.cancel, job_id, "cancelled by the MCP client", _caller(ctx)))

    return server


async def _follow(orchestrator: Orchestrator, job_id: str, ctx: Context, wait_seconds: float) -> JobRecord:
    """Wait for the job, sending a progress notification whenever its stage changes."""
    deadline = time.monotonic() + wait_seconds
    last = None
    while True:
        record = await anyio.to_thread.run_sync(orchestrator.jobs.get, job_id)
        if record is None:
            raise ToolError(f"job {job_id} disappeared (expired)")
        step = (record.status, record.stage)
        if step != last:
            last = step
            await ctx.report_progress(record.progress, 1.0, message=_describe(record))
        if record.status.terminal or time.monotonic() > deadline:
            return record
        await anyio.sleep(_POLL_SECONDS)


def _caller(ctx: Context) -> ApiKey | None:
    """The API key the HTTP middleware checked for this message, the one that is billed and whose tenant's work
    the tools see; None over stdio (the local user who started the server) or without authentication."""
    state = getattr(ctx.request_context.request, "state", None)
    return getattr(state, "api_key", None)


def _describe(record: JobRecord) -> str:
    if record.status.terminal:
        return "done" if record.status == JobStatus.succeeded else f"{record.status}: {record.error}"
    return record.stage


def _cancel_quietly(orchestrator: Orchestrator, record: JobRecord, caller: ApiKey | None) -> None:
    """The client gave up on `orchestrate`: cancel its job unless it finished meanwhile."""
    try:
        orchestrator.cancel(record.id, "cancelled by the MCP client", caller)
    except OrchestratorError:
        pass


def _host_can_sample(ctx: Context) -> bool:
    """The client declared sampling, on a protocol version that still has it (it left with 2026-07-28)."""
    capabilities = ctx.client_capabilities
    return (
        capabilities is not None
        and capabilities.sampling is not None
        and ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
    )


async def _from_host(job: JobRequest, ctx: Context, orchestrator: Orchestrator, caller: ApiKey | None) -> JobResult:
    """Let the host's model answer; record the call as a job at zero API cost."""
    proposal = orchestrator.propose(job, caller)
    analysis, plan = proposal.analysis, proposal.plan
    started = time.time()
    try:
        answer = await ctx.session.create_message(
            [
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=user_prompt(job.request, job.context))
                )
            ],
            max_tokens=plan.max_output_tokens,
            system_prompt=system_prompt(analysis.intent, plan.tier),
            model_preferences=types.ModelPreferences(hints=[types.ModelHint(name=plan.model)]),
        )
    except Exception as error:  # the host refused or cannot sample: the caller sees why
        raise ToolError(f"the host's model did not answer: {error}") from None
    text = answer.content.text if isinstance(answer.content, types.TextContent) else str(answer.content)
    record = JobRecord(
        id=new_job_id(),
        status=JobStatus.succeeded,
        stage="done",
        progress=1.0,
        queue="mcp-host",
        created_at=started,
        started_at=started,
        finished_at=time.time(),
        input=JobInput(request=job.request, context=job.context, options=job.options),
        analysis=analysis,
        plan=plan,
        result=text,
        stop_reason=stop_reason(answer.stop_reason),
        model_used=answer.model,
        provider_used=HOST_PROVIDER,
        usage=Usage(input_tokens=0, output_tokens=0, reported_by_provider=False),
        cost_usd=0.0,
        baseline_cost_usd=plan.baseline.cost_usd,
        savings_usd=plan.baseline.cost_usd,
        savings_pct=100.0,
        tenant=owner_of(caller),
        sync=True,
    )
    await anyio.to_thread.run_sync(orchestrator.jobs.create, record)
    await anyio.to_thread.run_sync(orchestrator.metrics.record, record.outcome())
    return JobResult.of(record)
