"""API keys, their rate limits and their budgets, in Redis.

A key is shown once, when it is created; Redis keeps only its sha256. A budget is protected by reservation: at
enqueue, the job's worst-case cost is added to the period's spend in one Lua step that refuses if the budget would
be exceeded, so concurrent requests can never overspend it together; when the job ends the reservation is
replaced by the actual cost (once per job, however often it is settled).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Literal

import redis
from pydantic import BaseModel, Field

from shared.errors import BudgetExhausted
from shared.jobs import JobRecord, JobStatus
from shared.keyspace import Keyspace, tag_of
from shared.rate_limit import RateDecision, RateLimiter
from shared.routing import Plan
from shared.settings import Settings
from shared.store import script

KEY_PREFIX = "orch_"
TENANT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ApiKey(BaseModel):
    id: str
    name: str
    created_at: float
    revoked: bool = False
    budget_usd: float | None = Field(None, description="Spend allowed per period; None: unlimited.")
    budget_period: Literal["day", "month"] = "day"
    rate_per_minute: int | None = Field(None, gt=0)
    tenant: str | None = Field(
        None, pattern=TENANT_NAME.pattern, description="The team whose work the key shares; None: the key alone."
    )
    admin: bool = Field(False, description="Sees every tenant's work and metrics.")

    @property
    def tenant_id(self) -> str:
        """Whose work the key creates and sees: its tenant's, or (ungrouped) its own."""
        return f"t.{self.tenant}" if self.tenant else f"k.{self.id}"


def owner_of(caller: ApiKey | None) -> str | None:
    """The tenant a caller's work belongs to; None without a key (authentication off, MCP over stdio)."""
    return caller.tenant_id if caller is not None else None


def sees_every_tenant(caller: ApiKey | None) -> bool:
    """An admin key, or no key: the deployment's one user (its server runs without authentication, or it is the
    local MCP client)."""
    return caller is None or caller.admin


def may_see(caller: ApiKey | None, owner: str | None) -> bool:
    """Whether `caller` may see work owned by `owner`: its own tenant's, or every tenant's (`sees_every_tenant`)."""
    return sees_every_tenant(caller) or caller.tenant_id == owner


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def worst_case_cost(plan: Plan, settings: Settings, turns: int = 1) -> float:
    """What the job could cost at most: its input at the chain's dearest input price (a long-context rate
    included), and every output token it may ask for at the dearest output price, once per model turn (a job with
    downstream tools may take `mcp_client.max_tool_steps` turns)."""
    sheets = [settings.catalog.sheet(model) for model in plan.chain]
    one_turn = plan.estimated_input_tokens * max(s.input.highest for s in sheets) + plan.max_output_tokens * max(
        s.output.highest for s in sheets
    )
    return one_turn * turns


_UNLIMITED = 1e18  # what "no budget" reserves against: Lua reads no infinity

