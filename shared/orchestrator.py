"""The orchestrator as a service: analyse, plan, submit, cancel and read, the same for every front end.

Built once per process (the API's lifespan, the MCP server, a CLI command) with the process's settings, stores,
breakers and downstream tools, and how its jobs reach the task queue (`Dispatch`, which the Celery app provides),
then handed to whoever serves callers. Nothing here knows HTTP, MCP or the terminal: errors are `shared.errors`,
and each front end says them in its own words.
"""

from __future__ import annotations

import time
from typing import Protocol

from pydantic import ValidationError

from shared.auth import ApiKey, KeyStore, may_see, owner_of, sees_every_tenant, settle_job, worst_case_cost
from shared.breaker import BreakerState, CircuitBreakers
from shared.catalog import CatalogEntry
from shared.compression import (
    Preprocessing,
    summaries_cost_usd,
)
from shared.documents import DOCUMENT_ID, DocumentInfo, DocumentStore
from shared.errors import Conflict, Forbidden, NotFound, PlanningError
from shared.job_store import JobStore
from shared.jobs import JOB_ID, Billing, DocumentUse, JobInput, JobRecord, JobStatus, new_job_id
from shared.metrics import MetricsRecorder, MetricsReport, RequestOutcome, read_metrics
from shared.outbox import Enqueue
from shared.planning import Planner, ToolCatalog
from shared.requests import JobRequest, Proposal
from shared.services.models import ServiceState
from shared.settings import Settings, Tier

#: The shortest answer worth capping a request to so that it fits what is left of a budget.
MIN_USEFUL_OUTPUT = 64


class Dispatch(Protocol):
    """How jobs reach the task queue; `workers.celery_app.CeleryDispatch` is the real one."""

    def queue_for(self, tier: Tier) -> str: ...

    def execute(self, job_id: str, queue: str) -> Enqueue: ...

    def preprocess(self, work: Preprocessing) -> tuple[str, Enqueue]: ...

    def revoke(self, job_id: str) -> None: ...

    def ping(self) -> None: ...


class Tools(ToolCatalog, Protocol):
    """The downstream MCP services (a `ServiceManager`): their tool lists and states."""

    def states(self) -> list[ServiceState]: ...

    def close(self) -> None: ...


