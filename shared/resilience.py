"""When to try a model again, and how long to wait first.

Only retryable errors are retried (rate limits, server errors, timeouts, connection failures). The wait is the
provider's `Retry-After` when it gives one, else exponential backoff with full jitter (a random wait between zero
and base * 2^attempt, capped), which spreads a thundering herd of retries instead of synchronising it.
"""

from __future__ import annotations

import random

from shared.providers import ProviderError
from shared.settings import Resilience


def backoff_seconds(attempt: int, policy: Resilience, rng: random.Random | None = None) -> float:
    """Full-jitter delay before retry number `attempt + 1` (attempt counts from 0)."""
    ceiling = min(policy.backoff_max_seconds, policy.backoff_base_seconds * 2**attempt)
    return (rng or random).uniform(0, ceiling)


def retry_delay(error: ProviderError, attempt: int, policy: Resilience) -> float | None:
    """Seconds to wait before trying the same model again, or None to move on to the next model."""
    if not error.retryable or attempt + 1 >= policy.max_attempts_per_model:
        return None
    if error.retry_after_s is not None:
        return error.retry_after_s if error.retry_after_s <= policy.max_retry_after_seconds else None
    return backoff_seconds(attempt, policy)
