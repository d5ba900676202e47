"""Calls in flight per provider account and per model, bounded across every worker: a Redis semaphore with leases.

A local server with one slot (llama.cpp's) serves one call at a time; sent four at once, it queues or refuses the
rest, and a queued call's wait counts against its timeout. A limit set on the account (`providers.<name>.
max_in_flight`) or on the model (`models.<name>.max_in_flight`) holds calls back in the orchestrator instead, before
their timeout starts. A slot is a member of a sorted set scored by when its lease ends (the call's timeout and a
margin, on the server's clock): a worker killed mid-call frees its slot when the lease ends, with nothing to clean up.
A streamed call, whose timeout bounds each read and not the whole answer, renews its lease as pieces arrive.
Every limit's set shares one hash tag, so a call takes its account's and its model's slots in one step.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from shared.keyspace import Keyspace
from shared.settings import Settings
from shared.store import script

#: Added to a call's timeout for its lease: the call ends (answered or timed out) well before its slot is freed.
LEASE_MARGIN_S = 30.0

# KEYS: the limits' sets. ARGV: lease ms, token, then one limit per key. Takes a slot in every set, or none.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, name in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', name, '-inf', now)
  if redis.call('ZCARD', name) >= tonumber(ARGV[2 + i]) then return 0 end
end
for _, name in ipairs(KEYS) do
  redis.call('ZADD', name, now + tonumber(ARGV[1]), ARGV[2])
  redis.call('PEXPIRE', name, tonumber(ARGV[1]))
end
return 1
"""


# KEYS: the limits' sets. ARGV: lease ms, token. Extends the token's leases that are still held.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, name in ipairs(KEYS) do
  if redis.call('ZSCORE', name, ARGV[2]) then
    redis.call('ZADD', name, 'XX', now + tonumber(ARGV[1]), ARGV[2])
    redis.call('PEXPIRE', name, tonumber(ARGV[1]))
  end
end
return 1
"""

#: A held lease is renewed at most this often.
RENEW_EVERY_S = 5.0


class Hold:
    """Slots held for one call: `renew()` keeps them while the call goes on (a stream's pieces call it)."""

    def __init__(self, slots: CallSlots | None, names: list[str], token: str, lease_ms: int, waited: float) -> None:
        self._slots, self._names, self._token, self._lease_ms = slots, names, token, lease_ms
        self.waited = waited
        self._renewed = time.monotonic()

    def renew(self) -> None:
        if self._slots is None or time.monotonic() - self._renewed < RENEW_EVERY_S:
            return
        self._renewed = time.monotonic()
        self._slots._renew(keys=self._names, args=[self._lease_ms, self._token])


class NoSlot(Exception):
    """No slot came free within `resilience.slot_wait_seconds`."""


class WaitCancelled(Exception):
    """The job was cancelled while its call waited for a slot."""


class CallSlots:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keyspace.of(settings, client)
        self._acquire = script(client, _ACQUIRE)
        self._renew = script(client, _RENEW)

    def limits(self, provider: str, model: str) -> dict[str, int]:
        """The set and limit of each bound on a call of `model` at `provider` (none: unbounded)."""
        found = {}
        account = self.settings.providers.get(provider)
        if account is not None and account.max_in_flight:
            found[self.keys.tagged("slots", "slots", "provider", provider)] = account.max_in_flight
        spec = self.settings.models.get(model)
        if spec is not None and spec.max_in_flight:
            found[self.keys.tagged("slots", "slots", "model", model)] = spec.max_in_flight
        return found

    @contextmanager
    def held(
        self, provider: str, model: str, timeout_s: float, cancelled: Callable[[], bool] = lambda: False
    ) -> Iterator[Hold]:
        """Hold a slot of every limit on the call for its duration (`Hold.waited`: the seconds waited for them).
        Raises `NoSlot` after `resilience.slot_wait_seconds`, `WaitCancelled` once `cancelled()`."""
        limits = self.limits(provider, model)
        if not limits:
            yield Hold(None, [], "", 0, 0.0)
            return
        token, lease_ms = uuid.uuid4().hex, int((timeout_s + LEASE_MARGIN_S) * 1000)
        names, bounds = list(limits), list(limits.values())
        patience = self.settings.resilience.slot_wait_seconds
        started = time.monotonic()
        pause = 0.02
        while not self._acquire(keys=names, args=[lease_ms, token, *bounds]):
            if cancelled():
                raise WaitCancelled(f"cancelled while waiting for a slot for {model}")
            if time.monotonic() - started > patience:
                bounded = ", ".join(f"{name.rsplit(':', 2)[-2]} {limit}" for name, limit in limits.items())
                raise NoSlot(f"no slot free for {model} at {provider} within {patience:.0f} s ({bounded} in flight)")
            time.sleep(pause * (0.5 + random.random()))
            pause = min(0.5, pause * 1.5)
        try:
            yield Hold(self, names, token, lease_ms, time.monotonic() - started)
        finally:
            with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zrem(name, token)
                pipe.execute()
