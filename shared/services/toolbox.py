"""The tools one job may use, and the gate every call of the model passes before it reaches a service.

Arguments are checked against the tool's own input schema first, so a model's malformed call is answered with a
tool error it can correct, and never reaches the downstream server.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from jsonschema import exceptions as schema_errors
from jsonschema import validators

from shared.providers import ToolCall, ToolSpec
from shared.services.models import ServiceTool, ToolCallRecord, ToolResult
from shared.services.selection import ServiceSelection


class ToolCaller(Protocol):
    def tools(self, service: str) -> list[ServiceTool]: ...

    def call(self, service: str, tool: str, arguments: dict) -> ToolResult: ...


class Toolbox:
    """The selected tools of a job, as function tools for the model and calls on the service manager."""

    def __init__(self, selection: ServiceSelection, caller: ToolCaller) -> None:
        self._caller = caller
        self.unavailable: dict[str, str] = {}  # selected services this process cannot reach, and why
        self._tools: dict[str, ServiceTool] = {}
        for choice in selection.services:
            try:
                listed = {tool.name: tool for tool in caller.tools(choice.service)}
            except Exception as error:  # a service down in this process: the job runs without it
                self.unavailable[choice.service] = str(error)
                continue
            for name in choice.tools:
                if name in listed:
                    self._tools[listed[name].function_name] = listed[name]

    def __bool__(self) -> bool:
        return bool(self._tools)

    @property
    def specs(self) -> list[ToolSpec]:
        return [
            ToolSpec(name=function, description=tool.description, parameters=tool.input_schema)
            for function, tool in self._tools.items()
        ]

    def run(self, call: ToolCall, step: int) -> tuple[ToolResult, ToolCallRecord]:
        """Check and make one call; the result is what the model reads next, the record what the job keeps."""
        tool = self._tools.get(call.name)
        started = time.perf_counter()
        if tool is None:
            result = ToolResult(
                outcome="unknown_tool", text=f"no tool {call.name!r}; the tools are {', '.join(self._tools)}"
            )
            return result, self._record(step, "", call.name, call, result, started)
        problem = argument_problems(tool, call.arguments, call.raw_arguments)
        if problem:
            result = ToolResult(outcome="invalid_arguments", text=f"invalid arguments for {call.name}: {problem}")
        else:
            result = self._caller.call(tool.service, tool.name, call.arguments)
        return result, self._record(step, tool.service, tool.name, call, result, started)

    @staticmethod
    def _record(
        step: int, service: str, tool: str, call: ToolCall, result: ToolResult, started: float
    ) -> ToolCallRecord:
        return ToolCallRecord(
            step=step,
            service=service,
            tool=tool,
            arguments=call.arguments,
            outcome=result.outcome,
            duration_ms=result.duration_ms or round((time.perf_counter() - started) * 1000, 3),
            error=None if result.outcome == "ok" else result.text[:500],
            restarted=result.restarted,
        )


def argument_problems(tool: ServiceTool, arguments: dict[str, Any], raw: str | None = None) -> str | None:
    """Why `arguments` do not fit the tool's input schema, or None when they do."""
    if raw is not None:
        return f"the arguments are not a JSON object: {raw[:200]!r}"
    schema = tool.input_schema or {"type": "object"}
    try:
        validator = validators.validator_for(schema)(schema)
        errors = sorted(validator.iter_errors(arguments), key=lambda error: list(error.path))
    except schema_errors.SchemaError as error:
        return f"the tool's own schema is invalid ({error.message}); not calling it"
    return (
        "; ".join(f"{'/'.join(map(str, error.path)) or '(top level)'}: {error.message}" for error in errors[:5]) or None
    )


def gateway_call(caller: ToolCaller, service: str, tool: str, arguments: dict[str, Any]) -> ToolResult:
    """A host's direct call of a downstream tool: the same checks as a model's, then the call."""
    try:
        listed = {item.name: item for item in caller.tools(service)}
    except Exception as error:
        return ToolResult(outcome="unavailable", text=f"service {service} is unavailable: {error}")
    if tool not in listed:
        return ToolResult(outcome="unknown_tool", text=f"{service} has no tool {tool!r}; it has {', '.join(listed)}")
    problem = argument_problems(listed[tool], arguments)
    if problem:
        return ToolResult(outcome="invalid_arguments", text=f"invalid arguments for {tool}: {problem}")
    return caller.call(service, tool, arguments)
