"""Planning a request before anything runs: the analysis, the plan, a document's compression and its cost, and
the downstream tools it would be offered.

Needs no store and no queue, so `orchestrator analyze`, `batch --dry-run` and the demo plan with nothing running;
the `Orchestrator` plans through it before it submits.
"""

from __future__ import annotations

from typing import Protocol

from shared.compression import (
    Preprocessing,
    Strategy,
    choose_strategy,
    preprocessor_chain,
    summaries_cost_usd,
    summary_key,
)
from shared.documents import DocumentInfo
from shared.errors import NoProviderConfigured, PlanningError
from shared.requests import DocumentPlan, JobRequest, Proposal
from shared.routing import Analysis, Constraints, analyze, plan
from shared.services.models import ServiceTool
from shared.services.selection import select_services
from shared.settings import Settings
from shared.tokens import count_tokens


class ToolCatalog(Protocol):
    """Where the tool lists of the configured MCP services come from (a `ServiceManager`)."""

    def catalog(self) -> tuple[dict[str, list[ServiceTool]], dict[str, str]]: ...


class Planner:
    def __init__(self, settings: Settings, tools: ToolCatalog | None = None) -> None:
        self.settings = settings
        self.tools = tools

    def propose(
        self,
        body: JobRequest,
        require_keys: bool = False,
        open_breakers: set[str] = frozenset(),
        document: DocumentInfo | None = None,
    ) -> Proposal:
        """Analyse and plan among the providers that have a key, the document's compression included.

        With no key at all, `require_keys` makes that an error (nothing could run); without it the plan is made over
        the whole catalog, so `analyze` still shows what would be chosen once a key is set. `document` is the stored
        document a `document_id` names (the caller reads it from its store).
        """
        settings = self.settings
        tokens = document.tokens if document else count_tokens(body.document) if body.document else 0
        analysis = analyze(body.request, body.context, body.options, settings, document_tokens=tokens)
        usable: set[str] | None = settings.usable_providers()
        if not usable:
            if require_keys:
                raise NoProviderConfigured(f"no provider API key is configured: {settings.key_variables_hint()}")
            usable = None
        constraints = Constraints.from_options(body.options, usable, open_breakers)
        chosen = plan(analysis, constraints, settings, body.options.max_tokens)
        compression = None
        if chosen.preprocess and tokens:
            compression = self._document_plan(body, analysis, chosen.document_budget_tokens, tokens, open_breakers)
            total = chosen.estimated_cost_usd + compression.estimated_cost_usd
            if body.options.max_cost is not None and total > body.options.max_cost:
                raise PlanningError(
                    f"estimated ${total:.6f} with the document's {compression.strategy} compression "
                    f"(${compression.estimated_cost_usd:.6f}) exceeds max_cost ${body.options.max_cost:.6f}; "
                    f'"options": {{"strategy": "extractive"}} compresses without an LLM',
                    {chosen.model: "the document's compression pushes it past max_cost"},
                )
            chosen = chosen.model_copy(
                update={
                    "estimated_cost_usd": total,
                    "document_cost_usd": compression.estimated_cost_usd,
                    "estimated_savings_usd": chosen.baseline.cost_usd - total,
                }
            )
        services = None
        if settings.mcp_services and self.tools is not None:
            catalog, unavailable = self.tools.catalog()
            services = select_services(body.request, analysis.intent, settings.mcp_services, catalog, unavailable)
        return Proposal(analysis=analysis, plan=chosen, document=compression, services=services)

    def preprocessing(
        self, document_id: str, query: str, compression: DocumentPlan, tenant: str | None = None
    ) -> Preprocessing:
        """What the preprocessing tasks of a planned compression carry, for `tenant`'s job."""
        budget = compression.budget_tokens
        return Preprocessing(
            document_id=document_id,
            strategy=compression.strategy,
            query=query,
            budget=budget,
            cache_key=summary_key(
                self.settings,
                document_id,
                compression.strategy,
                query,
                budget,
                tenant,
                summariser=compression.summarizers[0] if compression.summarizers else None,
            ),
            llm_chain=compression.summarizers,
            tenant=tenant,
        )

    def _document_plan(
        self, body: JobRequest, analysis: Analysis, budget: int | None, tokens: int, open_breakers: set[str]
    ) -> DocumentPlan:
        settings = self.settings
        chain = preprocessor_chain(settings, settings.usable_providers() or set(settings.providers), open_breakers)
        requested = body.options.strategy or settings.document_processing.default_strategy
        strategy, reason = choose_strategy(requested, analysis, body.request, llm_available=bool(chain))
        budget = budget or settings.document_processing.max_direct_tokens
        draft = DocumentPlan(
            strategy=strategy,
            reason=reason,
            budget_tokens=budget,
            summarizers=chain if strategy.needs_llm else [],
            estimated_cost_usd=0.0,
        )
        expected = summaries_cost_usd(self.preprocessing("", body.request, draft), tokens, settings, worst_case=False)
        max_cost = body.options.max_cost
        if body.options.strategy in (None, "auto") and max_cost is not None and expected > max_cost:
            return draft.model_copy(
                update={
                    "strategy": Strategy.extractive,
                    "reason": f"{reason}; summaries would exceed max_cost, so extractive",
                    "summarizers": [],
                }
            )
        return draft.model_copy(update={"estimated_cost_usd": expected})
