"""Where each piece of state lives in Redis, so that every script and transaction touches one hash slot.

A Redis Cluster runs a script or a MULTI only on keys of one slot, and puts keys whose names share a `{tag}` in the
same slot. A job's keys (record, wake-up list, answer stream, chunk results) carry the tag of its *shard*, a fixed
hash of its id; so do the metrics buckets and the outbox, one set per shard. A job's finish therefore writes its
record and counts it in the metrics in one step on any deployment, and readers merge the shards' buckets. On one
server there is one shard; on a cluster, `CLUSTER_SHARDS`, spread over its nodes by their slots. A key's budget
(spend and open reservations) shares the key's tag, the breakers share one, and a document's or a batch's keys
their id's.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import redis

from shared.settings import Settings

#: Shards on a Redis Cluster: enough to spread jobs over a few dozen nodes, few enough that a metrics read (one
#: bucket per shard per period step) stays a few hundred keys.
CLUSTER_SHARDS = 16


@dataclass(frozen=True)
class Keyspace:
    prefix: str
    shards: int = 1

    @classmethod
    def of(cls, settings: Settings, client: redis.Redis | redis.RedisCluster) -> Keyspace:
        return cls(settings.redis_prefix, CLUSTER_SHARDS if isinstance(client, redis.RedisCluster) else 1)

    def name(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def shard_of(self, job_id: str) -> int:
        return zlib.crc32(job_id.encode()) % self.shards if self.shards > 1 else 0

    def sharded(self, shard: int, *parts: str) -> str:
        """A key of one shard's: `{shard}` as its hash tag."""
        return self.name(parts[0], f"{{{shard}}}", *parts[1:])

    def job(self, job_id: str, *parts: str) -> str:
        """The job's record (no `parts`), or one of its other keys (`done`, `stream`, `chunks`)."""
        return self.sharded(self.shard_of(job_id), "job", job_id, *parts)

    def every_shard(self, *parts: str) -> list[str]:
        return [self.sharded(shard, *parts) for shard in range(self.shards)]

    def tagged(self, kind: str, tag: str, *parts: str) -> str:
        """A key of the group `tag` names (an API key's budget, a document, a batch): `{tag}` as its hash tag."""
        return self.name(kind, f"{{{tag}}}", *parts)


def tag_of(name: str) -> str:
    """The hash tag of a key named by `Keyspace` (what is between its first braces)."""
    return name[name.index("{") + 1 : name.index("}")]