class Orchestrator:
    def __init__(
        self,
        settings: Settings,
        dispatch: Dispatch,
        tools: Tools | None = None,
        breakers: CircuitBreakers | None = None,
    ) -> None:
        self.settings = settings
        self.dispatch = dispatch
        self.tools = tools
        self.jobs = JobStore(settings)
        self.documents = DocumentStore(settings)
        self.breakers = breakers or CircuitBreakers(settings, self.jobs.redis)
        self.keys = KeyStore(settings, self.jobs.redis)
        self.metrics = MetricsRecorder(settings, self.jobs.redis)
        self.planner = Planner(settings, tools)

    def close(self) -> None:
        """End the sessions to downstream services."""
        if self.tools is not None:
            self.tools.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def propose(
        self,
        body: JobRequest,
        caller: ApiKey | None,
        require_keys: bool = False,
        open_breakers: set[str] = frozenset(),
        document: DocumentInfo | None = None,
    ) -> Proposal:
        """What would run, at what cost (see `Planner.propose`); a `document_id` is read from the store."""
        if document is None and body.document_id is not None:
            document = self.document(body.document_id, caller)
        return self.planner.propose(body, require_keys, open_breakers, document)

    # --- running --------------------------------------------------------------------------------------------------

    def submit(
        self,
        body: JobRequest,
        api_key: ApiKey | None = None,
        stream: bool = False,
        exact_model: str | None = None,
        open_breakers: set[str] | None = None,
        sync: bool = False,
    ) -> JobRecord:
        """Plan (skipping models whose breaker is open), reserve the worst case on the caller's budget, record the
        job and queue it: straight to its tier's queue, or through `preprocess` when its document must be compressed
        to fit the chosen model. `exact_model` refuses, before anything is stored, a plan that chose another. A
        `sync` job (its caller waits for the answer) keeps its record `sync_record_ttl_seconds` once finished."""
        document = self._stored_document(body, api_key)
        if open_breakers is None:  # a long-lived `breakers` answers from its snapshot, without a round trip
            open_breakers = self.breakers.unavailable()
        try:
            proposal = self.propose(body, api_key, require_keys=True, open_breakers=open_breakers, document=document)
            proposal = self._within_budget(body, proposal, api_key, open_breakers, document)
            if exact_model is not None and proposal.plan.model != exact_model:
                why = proposal.plan.rejected.get(exact_model, "not usable")
                raise PlanningError(f"model {exact_model} is not available: {why}", proposal.plan.rejected)
        except PlanningError:
            self.metrics.record(RequestOutcome(tenant=owner_of(api_key), succeeded=False, rejected=True))
            raise
        record = JobRecord(
            id=new_job_id(),
            status=JobStatus.queued,
            queue=self.dispatch.queue_for(proposal.plan.tier),
            created_at=time.time(),
            input=JobInput(request=body.request, context=body.context, options=body.options, stream=stream),
            document=DocumentUse(id=document.id, original_tokens=document.tokens) if document else None,
            # the proposal's own models, taken as they are (dumping and re-validating them cost a tenth of a submit)
            analysis=proposal.analysis,
            plan=proposal.plan,
            services=proposal.services,
            tenant=owner_of(api_key),
            sync=sync,
        )
        offered_tools = bool(proposal.services and proposal.services.services)
        turns = self.settings.mcp_client.max_tool_steps if offered_tools else 1
        worst_case = worst_case_cost(proposal.plan, self.settings, turns)
        if not (document and proposal.document):
            if record.document:
                record.document.sent_tokens, record.document.tokens_saved = document.tokens, 0
            self._reserve(record, api_key, worst_case)
            self.jobs.create(record, sent_to=record.queue, enqueue=self.dispatch.execute(record.id, record.queue))
            return record

        compression = proposal.document
        work = self.planner.preprocessing(document.id, body.request, compression, record.tenant).model_copy(
            update={"job_id": record.id, "tier": proposal.plan.tier}
        )
        record.document.strategy, record.document.strategy_reason = compression.strategy, compression.reason
        record.document.budget_tokens = compression.budget_tokens
        record.stage = "queued for preprocessing"
        record.queue, enqueue = self.dispatch.preprocess(work)
        self._reserve(record, api_key, worst_case + summaries_cost_usd(work, document.tokens, self.settings, True))
        self.jobs.create(record, enqueue=enqueue)
        return record

    def _within_budget(
        self,
        body: JobRequest,
        proposal: Proposal,
        api_key: ApiKey | None,
        open_breakers: set[str],
        document: DocumentInfo | None,
    ) -> Proposal:
        """A small budget is not refused everything because the default answer length is long: when the caller set
        no output cap and the worst case at that length does not fit what is left, the answer is capped at what
        fits (at least `MIN_USEFUL_OUTPUT` tokens); the reservation then decides."""
        if api_key is None or api_key.budget_usd is None or body.options.max_tokens is not None:
            return proposal
        left = api_key.budget_usd - self.keys.spent(api_key)
        if worst_case_cost(proposal.plan, self.settings) <= left:
            return proposal
        sheets = [self.settings.catalog.sheet(model) for model in proposal.plan.chain]
        reading = proposal.plan.estimated_input_tokens * max(s.input.highest for s in sheets)
        affordable = int((left - reading) / max(s.output.highest for s in sheets)) if left > reading else 0
        if affordable < MIN_USEFUL_OUTPUT:
            return proposal  # the reservation refuses it, saying what is left
        capped = body.model_copy(update={"options": body.options.model_copy(update={"max_tokens": affordable})})
        return self.propose(capped, api_key, require_keys=True, open_breakers=open_breakers, document=document)

    def _stored_document(self, body: JobRequest, caller: ApiKey | None) -> DocumentInfo | None:
        if body.document is not None:
            return self.store_document(body.document, caller)
        if body.document_id is not None:
            return self.document(body.document_id, caller)
        return None

    def _reserve(self, record: JobRecord, api_key: ApiKey | None, worst_case: float) -> None:
        """Reserve the job's worst-case cost on the caller's budget (BudgetExhausted when it cannot)."""
        if api_key is not None:
            spend = self.keys.reserve(api_key, worst_case, record.id)
            record.billing = Billing(api_key_id=api_key.id, spend_key=spend, reserved_usd=worst_case)

    def cancel(self, job_id: str, reason: str, caller: ApiKey | None) -> JobRecord:
        """Cancel an unfinished job: it never runs, or runs no further attempt; its reservation is released and its
        waiters woken. Conflict when it had already finished."""
        record = self.job(job_id, caller)
        was = self.jobs.cancel(record, reason)
        if was is None:
            raise Conflict(f"job {job_id} already {self.jobs.status(job_id)}; nothing to cancel")
        self.dispatch.revoke(record.id)
        if record.input.stream:
            self.jobs.answers.close(record.id, JobStatus.cancelled)  # its readers stop here, and the stream expires
        if was == JobStatus.queued:  # no call of its model ran: what it spent is its document's preprocessing, if any
            settle_job(self.settings, self.jobs.redis, record, record.spent_usd)
        # else the worker settles it at what its provider calls cost when they return (or the reconciler does)
        return self.job(job_id, caller)

    # --- reading --------------------------------------------------------------------------------------------------

    def job(self, job_id: str, caller: ApiKey | None) -> JobRecord:
        """The job, if `caller` may see it: another tenant's job is as unknown as one that never existed. A record
        that no longer validates (written by an incompatible release) is not served at all."""
        try:
            record = self.jobs.get(job_id) if JOB_ID.fullmatch(job_id) else None
        except ValidationError:
            record = None
        if record is None or not may_see(caller, record.tenant):
            raise NotFound(f"no job {job_id} (unknown or expired)")
        return record

    def wait(self, record: JobRecord, timeout_s: float) -> JobRecord:
        """The job (one the caller just submitted) once it has finished, or as it is after `timeout_s`."""
        return self.jobs.wait(record.id, timeout_s) or self.jobs.get(record.id) or record

    def store_document(self, text: str, caller: ApiKey | None) -> DocumentInfo:
        return self.documents.put(text, owner_of(caller))

    def document(self, document_id: str, caller: ApiKey | None) -> DocumentInfo:
        """The document, if `caller` stored it (or may see every tenant's work)."""
        owner = owner_of(caller)
        info = self.documents.info(document_id) if DOCUMENT_ID.fullmatch(document_id) else None
        if info is None or not (sees_every_tenant(caller) or self.documents.referenced_by(document_id, owner)):
            raise NotFound(f"no document {document_id} (unknown or expired): upload it again")
        return info

    def metrics_report(self, period: str, caller: ApiKey | None, every_tenant: bool = False) -> MetricsReport:
        """The caller's tenant's metrics, or every tenant's: asked for (`every_tenant`, an admin key's only) or
        without a key (the deployment's one user)."""
        if every_tenant and not sees_every_tenant(caller):
            raise Forbidden("only an admin key reads every tenant's metrics (`orchestrator keys create --admin`)")
        tenant = None if every_tenant or caller is None else caller.tenant_id
        return read_metrics(self.settings, self.jobs.redis, period, tenant=tenant)

    def provider_health(self) -> list[BreakerState]:
        return self.breakers.states()

    def services(self) -> list[ServiceState]:
        return self.tools.states() if self.tools is not None else []

    def models(self, usable_only: bool = False) -> list[CatalogEntry]:
        """The catalog; `usable_only` keeps the models whose provider has a key (or needs none)."""
        entries = self.settings.catalog.entries()
        if not usable_only:
            return entries
        usable = self.settings.usable_providers()
        return [entry for entry in entries if entry.provider in usable]
