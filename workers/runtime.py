"""The collaborators a worker process builds once and shares between its tasks, over one connection pool."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import redis

from shared.breaker import CircuitBreakers
from shared.cache import ResponseCache
from shared.compression import SummaryCache
from shared.documents import DocumentStore
from shared.execution import Executor
from shared.job_store import JobStore
from shared.metrics import MetricsRecorder
from shared.services.manager import ServiceManager
from shared.settings import Settings, get_settings
from shared.store import redis_client


@dataclass(frozen=True)
class Services:
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    executor: Executor
    metrics: MetricsRecorder
    documents: DocumentStore
    summaries: SummaryCache
    mcp: ServiceManager


@functools.cache
def services() -> Services:
    settings = get_settings()
    client = redis_client(settings)
    cache = ResponseCache(settings, client) if settings.response_cache.enabled else None
    breakers = CircuitBreakers(settings, client)
    return Services(
        settings=settings,
        redis=client,
        jobs=JobStore(settings, client),
        executor=Executor(settings, breakers, cache),
        metrics=MetricsRecorder(settings, client),
        documents=DocumentStore(settings),
        summaries=SummaryCache(settings, client),
        mcp=ServiceManager(settings, breakers),
    )
