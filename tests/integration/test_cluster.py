"""The store on a real 3-node Valkey cluster (tests/valkey_cluster.py): found to be one from the server alone, every
script on one slot, jobs spread over the nodes, and the shards' metrics merged on read. The whole path through
RabbitMQ and worker processes runs in the `distributed` tests with ORCH_TEST_CLUSTER (see .ci/run)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest
import redis
from redis.cluster import key_slot

from shared.auth import KeyStore
from shared.breaker import CircuitBreakers, Gate
from shared.job_store import JobStore
from shared.jobs import JobInput, JobRecord, JobStatus, new_job_id
from shared.keyspace import CLUSTER_SHARDS
from shared.metrics import RequestOutcome, read_metrics, read_totals, recording
from shared.outbox import TaskMessage
from shared.planning import Planner
from shared.requests import JobRequest
from shared.settings import get_settings
from shared.store import redis_client
from tests.integration.test_cli import orchestrator
from tests.valkey_cluster import valkey_cluster

#: A broker of its own, which these tests never reach: they send no message.
UNUSED_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with valkey_cluster(tmp_path_factory.mktemp("cluster")) as urls:
        yield urls


@pytest.fixture
def settings(cluster, monkeypatch):
    monkeypatch.setenv("ORCH_REDIS_URL", cluster[0])
    monkeypatch.setenv("ORCH_BROKER_URL", UNUSED_BROKER)
    get_settings.cache_clear()
    yield get_settings()
    with redis.RedisCluster.from_url(cluster[0]) as client:
        client.flushdb(target_nodes=redis.RedisCluster.PRIMARIES)
    get_settings.cache_clear()


@dataclass
class Published:
    """A broker that takes every message (the reduce step of a map/reduce below)."""

    message: TaskMessage
    sent: list[TaskMessage] = field(default_factory=list)

    def into(self, pipeline: object) -> bool:
        return False

    def publish(self) -> None:
        self.sent.append(self.message)


def queued(store: JobStore, tenant: str | None = None) -> JobRecord:
    proposal = Planner(store.settings).propose(JobRequest(request="Define the word noun"))
    record = JobRecord(
        id=new_job_id(),
        status=JobStatus.queued,
        queue="llm.simple",
        created_at=time.time(),
        input=JobInput(request="Define the word noun"),
        tenant=tenant,
        **proposal.model_dump(),
    )
    store.create(record)
    return record


def test_a_cluster_is_found_from_the_server_and_its_keys_share_a_slot_per_job(settings):
    client = redis_client(settings)
    store = JobStore(settings)
    assert isinstance(client, redis.RedisCluster) and store.keys.shards == CLUSTER_SHARDS
    nodes = set()
    for _ in range(60):
        job_id = new_job_id()
        shard = store.keys.shard_of(job_id)
        message = TaskMessage(task="t", args=[], queue="q", task_id=job_id)
        metrics, _ = recording(store.keys, RequestOutcome(succeeded=True, tenant="t.team"), shard)
        names = [store.keys.job(job_id, part) for part in ("done", "stream", "chunks")]
        names += [store.keys.job(job_id), store.outbox.key(message), *metrics]
        assert len({key_slot(name.encode()) for name in names}) == 1, names
        nodes.add(client.get_node_from_key(store.keys.job(job_id)).port)
    assert len(nodes) == 3  # jobs spread over every node


def test_jobs_live_finish_and_are_counted_on_the_cluster(settings):
    store = JobStore(settings)
    records = [queued(store, tenant="t.team" if n % 2 else None) for n in range(40)]
    for record in records:
        claimed = store.claim(record.id, record.queue, status=JobStatus.running, started_at=time.time())
        assert claimed.status == JobStatus.running and claimed.deliveries == 1
        outcome = RequestOutcome(
            job_id=record.id, tenant=record.tenant, succeeded=True, model="gpt-4.1-nano", cost_usd=0.001
        )
        finished = {"status": JobStatus.succeeded, "result": "a word", "finished_at": time.time()}
        assert store.finish(record.id, outcome, record=claimed, **finished) == JobStatus.running
        assert store.finish(record.id, outcome, record=claimed, **finished) is None  # once
    again = store.get_many([record.id for record in records])
    assert [r.result for r in again] == ["a word"] * 40
    assert store.wait(records[0].id, 1).status == JobStatus.succeeded  # its wake-up token is there
    everyone = read_metrics(settings, store.redis, "1h")
    team = read_metrics(settings, store.redis, "1h", tenant="t.team")
    assert (everyone.total_requests, team.total_requests) == (40, 20)
    assert everyone.total_cost_usd == pytest.approx(0.04) and everyone.model_distribution == {"gpt-4.1-nano": 40}
    assert read_totals(settings, store.redis)["requests"] == 40
    cancelled = queued(store)
    assert store.cancel(cancelled, "changed my mind") == JobStatus.queued
    assert store.get(cancelled.id).error == "changed my mind"


def test_a_map_reduce_sends_its_reduce_once_from_the_last_chunk(settings):
    store = JobStore(settings)
    record = queued(store)
    assert store.update(record.id, status=JobStatus.preprocessing)
    reduce = Published(TaskMessage(task="reduce", args=[], queue="preprocess", task_id=record.id))
    done = [store.chunk_done(record.id, record.id, index, 3, json.dumps({"i": index}), reduce) for index in (2, 0)]
    assert done == [1, 2] and reduce.sent == []
    assert store.chunk_done(record.id, record.id, 0, 3, "again", reduce) == 2  # a chunk run twice counts once
    assert store.chunk_done(record.id, record.id, 1, 3, json.dumps({"i": 1}), reduce) == 3
    assert reduce.sent == [reduce.message] and store.outbox.due(0) == []  # published, its outbox entry dropped
    assert [json.loads(result)["i"] for result in store.chunk_results(record.id)] == [0, 1, 2]
    assert store.get(record.id).chunks_done == 3
    store.drop_chunk_results(record.id)  # reduced: the job moves on to its model
    assert store.update(record.id, status=JobStatus.queued, stage="queued for the model")
    assert store.chunk_done(record.id, record.id, 0, 3, "late", reduce) == -1  # a late chunk reopens nothing
    assert store.get(record.id).stage == "queued for the model" and len(reduce.sent) == 1


def test_budgets_and_breakers_on_the_cluster(settings):
    client = redis_client(settings)
    keys = KeyStore(settings, client)
    spenders = [keys.create(f"key {n}", budget_usd=1.0)[0] for n in range(6)]  # their budgets on several nodes
    for n, api_key in enumerate(spenders):
        keys.reserve(api_key, 0.5, f"job-{n}")
    assert sorted(r.job_id for r in keys.unsettled(0)) == [f"job-{n}" for n in range(6)]
    for n, api_key in enumerate(spenders):
        assert keys.settle(keys.spend_key(api_key), f"job-{n}", 0.5, 0.2)
    assert keys.unsettled(0) == [] and [keys.spent(k) for k in spenders] == pytest.approx([0.2] * 6)

    breakers = CircuitBreakers(settings, client)
    for _ in range(settings.resilience.breaker_failure_threshold):
        breakers.failure("gpt-4o")
    assert breakers.acquire("gpt-4o") is Gate.open
    assert {s.model: s.state for s in breakers.states()}["gpt-4o"] == "open"


def test_a_cluster_as_the_broker_too_is_refused_with_what_to_set(cluster, tmp_path):
    done = orchestrator("metrics", env={"ORCH_REDIS_URL": cluster[0], "ORCH_DATA_DIR": str(tmp_path)})
    message = " ".join(done.stderr.split())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is a node of a Redis Cluster" in message and "set ORCH_BROKER_URL" in message
