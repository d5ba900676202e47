"""The one interface every provider adapter implements.

Adapters are thin: they translate a `ProviderRequest` into one SDK call and the SDK's answer (or exception) back
into a `Completion` (or a `ProviderError`). Retries, fallbacks and breakers live above them, so every adapter
builds its SDK client with the SDK's own retries switched off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from shared.tokens import count_tokens


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class ProviderRequest(BaseModel):
    """What a worker asks of one model, in provider-neutral form."""

    model: str = Field(description="The provider's own model id.")
    system: str = ""
    messages: list[Message]
    max_tokens: int = 1024
    temperature: float | None = None
    timeout_s: float = 60.0


class Completion(BaseModel):
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    finish_reason: str | None = None
    usage_reported: bool = Field(
        True, description="False when the provider gave no usage and the counts are local estimates."
    )


def local_usage(request: ProviderRequest, text: str) -> tuple[int, int]:
    """Input and output tokens counted here, for a provider that reports no usage."""
    prompt = "\n".join([request.system, *(message.content for message in request.messages)])
    return count_tokens(prompt), count_tokens(text)


class ProviderError(Exception):
    """A failed provider call, classified for the resilience layer."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
        kind: Literal["rate_limit", "server", "timeout", "connection", "client", "auth", "unknown"] = "unknown",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.kind = kind

    def __str__(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.provider}/{self.model}{status} ({self.kind}): {self.message}"


class Provider(Protocol):
    """One provider account: an SDK client bound to a key and a base URL."""

    name: str

    def complete(self, request: ProviderRequest) -> Completion: ...

    def stream(self, request: ProviderRequest) -> Iterator[str | Completion]:
        """Yield text deltas as they arrive, then one final `Completion` with the whole text and the usage."""
        ...
