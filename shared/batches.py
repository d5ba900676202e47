"""Batches: many jobs submitted together, followed and read back as one, in input order.

A batch is a small record plus the ordered list of its items: each item is a job id, or the reason its input line
was refused (with the line number), so one bad line never sinks the rest and results come back in input order.
Counts, tokens, cost and savings are read from the jobs themselves, in one pipelined round trip, so they are never
out of step with what the jobs say.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import redis
from pydantic import BaseModel

from shared.auth import ApiKey, may_see
from shared.job_store import JobStore
from shared.jobs import JOB_ID, JobRecord, JobStatus
from shared.keyspace import Keyspace
from shared.pricing import Percent, Usd, saved_pct
from shared.settings import Settings


class BatchItem(BaseModel):
    line: int
    job_id: str | None = None
    error: str | None = None


class BatchSummary(BaseModel):
    id: str
    created_at: float
    total: int
    refused: int
    counts: dict[str, int]
    finished: int
    progress: float
    input_tokens: int
    output_tokens: int
    cost_usd: Usd
    baseline_cost_usd: Usd
    savings_usd: Usd
    savings_pct: Percent


class BatchStore:
    def __init__(self, settings: Settings, client: redis.Redis, jobs: JobStore) -> None:
        self.settings = settings
        self.redis = client
        self.jobs = jobs
        self.keys = Keyspace.of(settings, client)

    def _key(self, batch_id: str) -> str:
        return self.keys.tagged("batch", batch_id)

    def create(self, items: list[BatchItem], owner: str | None = None) -> str:
        """Store the batch's items under a new id; `owner` is the tenant whose keys (and admins) may read it."""
        batch_id = uuid.uuid4().hex
        ttl = self.settings.job_ttl_seconds
        meta: dict[str, str | float | int] = {"created_at": time.time(), "total": len(items)}
        if owner is not None:
            meta["tenant"] = owner
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(batch_id), mapping=meta)
            pipe.expire(self._key(batch_id), ttl)
            for start in range(0, len(items), 1000):
                pipe.rpush(f"{self._key(batch_id)}:items", *(i.model_dump_json() for i in items[start : start + 1000]))
            pipe.expire(f"{self._key(batch_id)}:items", ttl)
            pipe.execute()
        return batch_id

    def visible(self, batch_id: str, caller: ApiKey | None) -> bool:
        """Whether the batch exists and `caller` may see it; an id of another shape names no batch."""
        if not JOB_ID.fullmatch(batch_id):
            return False
        meta = self.redis.hmget(self._key(batch_id), ["created_at", "tenant"])
        return meta[0] is not None and may_see(caller, meta[1])

    def items(self, batch_id: str) -> list[BatchItem] | None:
        if not self.redis.exists(self._key(batch_id)):
            return None
        return [BatchItem.model_validate_json(raw) for raw in self.redis.lrange(f"{self._key(batch_id)}:items", 0, -1)]

    def records(self, items: list[BatchItem]) -> Iterator[tuple[BatchItem, JobRecord | None]]:
        """Each item with its job record, read 200 at a time; a record that cannot be read counts as expired."""
        for start in range(0, len(items), 200):
            window = items[start : start + 200]
            ids = [item.job_id for item in window if item.job_id]
            records = dict(zip(ids, self.jobs.get_many(ids, unreadable=None), strict=True))
            for item in window:
                yield item, records.get(item.job_id) if item.job_id else None

    def summary(self, batch_id: str) -> BatchSummary | None:
        items = self.items(batch_id)
        if items is None:
            return None
        meta = self.redis.hgetall(self._key(batch_id))
        counts: Counter[str] = Counter()
        input_tokens = output_tokens = 0
        cost = baseline = 0.0
        for item, record in self.records(items):
            if record is None:
                counts["refused" if item.error else "expired"] += 1
                continue
            counts[record.status] += 1
            if record.status == JobStatus.succeeded:
                input_tokens += record.usage.input_tokens if record.usage else 0
                output_tokens += record.usage.output_tokens if record.usage else 0
                cost += record.cost_usd or 0.0
                baseline += record.baseline_cost_usd or 0.0
        finished = sum(counts[s] for s in ("succeeded", "failed", "cancelled", "refused", "expired"))
        return BatchSummary(
            id=batch_id,
            created_at=float(meta["created_at"]),
            total=len(items),
            refused=counts["refused"],
            counts=dict(counts),
            finished=finished,
            progress=round(finished / len(items), 4) if items else 1.0,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            baseline_cost_usd=baseline,
            savings_usd=baseline - cost,
            savings_pct=saved_pct(cost, baseline),
        )


def result_line(item: BatchItem, record: JobRecord | None) -> str:
    """One JSONL line of a batch's results."""
    if record is None:
        return json.dumps({"line": item.line, "status": "refused" if item.error else "expired", "error": item.error})
    return json.dumps(
        {
            "line": item.line,
            "job_id": record.id,
            "status": record.status,
            "result": record.result,
            "stop_reason": record.stop_reason,
            "model": record.model_used,
            "input_tokens": record.usage.input_tokens if record.usage else None,
            "output_tokens": record.usage.output_tokens if record.usage else None,
            "cost_usd": record.cost_usd,
            "baseline_cost_usd": record.baseline_cost_usd,
            "error": record.error,
        }
    )
