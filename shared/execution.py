"""Running a planned request: the chain of models with retries, breakers and the response cache.

For each model of the plan's chain, in order: an exact-match cache hit answers at no cost; an open breaker skips
the model; otherwise the model is called, and retried on retryable errors with backoff (or as long as its
`Retry-After` says), until it answers, its tries are spent, or its breaker opens. Then the next model serves. A
rejected request (400-class) stops everything: another model would reject it too. Every try, skip and wait is
an `Attempt` on the job record, so a user can see which model served and why the others did not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel

from shared.breaker import COUNTED_KINDS, CircuitBreakers, Gate
from shared.cache import ResponseCache
from shared.catalog import ModelSpec
from shared.jobs import Attempt, JobRecord
from shared.prompts import system_prompt, user_prompt
from shared.providers import Completion, Message, ProviderError, ProviderRequest, ToolSpec, provider_for
from shared.resilience import retry_delay
from shared.services.models import ToolCallRecord
from shared.services.toolbox import Toolbox
from shared.settings import Settings
from shared.slots import CallSlots, NoSlot, WaitCancelled
from shared.tokens import with_margin

#: What the tool loop adds up over its turns: every model turn is billed.
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")


class Served(BaseModel):
    completion: Completion
    model: str
    provider: str
    attempts: list[Attempt]
    cache_hit: bool = False
    tool_calls: list[ToolCallRecord] = []


class ChainExhausted(Exception):
    """Every model of the chain failed, or one failed in a way no other model would fix. `spent` is what the turns
    of a tool loop that answered before it used (billed all the same), None when no call answered."""

    def __init__(
        self,
        message: str,
        attempts: list[Attempt],
        tool_calls: list[ToolCallRecord] = (),
        spent: Served | None = None,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.tool_calls = list(tool_calls)  # the downstream calls made before it failed
        self.spent = spent


class Cancelled(Exception):
    """The job was cancelled between calls; `spent` as for `ChainExhausted`."""

    def __init__(self, attempts: list[Attempt], spent: Served | None = None) -> None:
        super().__init__("cancelled")
        self.attempts = attempts
        self.spent = spent


def provider_request(
    record: JobRecord,
    model: str,
    settings: Settings,
    document: str | None = None,
    turns: list[Message] = (),
    tools: list[ToolSpec] = (),
) -> ProviderRequest:
    """The request for `model`: the job's prompt, then any tool-call `turns` so far, with `tools` offered."""
    spec = settings.catalog.spec(model)
    job = record.input
    return ProviderRequest(
        model=spec.provider_model or model,
        system=system_prompt(record.analysis.intent, record.plan.tier),
        messages=[Message(role="user", content=user_prompt(job.request, job.context, document)), *turns],
        max_tokens=_output_cap(record, spec),
        temperature=job.options.temperature,
        stop=job.options.stop,
        timeout_s=settings.provider_timeout_seconds,
        tools=list(tools),
    )


def _output_cap(record: JobRecord, spec: ModelSpec) -> int:
    """The job's output cap on this model: within its limit, and within what its window leaves after the prompt (a
    fallback may have a smaller window than the model the plan chose)."""
    room = spec.context_window - with_margin(record.plan.estimated_input_tokens)
    return min(record.plan.max_output_tokens, spec.max_output_tokens, max(16, room))


