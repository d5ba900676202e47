"""Request metrics in per-minute Redis buckets: O(1) to record, bounded in memory, mergeable over any period.

Each minute is one hash of counters (requests, tokens, cost, baseline, cache, per model/intent/tier/provider) and
a fixed log-spaced latency histogram. Recording is one Lua call: it increments the minute's counters only if the
job id was not recorded before, so a job re-run after a worker died is counted exactly once.
"""

from __future__ import annotations

import logging
import math
import time

import redis
from pydantic import BaseModel

from shared.settings import Settings
from shared.store import key

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


# KEYS: guard, bucket. ARGV: guard ttl, bucket ttl, then triples (op, field, amount); op "i" integer, "f" float.
_RECORD = """
if KEYS[1] ~= '' and not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 3, #ARGV, 3 do
  if ARGV[i] == 'i' then redis.call('HINCRBY', KEYS[2], ARGV[i + 1], ARGV[i + 2])
  else redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i + 1], ARGV[i + 2]) end
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


class MetricsRecorder:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self._record = client.register_script(_RECORD)

    def bucket_key(self, minute: int) -> str:
        return key(self.settings, "metrics", str(minute))

    def record(self, outcome: RequestOutcome, at: float | None = None) -> bool:
        """Count one request; False if its job was counted before or Redis refused (the job never fails for it)."""
        minute = int((at if at is not None else time.time()) // 60)
        guard = key(self.settings, "metrics", "recorded", outcome.job_id) if outcome.job_id else ""
        try:
            return bool(self._record(
                keys=[guard, self.bucket_key(minute)],
                args=[self.settings.job_ttl_seconds, RETENTION_SECONDS, *_increments(outcome)],
            ))
        except redis.RedisError as error:
            log.warning("metrics not recorded for job %s: %s", outcome.job_id, error)
            return False


def _increments(outcome: RequestOutcome) -> list[str | int | float]:
    ints: dict[str, int] = {"requests": 1, "successes" if outcome.succeeded else "failures": 1}
    if outcome.succeeded:
        ints |= {
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "baseline_tokens": outcome.baseline_tokens,
            "tokens_saved": outcome.baseline_tokens - outcome.input_tokens,
        }
    if outcome.cache_hit is not None:
        ints["cache_hits" if outcome.cache_hit else "cache_misses"] = 1
    for dimension in ("model", "provider", "intent", "tier"):
        value = getattr(outcome, dimension)
        if value:
            ints[f"{dimension}:{value}"] = 1
    if outcome.latency_ms is not None:
        ints[f"latency:{latency_bucket(outcome.latency_ms)}"] = 1
        ints["latency_ms_total"] = round(outcome.latency_ms)
    args: list[str | int | float] = []
    for field, amount in ints.items():
        args += ["i", field, amount]
    if outcome.succeeded:
        args += ["f", "cost_usd", repr(outcome.cost_usd), "f", "baseline_cost_usd", repr(outcome.baseline_cost_usd)]
    return args
