"""Circuit breakers per model, kept in Redis so every worker on every machine sees the same state.

A breaker opens after `threshold` failures within `window` seconds, if they are also at least `ratio` of the calls
in that window: a busy model failing 1% of a thousand calls a minute is healthy, and retries handle it. While open,
nobody calls the model and planning
skips it. After `cooldown` seconds it is half-open: exactly one caller wins the probe (a `SET NX` lock); its success
closes the breaker, its failure opens it for another cooldown. Every transition is one Lua script, so two workers
failing at once cannot both open, or both probe. Times come from the Redis server's clock, not the workers'.

Successes of a closed breaker, the common case, are tallied in the process and written at most once a second, or
with the process's next failure of that model, so a call that succeeds costs no round trip of its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import StrEnum

import redis
from pydantic import BaseModel

from shared.keyspace import Keyspace
from shared.settings import Settings
from shared.store import script

#: How stale the snapshot of open breakers may be: another worker's opening is seen within this long.
SNAPSHOT_SECONDS = 1.0

#: Failures that say something about the model's health. A rejected request (400) or a bad key does not.
COUNTED_KINDS = frozenset({"server", "timeout", "connection", "rate_limit"})


class Gate(StrEnum):
    closed = "closed"  # call freely
    probe = "probe"  # half-open, and this caller is the single probe
    open = "open"  # do not call


class BreakerState(BaseModel):
    model: str
    provider: str
    state: str  # closed, open, half_open
    recent_failures: int
    reopens_in_s: float | None = None


_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "

# KEYS: open hash, then any counts hashes. The server's clock (seconds, microseconds) and each hash, read together
# (a cluster refuses TIME in a pipeline: it names no key, so no node).
_READ = """
local found = {redis.call('TIME')}
for _, name in ipairs(KEYS) do table.insert(found, redis.call('HGETALL', name)) end
return found
"""

# KEYS: open hash, probe lock. ARGV: model, probe lock ms.
_ACQUIRE = (
    _NOW
    + """
local reopen = redis.call('HGET', KEYS[1], ARGV[1])
if not reopen then return 'closed' end
if now < tonumber(reopen) then return 'open' end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 'probe' end
return 'open'
"""
)

# Calls are counted per slice of the window (a sixth of it) in one hash per model: fields "f:<slice>", "o:<slice>".
_COUNTS = """
local slices = 6
local slice = math.floor(now / (tonumber(ARGV[2]) / slices))
local function total(prefix)
  local sum = 0
  for i = slice - slices + 1, slice do sum = sum + tonumber(redis.call('HGET', KEYS[2], prefix .. i) or '0') end
  return sum
end
local function count(prefix, amount)
  if amount <= 0 then return end
  redis.call('HINCRBY', KEYS[2], prefix .. slice, amount)
  redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2]) * 2))
  if redis.call('HLEN', KEYS[2]) > 4 * slices then
    for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
      if tonumber(string.sub(field, 3)) <= slice - slices then redis.call('HDEL', KEYS[2], field) end
    end
  end
end
"""

# KEYS: open hash, counts hash, probe lock. ARGV: model, window s, threshold, cooldown s, ratio, tallied successes.
_FAILURE = (
    _NOW
    + _COUNTS
    + """
local reopen = redis.call('HGET', KEYS[1], ARGV[1])
if reopen then
  if now >= tonumber(reopen) then
    redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[4]))
    redis.call('DEL', KEYS[3])
    return 'reopened'
  end
  return 'open'
end
count('o:', tonumber(ARGV[6]))
count('f:', 1)
local failures = total('f:')
if failures >= tonumber(ARGV[3]) and failures >= tonumber(ARGV[5]) * (failures + total('o:')) then
  redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[4]))
  redis.call('DEL', KEYS[2])
  return 'opened'
end
return 'closed'
"""
)

# KEYS: open hash, counts hash, probe lock. ARGV: model, window s, successes, whether they may close the breaker.
# Tallied successes (may close = 0) are from calls made while the breaker looked closed; they must not close one
# that opened since.
_SUCCESS = (
    _NOW
    + _COUNTS
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  if ARGV[4] == '0' then return 'open' end
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2], KEYS[3])
  return 'closed_now'
end
count('o:', tonumber(ARGV[3]))
return 'closed'
"""
)


@dataclass(frozen=True)
class _Snapshot:
    read_at: float  # time.monotonic() when read
    server_time: float  # the Redis server's clock then
    reopen_at: dict[str, float]


