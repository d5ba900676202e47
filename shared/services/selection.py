"""Which downstream services, and which of their tools, a request is offered.

Tool schemas cost input tokens on every model turn, often thousands per request, so a model sees only what the
request calls for. A service is offered when the request names it (its name or one of its topic words) and its
intents can serve the request's intent; within it, only the tools whose verb fits that intent (a read gets `log`,
`show`, `status`; a write also `commit`, `add`). No I/O here: the tool lists come from the caller's catalog.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from shared.routing.intent import Intent
from shared.services.config import McpService
from shared.services.models import ServiceTool

#: The service intents that can serve a request of each intent: writing or analysing usually reads first.
SERVING_INTENTS: dict[str, set[str]] = {
    "read": {"read", "search", "analyze"},
    "search": {"search", "read"},
    "analyze": {"analyze", "read", "search"},
    "write": {"write", "manage", "read"},
    "manage": {"manage", "write", "read"},
}

_READ = {
    "get",
    "read",
    "show",
    "list",
    "log",
    "status",
    "diff",
    "view",
    "fetch",
    "describe",
    "current",
    "info",
    "cat",
    "head",
    "tree",
    "stat",
    "inspect",
    "print",
    "lookup",
    "now",
}
_SEARCH = {"search", "find", "query", "grep", "lookup", "list", "match", "filter"}
_ANALYZE = {"analyze", "analyse", "compare", "stats", "metrics", "count", "measure", "lint", "check", "diff"}
_WRITE = {
    "create",
    "add",
    "write",
    "commit",
    "update",
    "set",
    "delete",
    "remove",
    "reset",
    "checkout",
    "push",
    "move",
    "rename",
    "edit",
    "init",
    "put",
    "post",
    "merge",
    "apply",
    "insert",
    "upload",
    "save",
    "tag",
}
_MANAGE = {"start", "stop", "restart", "deploy", "configure", "enable", "disable", "assign", "close", "open"}
ALL_VERBS = _READ | _SEARCH | _ANALYZE | _WRITE | _MANAGE

#: Tool verbs each request intent is offered.
INTENT_VERBS: dict[str, set[str]] = {
    "read": _READ | _SEARCH,
    "search": _SEARCH | _READ,
    "analyze": _ANALYZE | _READ | _SEARCH,
    "write": _WRITE | _READ,
    "manage": ALL_VERBS,
}


class ServiceChoice(BaseModel):
    service: str
    reason: str
    tools: list[str] = Field(description="The service's own names of the tools offered.")


class ServiceSelection(BaseModel):
    """The services and tools a request is offered, and the schema tokens that saved against offering all."""

    services: list[ServiceChoice] = []
    skipped: dict[str, str] = Field({}, description="Configured services not offered, and why.")
    tools_offered: int = 0
    tools_all: int = 0
    schema_tokens_offered: int = 0
    schema_tokens_all: int = 0

    @property
    def schema_tokens_saved(self) -> int:
        return self.schema_tokens_all - self.schema_tokens_offered

    def offered(self, service: str) -> list[str]:
        return next((choice.tools for choice in self.services if choice.service == service), [])


def _words(text: str) -> set[str]:
    words = set(re.findall(r"[a-z0-9]+", text.lower()))
    return words | {word[:-1] for word in words if word.endswith("s") and len(word) > 3}


def _named(name: str, service: McpService, words: set[str]) -> str | None:
    """The word of the request that names the service, if any."""
    for candidate in [name, *sorted(service.topics)]:
        parts = _words(candidate.replace("_", " ").replace("-", " "))
        if parts and parts <= words:
            return candidate
    return None


def _verbs(tool: ServiceTool) -> set[str]:
    return set(re.split(r"[_\-\s.]+", tool.name.lower())) & ALL_VERBS


def select_services(
    request: str,
    intent: Intent | str,
    services: dict[str, McpService],
    catalog: dict[str, list[ServiceTool]],
    unavailable: dict[str, str] | None = None,
) -> ServiceSelection:
    """Choose services and tools for one request; every configured service not chosen is in `skipped` with why."""
    intent = str(getattr(intent, "value", intent))
    words = _words(request)
    selection = ServiceSelection()
    all_tools = [tool for tools in catalog.values() for tool in tools]
    selection.tools_all = len(all_tools)
    selection.schema_tokens_all = sum(tool.schema_tokens for tool in all_tools)
    for name, service in services.items():
        if not service.enabled:
            selection.skipped[name] = "disabled"
            continue
        word = _named(name, service, words)
        if word is None:
            selection.skipped[name] = "the request names none of its topics"
            continue
        if service.intents and not service.intents & SERVING_INTENTS[intent]:
            selection.skipped[name] = f"serves {', '.join(sorted(service.intents))}, not a {intent} request"
            continue
        if name not in catalog:
            selection.skipped[name] = f"unavailable: {(unavailable or {}).get(name, 'its tools could not be listed')}"
            continue
        tools = catalog[name]
        fitting = [tool for tool in tools if not _verbs(tool) or _verbs(tool) & INTENT_VERBS[intent]]
        chosen = fitting or tools
        selection.services.append(
            ServiceChoice(
                service=name,
                reason=f"the request names {word!r}; {len(chosen)} of {len(tools)} tools fit a {intent} request",
                tools=[tool.name for tool in chosen],
            )
        )
        selection.tools_offered += len(chosen)
        selection.schema_tokens_offered += sum(tool.schema_tokens for tool in chosen)
    return selection
