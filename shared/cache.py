"""Exact-match response cache: the same prompt to the same model with the same parameters is answered once.

The key is a hash of the model, the normalised prompt and the generation parameters. Normalising is deliberately
conservative (Unicode NFC, line endings, trailing spaces): indentation is meaning in code, so it is kept.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata

import redis

from shared.providers import Completion, ProviderRequest
from shared.settings import Settings
from shared.store import key


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def cache_key(model: str, request: ProviderRequest) -> str:
    material = json.dumps(
        {
            "model": model,
            "system": normalise(request.system),
            "messages": [[m.role, normalise(m.content)] for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            **({"stop": request.stop} if request.stop else {}),  # keys cached before stop sequences still match
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()


class ResponseCache:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client

    def _key(self, model: str, request: ProviderRequest, tenant: str | None) -> str:
        if self.settings.response_cache.scope == "global" or tenant is None:
            return key(self.settings, "cache", cache_key(model, request))
        return key(self.settings, "cache", tenant, cache_key(model, request))

    def get(self, model: str, request: ProviderRequest, tenant: str | None = None) -> Completion | None:
        """The answer cached for this request in `tenant`'s partition (or the shared one, per `scope`)."""
        raw = self.redis.get(self._key(model, request, tenant))
        return Completion.model_validate_json(raw) if raw else None

    def put(self, model: str, request: ProviderRequest, completion: Completion, tenant: str | None = None) -> None:
        ttl = self.settings.response_cache.ttl_seconds
        self.redis.set(self._key(model, request, tenant), completion.model_dump_json(), ex=ttl)
