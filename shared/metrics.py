"""Request metrics in per-minute Redis buckets: O(1) to record, bounded in memory, mergeable over any period.

Each minute is one hash of counters (requests, tokens, cost, baseline, cache, per model/intent/tier/provider) and
a fixed log-spaced latency histogram. Recording is one Lua call. A job is counted by the step that finishes it
(`shared.job_store`), which only the first finish of an open job takes: a job re-run after a worker died is
counted exactly once, with no marker per job to keep.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any

import redis
from pydantic import BaseModel, Field

from shared.keyspace import Keyspace
from shared.pricing import Percent, Usd, saved_pct
from shared.settings import Settings
from shared.store import script

log = logging.getLogger(__name__)

#: Buckets are kept as long as the longest period served.
RETENTION_SECONDS = 86_400 + 120
#: Latency histogram: bucket i holds durations up to 10^(i/8) ms (factor 1.33 per bucket), 1 ms to ~17 min.
LATENCY_STEPS_PER_DECADE = 8
LATENCY_BUCKETS = 6 * LATENCY_STEPS_PER_DECADE + 1


def latency_bucket(ms: float) -> int:
    if ms <= 1:
        return 0
    return min(LATENCY_BUCKETS - 1, math.ceil(math.log10(ms) * LATENCY_STEPS_PER_DECADE - 1e-9))


def latency_bucket_upper_ms(index: int) -> float:
    return 10 ** (index / LATENCY_STEPS_PER_DECADE)


class RequestOutcome(BaseModel):
    """One finished (or rejected) request as the metrics see it."""

    job_id: str | None = None
    tenant: str | None = Field(None, description="Counted in the tenant's own buckets too.")
    succeeded: bool
    model: str | None = None
    provider: str | None = None
    intent: str | None = None
    tier: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    baseline_tokens: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    cache_hit: bool | None = None
    latency_ms: float | None = None
    rejected: bool = Field(False, description="Refused before it ran (no model satisfies the constraints).")
    service_calls: dict[str, int] = Field({}, description="Downstream MCP tool calls per service.")
    service_errors: dict[str, int] = Field({}, description="Of those, the ones that did not end `ok`.")


# Count one request, as a Lua function that other scripts can call to count a request in the same step as their own
# writes (a job's finish). keys: minute bucket, hour bucket, all-time totals (for Prometheus), then the tenant's own
# minute and hour buckets when the request has a tenant. argv: bucket ttl, then triples (op, field, amount); op "i"
# integer, "f" float. Hour buckets let a day be read as 24 hashes, not 1,440.
RECORD_FUNCTION = """
local function record_outcome(keys, argv)
  for i = 2, #argv, 3 do
    local op = argv[i] == 'i' and 'HINCRBY' or 'HINCRBYFLOAT'
    for k = 1, #keys do redis.call(op, keys[k], argv[i + 1], argv[i + 2]) end
  end
  for _, k in ipairs({1, 4}) do  -- minute buckets, then their hour buckets; the totals (3) never expire
    if keys[k] then
      redis.call('EXPIRE', keys[k], argv[1])
      redis.call('EXPIRE', keys[k + 1], argv[1] + 3600)
    end
  end
  return 1
end
"""
_RECORD = RECORD_FUNCTION + "return record_outcome(KEYS, ARGV)"


def bucket_key(keys: Keyspace, shard: int, minute: int, tenant: str | None = None) -> str:
    """A minute's bucket in one shard (shared/keyspace.py): every tenant's, or (with `tenant`) one tenant's."""
    scope = ("t", tenant) if tenant is not None else ()
    return keys.sharded(shard, "metrics", *scope, str(minute))


def hour_key(keys: Keyspace, shard: int, hour: int, tenant: str | None = None) -> str:
    scope = ("t", tenant) if tenant is not None else ()
    return keys.sharded(shard, "metrics", *scope, "h", str(hour))


def totals_key(keys: Keyspace, shard: int) -> str:
    return keys.sharded(shard, "metrics", "total")


def read_totals(settings: Settings, client: redis.Redis) -> dict[str, float]:
    """The all-time counters (for Prometheus), every shard's merged."""
    keys = Keyspace.of(settings, client)
    with client.pipeline(transaction=False) as pipe:
        for shard in range(keys.shards):
            pipe.hgetall(totals_key(keys, shard))
        return merge_buckets(pipe.execute())