class Executor:
    """Serves job records; one per worker process, sharing breakers and cache through Redis."""

    def __init__(
        self,
        settings: Settings,
        breakers: CircuitBreakers,
        cache: ResponseCache | None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.breakers = breakers
        self.cache = cache
        self.sleep = sleep
        self.slots = CallSlots(settings, breakers.redis)

    def serve(
        self,
        record: JobRecord,
        document: str | None = None,
        cancelled: Callable[[], bool] = lambda: False,
        on_delta: Callable[[str], None] | None = None,
    ) -> Served:
        """Answer a job along its plan's chain; `document` is the (possibly compressed) document text; with
        `on_delta`, the answer is streamed from the provider and each piece handed over as it arrives."""
        return self.complete(
            record.plan.chain,
            lambda model: provider_request(record, model, self.settings, document),
            use_cache=record.input.options.cache,
            cancelled=cancelled,
            on_delta=on_delta,
            tenant=record.tenant,
        )

    def serve_with_tools(
        self,
        record: JobRecord,
        toolbox: Toolbox,
        document: str | None = None,
        cancelled: Callable[[], bool] = lambda: False,
        on_delta: Callable[[str], None] | None = None,
    ) -> Served:
        """The tool-call loop: the model asks, the toolbox calls the service, the result goes back, until the model
        answers in text or the step limit is reached. Each turn goes along the chain from the model that served the
        turn before, so one model sees the whole conversation unless it fails. Tool turns are never cached."""
        turns: list[Message] = []
        calls: list[ToolCallRecord] = []
        attempts: list[Attempt] = []
        chain, used = record.plan.chain, dict.fromkeys(_USAGE_FIELDS, 0)
        max_steps, specs = self.settings.mcp_client.max_tool_steps, toolbox.specs
        spent: Served | None = None  # the turns answered so far, with their summed usage

        for step in range(1, max_steps + 1):
            try:
                served = self.complete(
                    chain,
                    lambda model: provider_request(record, model, self.settings, document, turns, specs),
                    use_cache=False,
                    cancelled=cancelled,
                )
            except ChainExhausted as error:
                raise ChainExhausted(str(error), attempts + error.attempts, calls, spent) from error
            except Cancelled as error:
                raise Cancelled(attempts + error.attempts, spent) from error
            attempts += served.attempts
            chain = chain[chain.index(served.model) :]
            answer = served.completion
            used = {name: used[name] + getattr(answer, name) for name in _USAGE_FIELDS}
            spent = served.model_copy(update={"completion": answer.model_copy(update=used)})
            if not answer.tool_calls:
                break
            turns.append(Message(role="assistant", content=answer.text, tool_calls=answer.tool_calls))
            for call in answer.tool_calls:
                if cancelled():
                    raise Cancelled(attempts, spent)
                result, call_record = toolbox.run(call, step)
                calls.append(call_record)
                turns.append(
                    Message(
                        role="tool",
                        content=result.text,
                        tool_call_id=call.id,
                        tool_name=call.name,
                        is_error=result.outcome != "ok",
                    )
                )
        else:
            if not answer.text:
                raise ChainExhausted(
                    f"the model still asked for tools after {max_steps} steps "
                    f"(mcp_client.max_tool_steps) and gave no answer",
                    attempts,
                    calls,
                    spent,
                )
        if on_delta is not None and answer.text:
            on_delta(answer.text)
        total = answer.model_copy(update=used)
        return served.model_copy(update={"completion": total, "attempts": attempts, "tool_calls": calls})

    def complete(
        self,
        chain: list[str],
        request_for: Callable[[str], ProviderRequest],
        use_cache: bool = True,
        cancelled: Callable[[], bool] = lambda: False,
        on_delta: Callable[[str], None] | None = None,
        tenant: str | None = None,
    ) -> Served:
        """Call `chain` in order, each model with its own request, until one answers. The cache is read and
        filled in `tenant`'s partition; a cancelled job's answer is never cached (it was not paid for whole)."""
        attempts: list[Attempt] = []
        use_cache = self.cache is not None and use_cache
        for model in chain:
            provider = self.settings.catalog.spec(model).provider
            request = request_for(model)
            if use_cache and (hit := self.cache.get(model, request, tenant)):
                attempts.append(_attempt(model, provider, 1, time.time(), ok=True, kind="cache_hit"))
                return Served(completion=hit, model=model, provider=provider, attempts=attempts, cache_hit=True)
            gate = self.breakers.acquire(model)
            if gate is Gate.open:
                attempts.append(
                    _attempt(model, provider, 0, time.time(), error="circuit breaker open", kind="breaker_open")
                )
                continue
            served = self._try_model(model, provider, request, gate, attempts, cancelled, on_delta)
            if served is not None:
                # neither a cancelled job's answer (not paid for whole) nor one whose stream ended without a reason
                if use_cache and not cancelled() and served.stop_reason != "incomplete":
                    self.cache.put(model, request, served, tenant)
                return Served(completion=served, model=model, provider=provider, attempts=attempts)
        summary = "; ".join(f"{a.model}: {a.error}" for a in attempts)
        raise ChainExhausted(f"every model of the chain failed ({summary})", attempts)

    def _try_model(
        self,
        model: str,
        provider: str,
        request: ProviderRequest,
        gate: Gate,
        attempts: list[Attempt],
        cancelled: Callable[[], bool],
        on_delta: Callable[[str], None] | None,
    ) -> Completion | None:
        policy = self.settings.resilience
        for attempt in range(policy.max_attempts_per_model):
            # Before the first try the job was claimed a moment ago; later tries ask whether it was cancelled since.
            if attempts and cancelled():
                raise Cancelled(attempts)
            streamed: list[str] = []
            try:  # the call's timeout starts once it has its slots (shared/slots.py), not while it waits for them
                with self.slots.held(provider, model, request.timeout_s, cancelled) as hold:
                    started = time.time()
                    completion = self._call(provider, request, on_delta, streamed, hold.renew)
            except WaitCancelled as error:
                raise Cancelled(attempts) from error
            except NoSlot as error:
                attempts.append(_attempt(model, provider, attempt + 1, time.time(), error=str(error), kind="no_slot"))
                return None
            except ProviderError as error:
                attempts.append(
                    _attempt(
                        model, provider, attempt + 1, started, error=error.message, kind=error.kind, status=error.status
                    )
                )
                if streamed:  # the caller already holds part of this answer: another try would garble it
                    raise ChainExhausted(f"{model} failed mid-stream: {error.message}", attempts) from error
                if error.kind == "client":
                    raise ChainExhausted(f"{model} rejected the request: {error.message}", attempts) from error
                opened = error.kind in COUNTED_KINDS and self.breakers.failure(model) in ("opened", "reopened")
                delay = retry_delay(error, attempt, policy)
                if gate is Gate.probe or opened or delay is None:
                    return None
                self.sleep(delay)
                continue
            attempts.append(_attempt(model, provider, attempt + 1, started, ok=True))
            self.breakers.success(model)
            return completion
        return None

    def _call(
        self,
        provider: str,
        request: ProviderRequest,
        on_delta: Callable[[str], None] | None,
        streamed: list[str],
        still_going: Callable[[], None] = lambda: None,
    ) -> Completion:
        """One call; a stream calls `still_going` with each piece (its slots' leases are renewed)."""
        adapter = provider_for(provider, self.settings)
        if on_delta is None:
            return adapter.complete(request)
        for piece in adapter.stream(request):
            if isinstance(piece, Completion):
                return piece
            streamed.append(piece)
            on_delta(piece)
            still_going()
        raise ProviderError(
            "the stream ended without a final message",
            provider=provider,
            model=request.model,
            retryable=True,
            kind="server",
        )


def _attempt(
    model: str,
    provider: str,
    number: int,
    started: float,
    *,
    ok: bool = False,
    error: str | None = None,
    kind: str | None = None,
    status: int | None = None,
) -> Attempt:
    return Attempt(
        model=model,
        provider=provider,
        number=number,
        ok=ok,
        error=error,
        error_kind=kind,
        status=status,
        started_at=started,
        duration_ms=round((time.time() - started) * 1000, 3),
    )