# KEYS: spend, open reservations (by time), their details. ARGV: amount, budget, ttl, job id, now, details.
# Returns 1 when reserved. Every reservation is listed until it is settled, so none outlives a crashed process.
_RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + tonumber(ARGV[1]) > tonumber(ARGV[2]) + 1e-12 then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[6])
return 1
"""

# KEYS: spend, open reservations, their details. ARGV: actual minus reserved, job id. Settles once: only while the
# reservation is open. The actual cost is recorded whatever it is: a job that cost more than it reserved leaves the
# key over budget.
_SETTLE = """
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('HDEL', KEYS[3], ARGV[2]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBYFLOAT', KEYS[1], ARGV[1]) end
return 1
"""


class Reservation(BaseModel):
    """A job's reservation on a key's budget, open until the job is settled."""

    job_id: str
    spend_key: str
    reserved_usd: float


class KeyStore:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keyspace.of(settings, client)
        self._reserve = script(client, _RESERVE)
        self._settle = script(client, _SETTLE)

    def _key(self, digest: str) -> str:
        return self.keys.tagged("apikey", "keys", digest)

    def _index(self) -> str:
        return self.keys.tagged("apikeys", "keys")

    def create(
        self,
        name: str,
        budget_usd: float | None = None,
        budget_period: str = "day",
        rate_per_minute: int | None = None,
        tenant: str | None = None,
        admin: bool = False,
    ) -> tuple[ApiKey, str]:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        api_key = ApiKey(
            id=uuid.uuid4().hex[:12],
            name=name,
            created_at=time.time(),
            budget_usd=budget_usd,
            budget_period=budget_period,
            rate_per_minute=rate_per_minute,
            tenant=tenant,
            admin=admin,
        )
        digest = fingerprint(secret)
        with self.redis.pipeline(transaction=True) as pipe:
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

    def take(self, api_key: ApiKey, requests: int = 1) -> RateDecision | None:
        """Count `requests` against the key's rate (all or none); None for a key without a rate."""
        if not api_key.rate_per_minute:
            return None
        return RateLimiter(self.settings, self.redis).take(api_key.id, api_key.rate_per_minute, requests)

    def spend_key(self, api_key: ApiKey, at: float | None = None) -> str:
        moment = time.gmtime(at if at is not None else time.time())
        stamp = time.strftime("%Y-%m-%d" if api_key.budget_period == "day" else "%Y-%m", moment)
        return self.keys.tagged("spend", api_key.id, stamp)

    def spent(self, api_key: ApiKey) -> float:
        return float(self.redis.get(self.spend_key(api_key)) or 0)

    def _open_reservations(self, key_id: str) -> list[str]:
        """The key's open reservations (by time) and their details, in the slot of its spend."""
        return [self.keys.tagged("reservations", key_id), self.keys.tagged("reservations", key_id, "details")]

    def reserve(self, api_key: ApiKey, amount: float, job_id: str) -> str:
        """Reserve `amount` of the key's budget for `job_id`; the spend key to settle against. A key without a
        budget is never refused, but its spend is kept all the same (`orchestrator keys list` shows it)."""
        spend = self.spend_key(api_key)
        ttl = 2 * 86_400 if api_key.budget_period == "day" else 32 * 86_400
        budget = api_key.budget_usd if api_key.budget_usd is not None else _UNLIMITED
        details = Reservation(job_id=job_id, spend_key=spend, reserved_usd=amount).model_dump_json()
        args = [repr(amount), repr(budget), ttl, job_id, repr(time.time()), details]
        if not self._reserve(keys=[spend, *self._open_reservations(api_key.id)], args=args):
            raise BudgetExhausted(
                f"the budget of ${api_key.budget_usd:.4f} per {api_key.budget_period} of key {api_key.name!r} "
                f"cannot cover this request (worst case ${amount:.6f}, already spent or reserved "
                f"${self.spent(api_key):.6f})"
            )
        return spend

    def settle(self, spend_key: str, job_id: str, reserved: float, actual: float) -> bool:
        """Replace a job's reservation by its actual cost, once (False when it was settled already)."""
        keys = [spend_key, *self._open_reservations(tag_of(spend_key))]
        return bool(self._settle(keys=keys, args=[repr(actual - reserved), job_id]))

    def unsettled(self, older_than_s: float, page: int = 1000) -> list[Reservation]:
        """Reservations made more than `older_than_s` ago and not settled yet: up to `page` per key, oldest first."""
        key_ids = list(self.redis.hkeys(self._index()))
        cutoff = time.time() - older_than_s
        with self.redis.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                pipe.zrangebyscore(self._open_reservations(key_id)[0], "-inf", cutoff, start=0, num=page)
            per_key = pipe.execute()
        with self.redis.pipeline(transaction=False) as pipe:
            for key_id, job_ids in zip(key_ids, per_key, strict=True):
                if job_ids:
                    pipe.hmget(self._open_reservations(key_id)[1], job_ids)
            raws = [raw for found in pipe.execute() for raw in found]
        return [Reservation.model_validate_json(raw) for raw in raws if raw]

    def reconcile(
        self,
        older_than_s: float,
        lookup: Callable[[str], JobRecord | None],
        held: Callable[[list[str]], set[str]],
    ) -> list[str]:
        """Settle the reservations that a process which died left behind; the ids settled.

        - a finished job: at its recorded cost (its worker died between the finish and the settlement);
        - a job cancelled while its call ran, once no worker holds its message (`held`: the worker that ran the
          call died before the call returned and was billed): at its reservation, the most the call can have cost;
        - a job that has no record, or one that cannot be read (`lookup` gives None): at nothing.
        Jobs still queued or running keep their reservation."""
        candidates = [(reservation, lookup(reservation.job_id)) for reservation in self.unsettled(older_than_s)]
        cut_off = [r.job_id for r, record in candidates if record is not None and _cancelled_while_running(record)]
        running = held(cut_off) if cut_off else set()
        settled = []
        for reservation, record in candidates:
            if (record is not None and not record.status.terminal) or reservation.job_id in running:
                continue
            if record is None:
                actual = 0.0
            elif _cancelled_while_running(record):
                actual = max(reservation.reserved_usd, record.spent_usd)
            else:
                actual = record.spent_usd
            if self.settle(reservation.spend_key, reservation.job_id, reservation.reserved_usd, actual):
                settled.append(reservation.job_id)
        return settled


def _cancelled_while_running(record: JobRecord) -> bool:
    return record.status == JobStatus.cancelled and record.started_at is not None


def settle_job(settings: Settings, client: redis.Redis, record: JobRecord, actual_usd: float) -> None:
    """Release a finished or cancelled job's reservation, keeping what it really cost."""
    billing = record.billing
    if billing is not None and billing.spend_key:
        KeyStore(settings, client).settle(billing.spend_key, record.id, billing.reserved_usd, actual_usd)
