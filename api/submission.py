"""From a validated request to a queued job: analyse, plan, store the record, enqueue its id.

The HTTP API, the CLI and the MCP server all submit through here, so a request is planned the same way whatever
door it came in by.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from pydantic import BaseModel, Field

from shared.analysis import Analysis, RequestOptions, analyze
from shared.breaker import CircuitBreakers
from shared.jobs import JobInput, JobRecord, JobStatus, JobStore, new_job_id
from shared.routing import Constraints, Plan, PlanningError, plan
from shared.settings import Settings
from workers.celery_app import EXECUTE_TASK, queue_for

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
                    "options": {"preferred_models": ["gpt-4o-mini"], "max_cost": 0.05},
                }
            ]
        },
    }

    request: str = Field(min_length=1, max_length=MAX_REQUEST_CHARS, description="What to do, in plain language.")
    context: dict[str, Any] = Field(default_factory=dict, description="Facts the model needs, as key/value pairs.")
    options: RequestOptions = Field(default_factory=RequestOptions)


class NoProviderConfigured(Exception):
    """No provider account has a key: nothing can run until the operator sets one."""


class Proposal(BaseModel):
    analysis: Analysis
    plan: Plan


def propose(
    body: JobRequest, settings: Settings, require_keys: bool = True, open_breakers: set[str] = frozenset()
) -> Proposal:
    """Analyse and plan among the providers that have a key.

    With no key at all, `require_keys` makes that an error (nothing could run); without it the plan is made over
    the whole catalog, so `analyze` still shows what would be chosen once a key is set.
    """
    analysis = analyze(body.request, body.context, body.options, settings)
    usable: set[str] | None = settings.usable_providers()
    if not usable:
        if require_keys:
            raise NoProviderConfigured(f"no provider API key is configured: {settings.key_variables_hint()}")
        usable = None
    constraints = Constraints.from_options(body.options, usable, open_breakers)
    return Proposal(analysis=analysis, plan=plan(analysis, constraints, settings, body.options.max_tokens))


def submit(body: JobRequest, settings: Settings, store: JobStore, celery: Celery) -> JobRecord:
    """Plan (skipping models whose breaker is open), record the job, and put its id on its tier's queue."""
    proposal = propose(body, settings, open_breakers=CircuitBreakers(settings, store.redis).unavailable())
    queue = queue_for(proposal.plan.tier)
    record = JobRecord(
        id=new_job_id(),
        status=JobStatus.queued,
        queue=queue,
        created_at=time.time(),
        input=JobInput(request=body.request, context=body.context, options=body.options),
        analysis=proposal.analysis,
        plan=proposal.plan,
    )
    store.create(record)
    celery.send_task(EXECUTE_TASK, args=[record.id], queue=queue, task_id=record.id)
    return record


__all__ = ["JobRequest", "NoProviderConfigured", "PlanningError", "Proposal", "propose", "submit"]
