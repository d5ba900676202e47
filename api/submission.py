"""From a validated request to a queued job: analyse, plan, store the record, enqueue its id.

The HTTP API, the CLI and the MCP server all submit through here, so a request is planned the same way whatever
door it came in by. A document is stored once under its content hash; the job and its tasks carry the hash.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from celery import Celery
from pydantic import BaseModel, Field, model_validator

from shared.auth import ApiKey, KeyStore, settle_job, worst_case_cost
from shared.breaker import CircuitBreakers
from shared.compression import (
    Preprocessing,
    choose_strategy,
    preprocessing_worst_case_usd,
    preprocessor_chain,
    summary_key,
)
from shared.documents import DocumentInfo, DocumentStore
from shared.jobs import Billing, DocumentUse, JobInput, JobRecord, JobStatus, JobStore, new_job_id
from shared.metrics import MetricsRecorder, RequestOutcome
from shared.routing import Analysis, Constraints, Plan, PlanningError, RequestOptions, analyze, plan
from shared.services.models import ServiceTool
from shared.services.selection import ServiceSelection, select_services
from shared.settings import Settings
from shared.tokens import count_tokens
from workers.celery_app import EXECUTE_TASK, PREPROCESS_QUEUE, PREPROCESS_TASK, queue_for, task_message

MAX_REQUEST_CHARS = 200_000


class JobRequest(BaseModel):
    """A request to orchestrate, as in the original `orchestrate` tool."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [
                {
                    "request": "Create a REST API for user management",
                    "context": {"framework": "FastAPI", "database": "PostgreSQL"},
                    "options": {"preferred_models": ["gpt-6.1-terra"], "max_cost": 0.05},
                }
            ]
        },
    }

    request: str = Field(min_length=1, max_length=MAX_REQUEST_CHARS, description="What to do, in plain language.")
    context: dict[str, Any] = Field(default_factory=dict, description="Facts the model needs, as key/value pairs.")
    options: RequestOptions = Field(default_factory=RequestOptions)
    document: str | None = Field(None, description="A document to work on, inline (stored once by content hash).")
    document_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="The id of a document uploaded with POST /v1/documents."
    )

    @model_validator(mode="after")
    def _one_document(self) -> JobRequest:
        if self.document is not None and self.document_id is not None:
            raise ValueError("give either document or document_id, not both")
        return self


class NoProviderConfigured(Exception):
    """No provider account has a key: nothing can run until the operator sets one."""


class UnknownDocument(LookupError):
    pass


class DocumentTooLarge(ValueError):
    pass


class JobAccepted(BaseModel):
    id: str
    status: JobStatus
    queue: str
    model: str
    estimated_cost_usd: float
    baseline_cost_usd: float
    poll: str

    @classmethod
    def of(cls, record: JobRecord) -> JobAccepted:
        return cls(
            id=record.id,
            status=record.status,
            queue=record.queue,
            model=record.plan.model,
            estimated_cost_usd=record.plan.estimated_cost_usd,
            baseline_cost_usd=record.plan.baseline.cost_usd,
            poll=f"/v1/jobs/{record.id}",
        )


class Proposal(BaseModel):
    analysis: Analysis
    plan: Plan
    services: ServiceSelection | None = None


class ToolCatalog(Protocol):
    """Where the tool lists of the configured MCP services come from (a `ServiceManager`)."""

    def catalog(self) -> tuple[dict[str, list[ServiceTool]], dict[str, str]]: ...


def propose(
    body: JobRequest,
    settings: Settings,
    require_keys: bool = True,
    open_breakers: set[str] = frozenset(),
    document_tokens: int | None = None,
    tools: ToolCatalog | None = None,
) -> Proposal:
    """Analyse and plan among the providers that have a key.

    With no key at all, `require_keys` makes that an error (nothing could run); without it the plan is made over
    the whole catalog, so `analyze` still shows what would be chosen once a key is set.
    """
    if document_tokens is None and body.document:
        document_tokens = count_tokens(body.document)
    analysis = analyze(body.request, body.context, body.options, settings, document_tokens=document_tokens or 0)
    usable: set[str] | None = settings.usable_providers()
    if not usable:
        if require_keys:
            raise NoProviderConfigured(f"no provider API key is configured: {settings.key_variables_hint()}")
        usable = None
    constraints = Constraints.from_options(body.options, usable, open_breakers)
    selection = None
    if settings.mcp_services and tools is not None:
        catalog, unavailable = tools.catalog()
        selection = select_services(body.request, analysis.intent, settings.mcp_services, catalog, unavailable)
    return Proposal(
        analysis=analysis, plan=plan(analysis, constraints, settings, body.options.max_tokens), services=selection
    )


