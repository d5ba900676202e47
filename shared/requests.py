"""What a caller asks of the orchestrator, and what it proposes before running anything.

The same models serve every front end (HTTP, the OpenAI-compatible routes, MCP tools, the CLI and its batch
files), so a request is validated the same way whatever door it came in by.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from shared.compression import Strategy
from shared.jobs import JobRecord, JobStatus
from shared.pricing import Usd
from shared.routing import Analysis, Plan, RequestOptions
from shared.services.selection import ServiceSelection

MAX_REQUEST_CHARS = 200_000
MAX_CONTEXT_CHARS = 4_000_000  # about a million tokens: the longest context window a catalog model reads
MAX_CONTEXT_KEYS = 256


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
    context: dict[Annotated[str, Field(max_length=256)], Any] = Field(
        default_factory=dict,
        max_length=MAX_CONTEXT_KEYS,
        description=f"Facts the model needs, as key/value pairs: at most {MAX_CONTEXT_KEYS} keys and "
        f"{MAX_CONTEXT_CHARS:,} characters as JSON.",
    )
    options: RequestOptions = Field(default_factory=RequestOptions)
    document: str | None = Field(None, description="A document to work on, inline (stored once by content hash).")
    document_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="The id of a document uploaded with POST /v1/documents."
    )

    @field_validator("request")
    @classmethod
    def _not_blank(cls, request: str) -> str:
        if not request.strip():
            raise ValueError("the request is blank: say what to do")
        return request

    @field_validator("context")
    @classmethod
    def _context_size(cls, context: dict[str, Any]) -> dict[str, Any]:
        if context and len(json.dumps(context, ensure_ascii=False, default=str)) > MAX_CONTEXT_CHARS:
            raise ValueError(f"the context is larger than {MAX_CONTEXT_CHARS:,} characters as JSON: send a document")
        return context

    @model_validator(mode="after")
    def _one_document(self) -> JobRequest:
        if self.document is not None and self.document_id is not None:
            raise ValueError("give either document or document_id, not both")
        return self


class DocumentPlan(BaseModel):
    """How a document that does not fit the chosen model will be compressed, and what that is expected to cost."""

    strategy: Strategy
    reason: str
    budget_tokens: int
    summarizers: list[str] = Field(description="The models that summarise chunks (none without an LLM strategy).")
    estimated_cost_usd: Usd = Field(description="What the chunk summaries are expected to cost.")


class JobAccepted(BaseModel):
    """A queued job, as a caller that does not wait for it sees it."""

    id: str
    status: JobStatus
    queue: str
    model: str
    estimated_cost_usd: Usd
    baseline_cost_usd: Usd
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
    """What would run, and at what cost, before anything runs."""

    analysis: Analysis
    plan: Plan
    document: DocumentPlan | None = Field(None, description="When the document must be compressed first.")
    services: ServiceSelection | None = None
