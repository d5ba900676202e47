"""Pointed at a node of a Redis Cluster, which the store does not run on, the API says so instead of "retry
shortly". A real 3-node Valkey cluster (tests/valkey_cluster.py)."""

from __future__ import annotations

import httpx
import pytest
import redis

from shared.settings import get_settings
from tests.valkey_cluster import valkey_cluster


@pytest.fixture
def cluster(tmp_path, provider_env, monkeypatch):
    with valkey_cluster(tmp_path / "cluster") as urls:
        monkeypatch.setenv("ORCH_REDIS_URL", urls[0])
        get_settings.cache_clear()
        yield urls
    get_settings.cache_clear()


def test_the_cluster_fixture_spreads_the_slots_over_three_nodes(cluster):
    client = redis.cluster.RedisCluster.from_url(cluster[0], decode_responses=True)
    owners = {client.get_node_from_key(f"key-{i}").port for i in range(200)}
    assert len(owners) == 3
    client.set("probe", "1")
    assert client.get("probe") == "1"
    client.close()


def test_a_cluster_node_as_the_store_is_a_503_that_says_so(cluster):
    from api.app import create_app

    transport = httpx.ASGITransport(app=create_app(get_settings()))

    async def submit() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post("/v1/jobs", json={"request": f"Define word {i}"}) for i in range(6)]

    import anyio

    responses = anyio.run(submit)
    refused = [r for r in responses if r.status_code == 503]
    assert refused, [r.status_code for r in responses]  # the keys of two of three nodes' slots live elsewhere
    assert all("Redis Cluster" in r.json()["detail"] and "retry shortly" not in r.json()["detail"] for r in refused)
