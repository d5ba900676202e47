"""API keys, their rate limits and their budgets, in Redis.

A key is shown once, when it is created; Redis keeps only its sha256. A budget is protected by reservation: at
enqueue, the job's worst-case cost is added to the period's spend in one Lua step that refuses if the budget would
be exceeded, so concurrent requests can never overspend it together; when the job ends the reservation is
replaced by the actual cost (once per job, however often it is settled).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Literal

import redis
from pydantic import BaseModel, Field

from shared.errors import BudgetExhausted
from shared.jobs import JobRecord
from shared.routing import Plan
from shared.settings import Settings
from shared.store import key, script

KEY_PREFIX = "orch_"


class ApiKey(BaseModel):
    id: str
    name: str
    created_at: float
    revoked: bool = False
    budget_usd: float | None = Field(None, description="Spend allowed per period; None: unlimited.")
    budget_period: Literal["day", "month"] = "day"
    rate_per_minute: int | None = None


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def worst_case_cost(plan: Plan, settings: Settings) -> float:
    """What the job could cost at most: its input at the chain's dearest input price (a long-context rate
    included), and every output token it may ask for at the dearest output price."""
    sheets = [settings.catalog.sheet(model) for model in plan.chain]
    return plan.estimated_input_tokens * max(s.input.highest for s in sheets) + plan.max_output_tokens * max(
        s.output.highest for s in sheets
    )


_UNLIMITED = 1e18  # what "no budget" reserves against: Lua reads no infinity

# KEYS: spend. ARGV: amount, budget, ttl. Returns 1 when reserved.
_RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + tonumber(ARGV[1]) > tonumber(ARGV[2]) + 1e-12 then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: spend, settled guard. ARGV: actual minus reserved, guard ttl.
_SETTLE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBYFLOAT', KEYS[1], ARGV[1]) end
return 1
"""


class KeyStore:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self._reserve = script(client, _RESERVE)
        self._settle = script(client, _SETTLE)

    def _key(self, digest: str) -> str:
        return key(self.settings, "apikey", digest)

    def _index(self) -> str:
        return key(self.settings, "apikeys")

    def create(
        self, name: str, budget_usd: float | None = None, budget_period: str = "day", rate_per_minute: int | None = None
    ) -> tuple[ApiKey, str]:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        api_key = ApiKey(
            id=uuid.uuid4().hex[:12],
            name=name,
            created_at=time.time(),
            budget_usd=budget_usd,
            budget_period=budget_period,
            rate_per_minute=rate_per_minute,
        )
        digest = fingerprint(secret)
        with self.redis.pipeline() as pipe:
            pipe.set(self._key(digest), api_key.model_dump_json())
            pipe.hset(self._index(), api_key.id, digest)
            pipe.execute()
        return api_key, secret

    def authenticate(self, secret: str) -> ApiKey | None:
        raw = self.redis.get(self._key(fingerprint(secret)))
        return ApiKey.model_validate_json(raw) if raw else None

    def list(self) -> list[ApiKey]:
        digests = self.redis.hgetall(self._index())
        raws = self.redis.mget([self._key(digest) for digest in digests.values()]) if digests else []
        return sorted((ApiKey.model_validate_json(raw) for raw in raws if raw), key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> bool:
        digest = self.redis.hget(self._index(), key_id)
        raw = self.redis.get(self._key(digest)) if digest else None
        if raw is None:
            return False
        api_key = ApiKey.model_validate_json(raw).model_copy(update={"revoked": True})
        self.redis.set(self._key(digest), api_key.model_dump_json())
        return True

    def rate_limited(self, api_key: ApiKey) -> float | None:
        """Seconds until the key may call again, or None if this call is within its rate."""
        if not api_key.rate_per_minute:
            return None
        now = time.time()
        window = key(self.settings, "rate", api_key.id, str(int(now // 60)))
        with self.redis.pipeline() as pipe:
            pipe.incr(window)
            pipe.expire(window, 120)
            count, _ = pipe.execute()
        return None if count <= api_key.rate_per_minute else 60 - now % 60

    def spend_key(self, api_key: ApiKey, at: float | None = None) -> str:
        moment = time.gmtime(at if at is not None else time.time())
        stamp = time.strftime("%Y-%m-%d" if api_key.budget_period == "day" else "%Y-%m", moment)
        return key(self.settings, "spend", api_key.id, stamp)

    def spent(self, api_key: ApiKey) -> float:
        return float(self.redis.get(self.spend_key(api_key)) or 0)

    def reserve(self, api_key: ApiKey, amount: float) -> str:
        """Reserve `amount` of the key's budget; the spend key to settle against. A key without a budget is never
        refused, but its spend is kept all the same (`orchestrator keys list` shows it)."""
        spend = self.spend_key(api_key)
        ttl = 2 * 86_400 if api_key.budget_period == "day" else 32 * 86_400
        budget = api_key.budget_usd if api_key.budget_usd is not None else _UNLIMITED
        if not self._reserve(keys=[spend], args=[repr(amount), repr(budget), ttl]):
            raise BudgetExhausted(
                f"the budget of ${api_key.budget_usd:.4f} per {api_key.budget_period} of key {api_key.name!r} "
                f"cannot cover this request (worst case ${amount:.6f}, already spent or reserved "
                f"${self.spent(api_key):.6f})"
            )
        return spend

    def settle(self, spend_key: str, job_id: str, reserved: float, actual: float) -> bool:
        """Replace a job's reservation by its actual cost, once."""
        guard = key(self.settings, "spend", "settled", job_id)
        return bool(self._settle(keys=[spend_key, guard], args=[repr(actual - reserved), 40 * 86_400]))


def settle_job(settings: Settings, client: redis.Redis, record: JobRecord, actual_usd: float) -> None:
    """Release a finished or cancelled job's reservation, keeping what it really cost."""
    billing = record.billing
    if billing is not None and billing.spend_key:
        KeyStore(settings, client).settle(billing.spend_key, record.id, billing.reserved_usd, actual_usd)