def stored_document(body: JobRequest, documents: DocumentStore) -> DocumentInfo | None:
    if body.document is not None:
        limit = documents.settings.document_processing.max_document_bytes
        if len(body.document.encode("utf-8")) > limit:
            raise DocumentTooLarge(f"document larger than the limit of {limit:,} bytes")
        return documents.put(body.document)
    if body.document_id is not None:
        info = documents.info(body.document_id)
        if info is None:
            raise UnknownDocument(f"no document {body.document_id} (unknown or expired): upload it again")
        return info
    return None


def submit(
    body: JobRequest,
    settings: Settings,
    store: JobStore,
    celery: Celery,
    open_breakers: set[str] | None = None,
    stream: bool = False,
    api_key: ApiKey | None = None,
    tools: ToolCatalog | None = None,
    breakers: CircuitBreakers | None = None,
) -> JobRecord:
    """Plan (skipping models whose breaker is open), reserve its worst-case cost on the caller's budget, record the
    job, and queue it: straight to its tier's queue, or through `preprocess` when its document must be compressed
    to fit the chosen model."""
    document = stored_document(body, DocumentStore(settings))
    if open_breakers is None:  # a long-lived `breakers` answers from its snapshot, without a round trip
        open_breakers = (breakers or CircuitBreakers(settings, store.redis)).unavailable()
    try:
        proposal = propose(
            body,
            settings,
            open_breakers=open_breakers,
            document_tokens=document.tokens if document else None,
            tools=tools,
        )
    except PlanningError:
        MetricsRecorder(settings, store.redis).record(RequestOutcome(succeeded=False, rejected=True))
        raise
    record = JobRecord(
        id=new_job_id(),
        status=JobStatus.queued,
        queue=queue_for(proposal.plan.tier),
        created_at=time.time(),
        input=JobInput(request=body.request, context=body.context, options=body.options, stream=stream),
        document=DocumentUse(id=document.id, original_tokens=document.tokens) if document else None,
        # the proposal's own models, taken as they are (dumping and re-validating them cost a tenth of a submit)
        analysis=proposal.analysis,
        plan=proposal.plan,
        services=proposal.services,
    )
    if not (document and proposal.plan.preprocess):
        if record.document:
            record.document.sent_tokens, record.document.tokens_saved = document.tokens, 0
        _reserve(record, api_key, worst_case_cost(proposal.plan, settings), settings, store)
        store.create(
            record,
            sent_to=record.queue,
            enqueue=task_message(celery, EXECUTE_TASK, [record.id], record.queue, record.id),
        )
        return record

    chain = preprocessor_chain(settings, settings.usable_providers(), open_breakers)
    requested = body.options.strategy or settings.document_processing.default_strategy
    strategy, reason = choose_strategy(requested, proposal.analysis, body.request, llm_available=bool(chain))
    budget = proposal.plan.document_budget_tokens or settings.document_processing.max_direct_tokens
    work = Preprocessing(
        document_id=document.id,
        strategy=strategy,
        query=body.request,
        budget=budget,
        cache_key=summary_key(settings, document.id, strategy, body.request, budget),
        llm_chain=chain if strategy.needs_llm else [],
        job_id=record.id,
        tier=proposal.plan.tier,
    )
    record.document.strategy, record.document.strategy_reason = strategy, reason
    record.document.budget_tokens = budget
    record.stage, record.queue = "queued for preprocessing", PREPROCESS_QUEUE
    summaries = preprocessing_worst_case_usd(work, document.tokens, settings)
    _reserve(record, api_key, worst_case_cost(proposal.plan, settings) + summaries, settings, store)
    store.create(
        record,
        enqueue=task_message(celery, PREPROCESS_TASK, [work.model_dump(mode="json")], PREPROCESS_QUEUE, record.id),
    )
    return record


def _reserve(record: JobRecord, api_key: ApiKey | None, worst_case: float, settings: Settings, store: JobStore) -> None:
    """Reserve the job's worst-case cost on the caller's budget (BudgetExhausted when it cannot)."""
    if api_key is not None:
        spend = KeyStore(settings, store.redis).reserve(api_key, worst_case)
        record.billing = Billing(api_key_id=api_key.id, spend_key=spend, reserved_usd=worst_case)


def cancel(record: JobRecord, reason: str, settings: Settings, store: JobStore, celery: Celery) -> bool:
    """Cancel an unfinished job: it never runs, or runs no further attempt; its budget reservation is released and
    its waiters woken. False if it had already finished."""
    if not store.finish(
        record.id, status=JobStatus.cancelled, stage="cancelled", finished_at=time.time(), error=reason
    ):
        return False
    celery.control.revoke(record.id)
    settle_job(settings, store.redis, record, 0.0)
    return True


__all__ = [
    "DocumentTooLarge",
    "JobAccepted",
    "JobRequest",
    "NoProviderConfigured",
    "PlanningError",
    "Proposal",
    "UnknownDocument",
    "cancel",
    "propose",
    "submit",
]
