"""Job records: what was asked, how it was planned, what happened, what it cost.

Stored by `shared.job_store.JobStore`; a finished record (succeeded, failed, cancelled) never changes again.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from shared.metrics import RequestOutcome
from shared.pricing import Percent, TokenUsage, Usd
from shared.providers.base import StopReason
from shared.routing import Analysis, Plan, RequestOptions
from shared.services.models import ToolCallRecord
from shared.services.selection import ServiceSelection
from shared.settings import Settings


class JobStatus(StrEnum):
    queued = "queued"
    preprocessing = "preprocessing"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class JobInput(BaseModel):
    request: str
    context: dict[str, Any] = {}
    options: RequestOptions = RequestOptions()
    stream: bool = Field(
        False, description="Relay the answer's pieces as they arrive (see shared.answers.AnswerStream)."
    )


class Attempt(BaseModel):
    """One try of one model, a skipped model (`breaker_open`) or a cache hit (`cache_hit`)."""

    model: str
    provider: str
    number: int = Field(description="Try of this model, from 1; 0 for a skip.")
    ok: bool
    error: str | None = None
    error_kind: str | None = None
    status: int | None = None
    started_at: float
    duration_ms: float


class DocumentUse(BaseModel):
    """The job's document: how big it was, how it was compressed, what the model read."""

    id: str
    original_tokens: int
    strategy: str | None = Field(None, description="None when the document was sent whole.")
    strategy_reason: str | None = None
    budget_tokens: int | None = None
    sent_tokens: int | None = None
    tokens_saved: int | None = None
    chunks: int | None = None
    preprocessing_cost_usd: Usd = 0.0
    summary_cache_hit: bool | None = None
    summary_key: str | None = None
    workers: list[str] = Field(default_factory=list, description="Workers that processed the chunks.")
    note: str = Field("", description="Why the strategy fell back to another, when it did.")
    fell_back_from: str | None = Field(None, description="The strategy planned, when another one was used.")
    problems: list[str] = Field(
        default_factory=list, description="Chunks not summarised, or summarised only in part (cut off), and why."
    )


class Billing(BaseModel):
    """The caller's key and what the job reserved of its budget, settled against the actual cost at the end."""

    api_key_id: str
    spend_key: str | None = None
    reserved_usd: Usd = 0.0


class Usage(TokenUsage):
    """What the job's calls used, as the providers reported it (or as counted here when they did not)."""

    reported_by_provider: bool = True


class JobRecord(BaseModel):
    id: str
    status: JobStatus
    progress: float = Field(0.0, ge=0, le=1)
    stage: str = "queued"
    chunks_done: int = 0
    chunks_total: int | None = None
    queue: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    input: JobInput
    document: DocumentUse | None = None
    analysis: Analysis
    plan: Plan
    result: str | None = None
    stop_reason: StopReason | None = Field(
        None,
        description="stop, length (cut at the output cap), content_filter, or incomplete (the provider's stream "
        "ended without a reason).",
    )
    model_used: str | None = None
    provider_used: str | None = None
    usage: Usage | None = None
    cache_hit: bool = False
    cost_usd: Usd | None = None
    baseline_cost_usd: Usd | None = None
    savings_usd: Usd | None = None
    savings_pct: Percent | None = None
    attempts: list[Attempt] = []
    deliveries: int = 0
    worker: str | None = None
    billing: Billing | None = None
    tenant: str | None = Field(None, description="Whose job it is: only its tenant's keys (and admins) see it.")
    sync: bool = Field(
        False, description="Answered in the call that made it: kept `sync_record_ttl_seconds` once finished."
    )
    error: str | None = None
    services: ServiceSelection | None = Field(None, description="Downstream MCP services and tools offered.")
    tool_calls: list[ToolCallRecord] = []

    def retention_s(self, settings: Settings) -> int:
        """How long the record is kept once finished: an async job's until its caller polls, a synchronous one's
        (its caller has the answer) for an hour; the metrics and ledgers keep the figures either way."""
        return settings.sync_record_ttl_seconds if self.sync else settings.job_ttl_seconds

    @property
    def spent_usd(self) -> float:
        """What the job has cost so far: its bill once finished, else what its document's preprocessing cost."""
        if self.cost_usd is not None:
            return self.cost_usd
        return self.document.preprocessing_cost_usd if self.document else 0.0

    @property
    def duration_ms(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at) * 1000

    def outcome(self) -> RequestOutcome:
        """This finished job as the metrics count it."""
        succeeded = self.status == JobStatus.succeeded
        return RequestOutcome(
            job_id=self.id,
            tenant=self.tenant,
            succeeded=succeeded,
            model=self.model_used,
            provider=self.provider_used,
            intent=self.analysis.intent,
            tier=self.plan.tier,
            input_tokens=self.usage.input_tokens if self.usage else 0,
            output_tokens=self.usage.output_tokens if self.usage else 0,
            baseline_tokens=self.plan.baseline.input_tokens,
            cost_usd=self.cost_usd or 0.0,
            baseline_cost_usd=self.baseline_cost_usd or 0.0,
            cache_hit=self.cache_hit if succeeded else None,
            latency_ms=self.duration_ms,
            service_calls=dict(Counter(call.service for call in self.tool_calls if call.service)),
            service_errors=dict(
                Counter(call.service for call in self.tool_calls if call.service and call.outcome != "ok")
            ),
        )


#: A job's id (and a batch's): 32 lowercase hex digits. Anything else names no job, and never reaches the store.
JOB_ID = re.compile(r"[0-9a-f]{32}")


def new_job_id() -> str:
    return uuid.uuid4().hex