class MetricsRecorder:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.keys = Keyspace.of(settings, client)
        self.redis = client
        self._record = script(client, _RECORD)

    def record(self, outcome: RequestOutcome, at: float | None = None) -> bool:
        """Count one request that no job's finish counts (a rejected one); False if Redis refused (the request
        never fails for it)."""
        keys, args = recording(self.keys, outcome, self.keys.shard_of(outcome.job_id or uuid.uuid4().hex), at)
        try:
            return bool(self._record(keys=keys, args=args))
        except redis.RedisError as error:
            log.warning("metrics not recorded for job %s: %s", outcome.job_id, error)
            return False


def recording(
    keys: Keyspace, outcome: RequestOutcome, shard: int, at: float | None = None
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of `RECORD_FUNCTION` that count `outcome` in `shard`'s buckets for the minute of `at`
    (default now). A job is counted in its own shard, so that its finish counts it in the same step."""
    minute = int((at if at is not None else time.time()) // 60)
    names = [bucket_key(keys, shard, minute), hour_key(keys, shard, minute // 60), totals_key(keys, shard)]
    if outcome.tenant is not None:
        tenant = outcome.tenant
        names += [bucket_key(keys, shard, minute, tenant), hour_key(keys, shard, minute // 60, tenant)]
    return names, [RETENTION_SECONDS, *_increments(outcome)]


def _increments(outcome: RequestOutcome) -> list[str | int | float]:
    ints: dict[str, int] = {"requests": 1, "successes" if outcome.succeeded else "failures": 1}
    if outcome.rejected:
        ints["rejected"] = 1
    if outcome.succeeded:
        ints |= {
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            # the baseline reads the naive full prompt and writes the same answer
            "baseline_tokens": outcome.baseline_tokens + outcome.output_tokens,
            "tokens_saved": outcome.baseline_tokens - outcome.input_tokens,
        }
    if outcome.cache_hit is not None:
        ints["cache_hits" if outcome.cache_hit else "cache_misses"] = 1
    for dimension in ("model", "provider", "intent", "tier"):
        value = getattr(outcome, dimension)
        if value:
            ints[f"{dimension}:{value}"] = 1
    for service, calls in outcome.service_calls.items():
        ints[f"service_calls:{service}"] = calls
    for service, errors in outcome.service_errors.items():
        ints[f"service_errors:{service}"] = errors
    if outcome.latency_ms is not None:
        ints[f"latency:{latency_bucket(outcome.latency_ms)}"] = 1
        ints["latency_ms_total"] = round(outcome.latency_ms)
    args: list[str | int | float] = []
    for field, amount in ints.items():
        args += ["i", field, amount]
    if outcome.succeeded:
        args += ["f", "cost_usd", repr(outcome.cost_usd), "f", "baseline_cost_usd", repr(outcome.baseline_cost_usd)]
    return args


PERIODS = {"1m": 1, "5m": 5, "1h": 60, "1d": 1440}


class MetricsReport(BaseModel):
    """Aggregates over a period, as `get_metrics` returns them (the original tool's fields, and more)."""

    period: str
    total_requests: int
    successful_requests: int
    failed_requests: int
    rejected_requests: int
    success_rate: float
    avg_duration_ms: float
    p50_duration_ms: float
    p95_duration_ms: float
    p99_duration_ms: float
    input_tokens: int
    output_tokens: int
    total_tokens: int
    avg_tokens: float
    baseline_tokens: int
    total_tokens_saved: int
    tokens_saved_pct: float
    total_cost_usd: Usd
    avg_cost_usd: Usd
    baseline_cost_usd: Usd
    savings_usd: Usd
    savings_pct: Percent
    requests_per_minute: float
    intent_distribution: dict[str, int]
    model_distribution: dict[str, int]
    tier_distribution: dict[str, int]
    provider_distribution: dict[str, int]
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float
    service_calls: dict[str, int] = Field({}, description="Downstream MCP tool calls per service.")
    service_errors: dict[str, int] = Field({}, description="Downstream MCP tool calls that did not end `ok`.")


def merge_buckets(buckets: list[dict[str, str]]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for bucket in buckets:
        for field, value in bucket.items():
            merged[field] = merged.get(field, 0.0) + float(value)
    return merged


def percentile_ms(histogram: list[float], q: float) -> float:
    """The q-quantile from bucket counts, interpolated geometrically inside its bucket (so within one bucket)."""
    total = sum(histogram)
    if not total:
        return 0.0
    rank = q * total
    seen = 0.0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            upper = latency_bucket_upper_ms(index)
            lower = latency_bucket_upper_ms(index - 1) if index else 0.0
            if lower == 0.0:
                return upper
            return lower * (upper / lower) ** ((rank - seen) / count)
        seen += count
    return latency_bucket_upper_ms(len(histogram) - 1)


def read_metrics(
    settings: Settings, client: redis.Redis, period: str, now: float | None = None, tenant: str | None = None
) -> MetricsReport:
    """Merge the minute buckets of `period`, from the current minute back to the period's start, in one pipeline:
    every tenant's, or one tenant's, of every shard."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
    minutes = PERIODS[period]
    current = int((now if now is not None else time.time()) // 60)
    keys = Keyspace.of(settings, client)
    with client.pipeline(transaction=False) as pipe:
        for shard in range(keys.shards):
            for name in window_keys(keys, shard, current - minutes, current, tenant):
                pipe.hgetall(name)
        merged = merge_buckets(pipe.execute())
    return report(period, merged, minutes)


def window_keys(keys: Keyspace, shard: int, first: int, last: int, tenant: str | None = None) -> list[str]:
    """A shard's bucket keys covering minutes [first, last]: whole hours as hour buckets, the ragged edges as
    minutes."""
    names, minute = [], first
    while minute <= last:
        if minute % 60 == 0 and minute + 59 <= last:
            names.append(hour_key(keys, shard, minute // 60, tenant))
            minute += 60
        else:
            names.append(bucket_key(keys, shard, minute, tenant))
            minute += 1
    return names


def report(period: str, m: dict[str, float], minutes: int) -> MetricsReport:
    count = lambda name: int(m.get(name, 0))  # noqa: E731
    requests, successes = count("requests"), count("successes")
    histogram = [m.get(f"latency:{i}", 0.0) for i in range(LATENCY_BUCKETS)]
    timed = sum(histogram)
    tokens = count("input_tokens") + count("output_tokens")
    cost, baseline_cost = m.get("cost_usd", 0.0), m.get("baseline_cost_usd", 0.0)
    hits, misses = count("cache_hits"), count("cache_misses")
    baseline_tokens = count("baseline_tokens")

    def distribution(prefix: str) -> dict[str, int]:
        found = {name[len(prefix) :]: int(value) for name, value in m.items() if name.startswith(prefix)}
        return dict(sorted(found.items(), key=lambda item: -item[1]))

    return MetricsReport(
        period=period,
        total_requests=requests,
        successful_requests=successes,
        failed_requests=count("failures"),
        rejected_requests=count("rejected"),
        success_rate=round(successes / requests, 4) if requests else 0.0,
        avg_duration_ms=round(m.get("latency_ms_total", 0.0) / timed, 1) if timed else 0.0,
        p50_duration_ms=round(percentile_ms(histogram, 0.50), 1),
        p95_duration_ms=round(percentile_ms(histogram, 0.95), 1),
        p99_duration_ms=round(percentile_ms(histogram, 0.99), 1),
        input_tokens=count("input_tokens"),
        output_tokens=count("output_tokens"),
        total_tokens=tokens,
        avg_tokens=round(tokens / successes, 1) if successes else 0.0,
        baseline_tokens=baseline_tokens,
        total_tokens_saved=count("tokens_saved"),
        tokens_saved_pct=round(
            saved_pct(count("baseline_tokens") - count("tokens_saved"), count("baseline_tokens")), 2
        ),
        total_cost_usd=round(cost, 8),
        avg_cost_usd=round(cost / successes, 8) if successes else 0.0,
        baseline_cost_usd=round(baseline_cost, 8),
        savings_usd=round(baseline_cost - cost, 8),
        savings_pct=round(saved_pct(cost, baseline_cost), 2),
        requests_per_minute=round(requests / minutes, 3),
        intent_distribution=distribution("intent:"),
        model_distribution=distribution("model:"),
        tier_distribution=distribution("tier:"),
        provider_distribution=distribution("provider:"),
        cache_hits=hits,
        cache_misses=misses,
        cache_hit_rate=round(hits / (hits + misses), 4) if hits + misses else 0.0,
        service_calls=distribution("service_calls:"),
        service_errors=distribution("service_errors:"),
    )
