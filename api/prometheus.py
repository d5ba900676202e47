"""Prometheus exposition of the all-time totals that the workers record in Redis.

The counters live in Redis, not in this process, because the workers that finish jobs are other processes on other
machines; the collector reads the totals hash at each scrape (one HGETALL) and exposes them as counters and a
latency histogram.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.metrics import LATENCY_BUCKETS, latency_bucket_upper_ms, read_totals
from shared.settings import Settings
from shared.store import StoreUnavailable, redis_client

_COUNTERS = {
    "requests": "Requests finished or refused",
    "successes": "Requests that succeeded",
    "failures": "Requests that failed",
    "rejected": "Requests refused before running",
    "input_tokens": "Input tokens sent to providers",
    "output_tokens": "Output tokens received from providers",
    "baseline_tokens": "Tokens the baseline model would have used",
    "tokens_saved": "Input tokens saved against the baseline",
    "cache_hits": "Answers served from the response cache",
    "cache_misses": "Answers that missed the response cache",
    "cost_usd": "Cost of provider calls in USD",
    "baseline_cost_usd": "Cost the baseline model would have had in USD",
}
_LABELLED = {
    "model": "Requests served per model",
    "provider": "Requests served per provider",
    "intent": "Requests per intent",
    "tier": "Requests per complexity tier",
}


class RedisTotalsCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            totals = read_totals(self.settings, redis_client(self.settings))
        except (redis.RedisError, StoreUnavailable):
            return  # an empty scrape while Redis is away; the counters are intact when it is back
        for name, help_text in _COUNTERS.items():
            yield CounterMetricFamily(f"orchestrator_{name}", help_text, value=totals.get(name, 0.0))
        for dimension, help_text in _LABELLED.items():
            family = CounterMetricFamily(f"orchestrator_requests_by_{dimension}", help_text, labels=[dimension])
            for field, value in totals.items():
                if field.startswith(f"{dimension}:"):
                    family.add_metric([field.split(":", 1)[1]], value)
            yield family
        for kind, help_text in (
            ("calls", "Downstream MCP tool calls per service"),
            ("errors", "Downstream MCP tool calls per service that did not end ok"),
        ):
            family = CounterMetricFamily(f"orchestrator_service_{kind}", help_text, labels=["service"])
            for field, value in totals.items():
                if field.startswith(f"service_{kind}:"):
                    family.add_metric([field.split(":", 1)[1]], value)
            yield family
        cumulative, buckets = 0.0, []
        for index in range(LATENCY_BUCKETS):
            cumulative += totals.get(f"latency:{index}", 0.0)
            buckets.append((str(latency_bucket_upper_ms(index) / 1000), cumulative))
        buckets[-1] = ("+Inf", cumulative)
        yield HistogramMetricFamily(
            "orchestrator_request_duration_seconds",
            "End-to-end request duration",
            buckets=buckets,
            sum_value=totals.get("latency_ms_total", 0.0) / 1000,
        )
