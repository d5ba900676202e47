"""Provider adapters, one module per SDK; `provider_for` builds (and reuses) the client for a catalog provider."""

from __future__ import annotations

import functools
import importlib
import threading

from shared.providers.base import Completion, Message, Provider, ProviderError, ProviderRequest, ToolCall, ToolSpec
from shared.settings import Settings

__all__ = [
    "Completion",
    "Message",
    "Provider",
    "ProviderError",
    "ProviderRequest",
    "ToolCall",
    "ToolSpec",
    "prepare_adapters",
    "provider_for",
]

#: adapter name -> "module:Class". Adding a provider is adding its module here and an entry in the catalog.
ADAPTERS = {
    "openai": "shared.providers.openai_provider:OpenAIProvider",
    "anthropic": "shared.providers.anthropic_provider:AnthropicProvider",
    "google": "shared.providers.google_provider:GoogleProvider",
}


class MissingProviderKey(ProviderError):
    pass


# A worker's first jobs all arrive at once: without this lock each of its threads would build its own client
# (20-40 ms of CPU each, 256 of them in a wide worker), and all but one be thrown away.
_building = threading.Lock()


@functools.lru_cache(maxsize=32)
def _build(adapter: str, name: str, api_key: str, base_url: str | None) -> Provider:
    module, _, cls = ADAPTERS[adapter].partition(":")
    return getattr(importlib.import_module(module), cls)(name=name, api_key=api_key, base_url=base_url)


def prepare_adapters(settings: Settings) -> None:
    """Import the SDK of every provider that can be called and build its client. An SDK takes 0.5-1.5 s to import
    and its first client a good part of a second more in a busy worker: a worker pays both at start, not in its
    first jobs, which would otherwise all wait for them."""
    for name in sorted(settings.usable_providers()):
        provider_for(name, settings)


def provider_for(name: str, settings: Settings) -> Provider:
    """The adapter for a provider account. SDK clients hold connection pools, so one is kept per account."""
    config = settings.providers[name]
    api_key = settings.provider_api_key(name)
    if not api_key:
        if config.api_key_required:
            raise MissingProviderKey(
                f"no API key for provider {name}: {settings.key_variables_hint()}",
                provider=name,
                model="",
                kind="auth",
            )
        api_key = "not-needed"
    with _building:
        return _build(config.adapter, name, api_key, settings.provider_base_url(name))
