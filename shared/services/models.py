"""What the service layer hands to the rest of the core: tools, call outcomes and service states."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.tokens import count_tokens

#: How one tool call ended. Only `ok` and `tool_error` reached the service and got an answer from it.
CallOutcome = Literal[
    "ok", "tool_error", "invalid_arguments", "unknown_tool", "breaker_open", "unavailable", "timeout", "failed"
]


class ServiceTool(BaseModel):
    """One tool of one downstream service, as the service listed it."""

    service: str
    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @property
    def function_name(self) -> str:
        """The name the model sees: unique across services, within every provider's name rules."""
        return function_name(self.service, self.name)

    @cached_property
    def schema_tokens(self) -> int:
        """What offering this tool costs per model turn: its name, description and argument schema. Counted once
        per listing, since planning asks on every request."""
        return count_tokens(
            json.dumps({"name": self.function_name, "description": self.description, "parameters": self.input_schema})
        )


def function_name(service: str, tool: str) -> str:
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in f"{service}__{tool}")
    return safe[:64]


class ToolResult(BaseModel):
    """A downstream call's outcome as the model will read it."""

    outcome: CallOutcome
    text: str
    restarted: bool = Field(False, description="The service was found dead and started again for this call.")
    duration_ms: float = 0.0


class ServiceState(BaseModel):
    name: str
    type: Literal["stdio", "http"]
    capabilities: list[str]
    state: Literal["idle", "connected", "failed", "disabled"]
    error: str | None = None
    tools: list[str] = []
    tools_listed_at: float | None = None
    restarts: int = 0
    breaker: str = "closed"


class ToolCallRecord(BaseModel):
    """One tool call of a job, as its record shows it."""

    step: int = Field(description="The model turn that asked for it, from 1.")
    service: str
    tool: str
    arguments: dict[str, Any] = {}
    outcome: CallOutcome
    duration_ms: float = 0.0
    error: str | None = Field(None, description="Why the call did not end `ok`.")
    restarted: bool = Field(False, description="The service had died and was started again for this call.")