class CircuitBreakers:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.policy = settings.resilience
        self.redis = client
        self.keys = Keyspace.of(settings, client)  # every breaker's keys in one slot: the scripts touch several
        self._open = self.keys.tagged("breaker", "breakers", "open")
        self._read = script(client, _READ)
        self._acquire = script(client, _ACQUIRE)
        self._failure = script(client, _FAILURE)
        self._success = script(client, _SUCCESS)
        self._snapshot: _Snapshot | None = None
        self._tally: dict[str, int] = {}  # successes not yet written, per model
        self._tally_since = time.monotonic()
        self._tally_lock = threading.Lock()

    def _counts(self, model: str) -> str:
        return self.keys.tagged("breaker", "breakers", model, "counts")

    def _probe(self, model: str) -> str:
        return self.keys.tagged("breaker", "breakers", model, "probe")

    def acquire(self, model: str) -> Gate:
        """May this caller call `model` now? Closed breakers, the common case, are answered from a snapshot of the
        open ones at most a second old, which saves a round trip per call; only open or half-open ones ask Redis."""
        if model not in self._open_models():
            return Gate.closed
        # The probe lock outlives one attempt, so a probe that dies silently frees the model after this long.
        lock_ms = int((self.settings.provider_timeout_seconds + 5) * 1000)
        return Gate(self._acquire(keys=[self._open, self._probe(model)], args=[model, lock_ms]))

    def _open_models(self) -> dict[str, float]:
        """Open or half-open models with the server time they reopen at, from a snapshot at most a second old."""
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - snapshot.read_at > SNAPSHOT_SECONDS:
            (seconds, micros), opened = self._read_together([self._open])
            snapshot = _Snapshot(
                time.monotonic(), seconds + micros / 1e6, {model: float(reopen) for model, reopen in opened.items()}
            )
            self._snapshot = snapshot
        return snapshot.reopen_at

    def _read_together(self, names: list[str]) -> list:
        """The server's (seconds, microseconds), then each hash of `names` as a dict, in one step."""
        clock, *hashes = self._read(keys=names)
        return [tuple(int(part) for part in clock)] + [dict(zip(h[::2], h[1::2], strict=True)) for h in hashes]

    def failure(self, model: str) -> str:
        """Count a failure; returns `opened`/`reopened` when this failure opened the breaker."""
        policy = self.policy
        with self._tally_lock:
            successes = self._tally.pop(model, 0)  # judged with the successes of this process not yet written
        outcome = self._failure(
            keys=[self._open, self._counts(model), self._probe(model)],
            args=[
                model,
                policy.breaker_window_seconds,
                policy.breaker_failure_threshold,
                policy.breaker_cooldown_seconds,
                policy.breaker_failure_ratio,
                successes,
            ],
        )
        if outcome in ("opened", "reopened"):
            self._snapshot = None  # this process sees its own opening at once
        return outcome

    def success(self, model: str) -> None:
        """Count a success. One of an open or half-open breaker (the probe's) closes it at once; the others are
        tallied and written at most once a second."""
        if model in self._open_models():
            self._write_successes(model, 1, may_close=True)
            return
        with self._tally_lock:
            self._tally[model] = self._tally.get(model, 0) + 1
            if time.monotonic() - self._tally_since < SNAPSHOT_SECONDS:
                return
            tally, self._tally, self._tally_since = self._tally, {}, time.monotonic()
        for tallied, count in tally.items():
            self._write_successes(tallied, count, may_close=False)

    def _write_successes(self, model: str, count: int, may_close: bool) -> None:
        self._success(
            keys=[self._open, self._counts(model), self._probe(model)],
            args=[model, self.policy.breaker_window_seconds, count, int(may_close)],
        )

    def unavailable(self) -> set[str]:
        """Models whose breaker is open and not yet due for a probe: planning leaves them out."""
        reopen_at = self._open_models()
        snapshot = self._snapshot
        now = snapshot.server_time + time.monotonic() - snapshot.read_at if snapshot else 0.0
        return {model for model, reopen in reopen_at.items() if reopen > now}

    def states(self) -> list[BreakerState]:
        models = list(self.settings.models)
        (seconds, micros), opened, *counts = self._read_together([self._open, *map(self._counts, models)])
        now = seconds + micros / 1e6
        states = []
        slice_seconds = self.policy.breaker_window_seconds / 6
        recent = int(now // slice_seconds) - 6
        for model, fields in zip(models, counts, strict=True):
            count = sum(int(v) for f, v in fields.items() if f.startswith("f:") and int(f[2:]) > recent)
            reopen = float(opened[model]) if model in opened else None
            state = "closed" if reopen is None else "open" if reopen > now else "half_open"
            states.append(
                BreakerState(
                    model=model,
                    provider=self.settings.catalog.spec(model).provider,
                    state=state,
                    recent_failures=count,
                    reopens_in_s=round(max(0.0, reopen - now), 3) if reopen is not None else None,
                )
            )
        return states
