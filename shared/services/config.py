"""The `mcp_services:` registry: downstream MCP servers the orchestrator reaches as a client.

Each entry is a stdio server (a command the orchestrator starts) or a streamable-HTTP server (a URL), with the
capabilities it serves: the request intents (read, write, search, analyze, manage) and free words that name what
it is about ("git", "commits", "timezone"). A bad entry fails at start with the service and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

#: Capabilities that are request intents; any other capability word is a topic the request must name.
INTENT_CAPABILITIES = frozenset({"read", "write", "search", "analyze", "manage"})


class McpService(BaseModel):
    type: Literal["stdio", "http"]
    command: list[str] = Field([], description="stdio: the program and its leading arguments (a string is split).")
    args: list[str] = Field([], description="stdio: arguments appended to `command`.")
    env: dict[str, str] = Field({}, description="stdio: variables added to the server's environment.")
    cwd: Path | None = Field(None, description="stdio: the server's working directory.")
    url: str | None = Field(None, description="http: the streamable-HTTP endpoint, e.g. http://host:8000/mcp.")
    headers: dict[str, str] = Field({}, description="http: headers sent with every request (e.g. Authorization).")
    capabilities: list[str] = Field(min_length=1, description="Intents it serves and words that name its topic.")
    description: str = ""
    timeout_seconds: float = Field(30.0, gt=0, description="Longest wait for one tool call.")
    enabled: bool = True

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        return value.split() if isinstance(value, str) else value

    @field_validator("capabilities")
    @classmethod
    def _normalise(cls, value: list[str]) -> list[str]:
        words = [word.strip().lower() for word in value]
        if any(not word for word in words):
            raise ValueError("capabilities may not be empty strings")
        return words

    @model_validator(mode="after")
    def _transport_fields(self) -> McpService:
        if self.type == "stdio" and not self.command:
            raise ValueError("command: required for a stdio service (the program to start)")
        if self.type == "http":
            if not self.url:
                raise ValueError("url: required for an http service")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url: must start with http:// or https://, got {self.url!r}")
        return self

    @property
    def argv(self) -> list[str]:
        return [*self.command, *self.args]

    @property
    def intents(self) -> set[str]:
        return {word for word in self.capabilities if word in INTENT_CAPABILITIES}

    @property
    def topics(self) -> set[str]:
        return {word for word in self.capabilities if word not in INTENT_CAPABILITIES}


class McpClientSettings(BaseModel):
    """How the orchestrator behaves as an MCP client."""

    max_tool_steps: int = Field(8, ge=1, description="Model turns that may call tools before it must answer.")
    tools_ttl_seconds: float = Field(300.0, gt=0, description="A service's tool list is listed again after this.")
    connect_timeout_seconds: float = Field(20.0, gt=0, description="Longest wait to start and initialise a service.")
    max_result_chars: int = Field(20_000, gt=0, description="A longer tool result is cut to this before the model.")
