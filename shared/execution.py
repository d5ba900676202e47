"""Running a planned request: build the prompt, call the chain's models in order until one answers."""

from __future__ import annotations

import time

from pydantic import BaseModel

from shared.jobs import Attempt, JobRecord
from shared.prompts import system_prompt, user_prompt
from shared.providers import Completion, Message, ProviderError, ProviderRequest, provider_for
from shared.settings import Settings


class Served(BaseModel):
    completion: Completion
    model: str
    provider: str
    attempts: list[Attempt]


class ChainExhausted(Exception):
    """Every model of the chain failed, or one failed in a way no other model would fix."""

    def __init__(self, message: str, attempts: list[Attempt]) -> None:
        super().__init__(message)
        self.attempts = attempts


def provider_request(record: JobRecord, model: str, settings: Settings) -> ProviderRequest:
    spec = settings.models[model]
    job = record.input
    return ProviderRequest(
        model=spec.provider_model or model,
        system=system_prompt(record.analysis.intent, record.plan.tier),
        messages=[Message(role="user", content=user_prompt(job.request, job.context))],
        max_tokens=min(record.plan.max_output_tokens, spec.max_output_tokens),
        temperature=job.options.temperature,
        timeout_s=settings.provider_timeout_seconds,
    )


def serve(record: JobRecord, settings: Settings) -> Served:
    """Call the plan's chain in order. A client error (bad request) stops the chain: other models would fail too."""
    attempts: list[Attempt] = []
    for model in record.plan.chain:
        provider_name = settings.models[model].provider
        started = time.perf_counter()
        try:
            completion = provider_for(provider_name, settings).complete(provider_request(record, model, settings))
        except ProviderError as error:
            attempts.append(
                Attempt(
                    model=model,
                    provider=provider_name,
                    ok=False,
                    error=error.message,
                    error_kind=error.kind,
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            )
            if error.kind == "client":
                raise ChainExhausted(f"{model} rejected the request: {error.message}", attempts) from error
            continue
        attempts.append(
            Attempt(model=model, provider=provider_name, ok=True, duration_ms=(time.perf_counter() - started) * 1000)
        )
        return Served(completion=completion, model=model, provider=provider_name, attempts=attempts)
    summary = "; ".join(f"{a.model}: {a.error}" for a in attempts)
    raise ChainExhausted(f"every model of the chain failed ({summary})", attempts)
