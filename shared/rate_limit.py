"""Per-key rate limits that count units of work and slide with time, kept in Redis.

A fixed per-minute counter lets a key through twice its rate across a minute boundary, and counts a batch of a
hundred items as one request. This limiter is GCRA (the generic cell rate algorithm): a token bucket of
`per_minute` units that refills at `per_minute` units a minute, stored as one number per key, the "theoretical
arrival time" at which the bucket would be full again. A request takes `cost` units: all of them or none.

Each decision is one Lua script on the Redis server's clock, so every API process agrees and two concurrent
requests cannot both spend the last units. Times are integer microseconds (exact in Lua's doubles), written with
`%.0f` because Lua's `tostring` would round a 16-digit number. A key expires when its bucket would be full, so an
idle key costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared.settings import Settings
from shared.store import key, script

__all__ = ["RateDecision", "RateLimiter"]

MINUTE_US = 60_000_000

# KEYS: the key's arrival time. ARGV: microseconds per unit, burst (units), cost (units).
# Returns {allowed (0/1), retry after (us), units that fit now}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tolerance = interval * burst
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local available = math.max(math.floor((tolerance - (tat - now)) / interval), 0)
if cost > burst then
  return {0, tat - now, available}
end
local new_tat = tat + cost * interval
local retry = new_tat - tolerance - now
if retry > 0 then
  return {0, retry, available}
end
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
return {1, 0, available - cost}
"""


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one `take`.

    `retry_after` is the seconds until `cost` units would fit (0 when allowed); for a cost above the key's
    `per_minute`, which can never fit, it is the seconds until the bucket is full, and the request must be split.
    `available` is how many units would fit right now (after this take, when allowed)."""

    allowed: bool
    retry_after: float
    available: int


class RateLimiter:
    """GCRA limits per key on a shared Redis.

    With `per_minute = r`, a fresh or idle key may spend all `r` units at once, then `r / 60` a second. Over any
    span of `s` seconds a key is admitted at most `r + s * r / 60` units. So a minute holds up to `2r` only for a key
    that was idle before it (its burst, then a minute's refill), and a few seconds never hold much more than `r`,
    where a fixed window lets `2r` through across its boundary. Each unit's interval is rounded up to a whole
    microsecond, so the bound holds exactly.
    """

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self._take = script(client, _TAKE)

    def _key(self, key_id: str) -> str:
        return key(self.settings, "rate", key_id)

    def take(self, key_id: str, per_minute: int, cost: int = 1) -> RateDecision:
        """Admit `cost` units for `key_id` at `per_minute` (also the burst), or none; `cost=0` only asks how many
        units fit. A key's arrival time carries over if its `per_minute` changes."""
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        if cost < 0:
            raise ValueError("cost must not be negative")
        interval = -(-MINUTE_US // per_minute)  # microseconds per unit, rounded up
        allowed, retry_us, available = self._take(keys=[self._key(key_id)], args=[interval, per_minute, cost])
        return RateDecision(allowed=bool(allowed), retry_after=int(retry_us) / 1e6, available=int(available))
