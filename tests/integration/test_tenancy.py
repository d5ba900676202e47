"""Tenancy against a real server and worker: two tenants never see each other's work, a team's keys share theirs,
an admin key sees everything, the cache never answers across tenants, and every front end reads one key."""

from __future__ import annotations

import time

import anyio
import httpx
import httpx2
import openai
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from shared.documents import DocumentStore
from shared.job_store import JobStore
from shared.settings import get_settings
from tests.integration.conftest import poll
from tests.wire.servers import Reply

QUESTION = "What is a noun?"
DOCUMENT = "The quarterly report of the alpha team.\n" * 40


@pytest.fixture
def tenants(secured, start_worker):
    """Keys: two of tenant alpha, one of tenant beta, one admin; clients for each, and the key store."""
    settings, keys, client = secured
    start_worker()
    made = {
        "alpha": keys.create("alpha-1", tenant="alpha"),
        "alpha2": keys.create("alpha-2", tenant="alpha"),
        "beta": keys.create("beta-1", tenant="beta"),
        "admin": keys.create("ops", admin=True),
    }
    clients = {name: client(secret) for name, (_, secret) in made.items()}
    made |= {"keys": keys, "redis": settings.redis_url}
    yield clients, made, client
    for c in clients.values():
        c.close()


def _alpha_work(alpha: httpx.Client) -> dict[str, str]:
    """A job, a finished job, a document and a batch of tenant alpha."""
    document = alpha.post("/v1/documents", content=DOCUMENT, headers={"content-type": "text/plain"}).json()["id"]
    queued = alpha.post("/v1/jobs", json={"request": QUESTION}).json()["id"]
    finished = poll(alpha, queued)
    assert finished["status"] == "succeeded" and finished["tenant"] == "t.alpha"
    batch = alpha.post("/v1/batches", json={"items": [{"request": QUESTION}, {"request": "Define a verb"}]}).json()
    return {"job": queued, "document": document, "batch": batch["id"]}


def test_another_tenant_gets_404_on_every_route_as_for_an_unknown_id(tenants):
    clients, _, _ = tenants
    alpha, beta = clients["alpha"], clients["beta"]
    work = _alpha_work(alpha)
    unknown, on_document = "0" * 32, {"request": "Summarise", "document_id": work["document"]}
    refused = {
        "get job": beta.get(f"/v1/jobs/{work['job']}"),
        "cancel job": beta.delete(f"/v1/jobs/{work['job']}"),
        "get batch": beta.get(f"/v1/batches/{work['batch']}"),
        "batch results": beta.get(f"/v1/batches/{work['batch']}/results"),
        "cancel batch": beta.delete(f"/v1/batches/{work['batch']}"),
        "get document": beta.get(f"/v1/documents/{work['document']}"),
        "job on the document": beta.post("/v1/jobs", json=on_document),
        "analyse the document": beta.post(
            "/v1/analyze", json={"request": "Summarise", "document_id": work["document"]}
        ),
    }
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 404)
    # exactly as for an id that never existed: nothing tells the two apart
    assert refused["get job"].json()["detail"] == alpha.get(f"/v1/jobs/{unknown}").json()["detail"].replace(
        unknown, work["job"]
    )
    assert "beta" not in str(alpha.get(f"/v1/jobs/{work['job']}").json())
    # the owner's work is untouched by the attempts
    assert alpha.get(f"/v1/jobs/{work['job']}").json()["status"] == "succeeded"
    assert alpha.get(f"/v1/batches/{work['batch']}").json()["counts"].get("cancelled", 0) == 0


def test_same_tenant_keys_share_and_the_admin_key_sees_all(tenants):
    clients, _, _ = tenants
    work = _alpha_work(clients["alpha"])
    for name in ("alpha2", "admin"):
        c = clients[name]
        assert c.get(f"/v1/jobs/{work['job']}").json()["result"], name
        assert c.get(f"/v1/batches/{work['batch']}").json()["total"] == 2, name
        assert len(c.get(f"/v1/batches/{work['batch']}/results").text.splitlines()) == 2, name
        assert c.get(f"/v1/documents/{work['document']}").json()["id"] == work["document"], name


def test_a_document_stored_by_two_tenants_is_stored_once_and_each_sees_its_own_reference(tenants, redis_env):
    clients, _, _ = tenants
    alpha, beta = clients["alpha"], clients["beta"]
    first = alpha.post("/v1/documents", json={"text": DOCUMENT}).json()
    assert beta.get(f"/v1/documents/{first['id']}").status_code == 404
    second = beta.post("/v1/documents", json={"text": DOCUMENT}).json()
    assert second == first and beta.get(f"/v1/documents/{first['id']}").status_code == 200
    documents, id_ = DocumentStore(get_settings()), first["id"]
    stored = set(documents.redis.keys(f"*{id_}*"))
    owners = {documents._reference_key(id_, owner) for owner in ("t.alpha", "t.beta")}
    assert stored == {documents._key(id_), documents._meta_key(id_), *owners}  # one copy of the text


def test_ids_that_are_not_ids_are_404_never_a_store_error(tenants):
    clients, _, _ = tenants
    alpha = clients["alpha"]
    job = alpha.post("/v1/jobs", json={"request": QUESTION}).json()["id"]
    for path in (f"/v1/jobs/{job}:stream", f"/v1/jobs/{job}:done", "/v1/batches/x:items", "/v1/documents/a:meta"):
        response = alpha.get(path)
        assert response.status_code == 404, path
        assert "no " in response.json()["detail"]


def test_the_response_cache_never_answers_across_tenants(tenants):
    clients, _, _ = tenants
    body = {"request": "Define entropy in one sentence"}

    def ask(name: str) -> dict:
        return clients[name].post("/v1/orchestrate", json=body, params={"wait": 20}).json()

    first, other, again, teammate = ask("alpha"), ask("beta"), ask("alpha"), ask("alpha2")
    assert (first["cache_hit"], other["cache_hit"], again["cache_hit"], teammate["cache_hit"]) == (
        False,
        False,
        True,
        True,
    )
    assert other["cost_usd"] > 0  # beta paid for its own answer


def test_metrics_are_per_tenant_and_every_tenants_only_for_an_admin(tenants):
    clients, _, _ = tenants
    for name, count in (("alpha", 2), ("beta", 1)):
        for _ in range(count):
            answer = clients[name].post("/v1/orchestrate", json={"request": QUESTION}, params={"wait": 20}).json()
            assert answer["status"] == "succeeded"
    totals = {name: clients[name].get("/v1/metrics").json()["total_requests"] for name in ("alpha", "alpha2", "beta")}
    assert totals == {"alpha": 2, "alpha2": 2, "beta": 1}
    every = clients["beta"].get("/v1/metrics", params={"scope": "all"})
    assert every.status_code == 403 and "admin key" in every.json()["detail"]
    assert clients["admin"].get("/v1/metrics", params={"scope": "all"}).json()["total_requests"] == 3
    assert clients["beta"].get("/metrics").status_code == 403
    exposition = clients["admin"].get("/metrics")
    assert exposition.status_code == 200 and "orchestrator_requests_total 3.0" in exposition.text


def test_mcp_tools_refuse_another_tenants_jobs(tenants):
    clients, made, _ = tenants
    url = f"{str(clients['alpha'].base_url).rstrip('/')}/mcp"

    async def call(name: str, calls: list[tuple[str, dict]]) -> list:
        async with (
            httpx2.AsyncClient(headers={"authorization": f"Bearer {made[name][1]}"}, timeout=30) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return [await session.call_tool(tool, arguments) for tool, arguments in calls]

    (handle,) = anyio.run(call, "alpha", [("submit_job", {"request": QUESTION})])
    job = handle.structured_content["id"]
    seen, cancelled, metrics = anyio.run(
        call,
        "beta",
        [("get_job", {"job_id": job}), ("cancel_job", {"job_id": job}), ("get_metrics", {"period": "1h"})],
    )
    (shared,) = anyio.run(call, "alpha2", [("get_job", {"job_id": job})])
    assert seen.is_error and seen.content[0].text.endswith(f"no job {job} (unknown or expired)")
    assert cancelled.is_error and f"no job {job}" in cancelled.content[0].text
    assert metrics.structured_content["total_requests"] == 0
    assert shared.structured_content["id"] == job and shared.structured_content["status"] != "cancelled"


def test_two_keys_in_one_request_are_400_on_every_front_end(tenants):
    _, made, client = tenants
    alpha, beta = made["alpha"][1], made["beta"][1]
    with client() as anonymous:
        two_bearers = httpx.Headers([("authorization", "Bearer nothing"), ("authorization", f"Bearer {alpha}")])
        rest = anonymous.post("/v1/jobs", json={"request": QUESTION}, headers=two_bearers)
        chat = anonymous.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": QUESTION}]},
            headers=two_bearers,
        )
        mcp = anonymous.post("/mcp", json={}, headers=two_bearers)
        mixed = anonymous.post(
            "/v1/jobs", json={"request": QUESTION}, headers={"authorization": f"Bearer {alpha}", "x-api-key": beta}
        )
        agreeing = anonymous.post(
            "/v1/jobs", json={"request": QUESTION}, headers={"authorization": f"Bearer {alpha}", "x-api-key": alpha}
        )
    assert (rest.status_code, chat.status_code, mcp.status_code, mixed.status_code) == (400, 400, 400, 400)
    assert "more than one" in rest.json()["detail"] and "different keys" in mixed.json()["detail"]
    assert chat.json()["error"]["code"] == "ambiguous_credentials"  # OpenAI's format on its routes
    assert agreeing.status_code == 202


def test_an_openai_client_bills_and_sees_its_own_tenant(tenants):
    clients, made, _ = tenants
    base = f"{str(clients['alpha'].base_url).rstrip('/')}/v1"
    alpha = openai.OpenAI(base_url=base, api_key=made["alpha"][1])
    reply = alpha.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}]
    )
    job = reply.headers["x-orchestrator-job-id"]
    record = clients["alpha2"].get(f"/v1/jobs/{job}").json()
    assert record["billing"]["api_key_id"] == made["alpha"][0].id and record["tenant"] == "t.alpha"
    assert clients["beta"].get(f"/v1/jobs/{job}").status_code == 404


@pytest.mark.distributed
def test_a_stream_cut_by_a_cancel_is_not_delivered_and_is_billed_at_the_providers_usage(tenants, wire_servers):
    clients, made, _ = tenants
    words = " ".join(f"word{i}" for i in range(80))
    wire_servers["openai"].set_model("gpt-4.1-nano", Reply(text=words, delta_interval_s=0.05))
    body = {"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    # what the same call costs when nobody cancels it (another tenant's: no cache between them)
    whole = clients["beta"].post("/v1/chat/completions", json={**body, "stream": False})
    assert whole.json()["choices"][0]["message"]["content"] == words
    paid = float(whole.headers["x-orchestrator-cost-usd"])
    received = []
    with clients["alpha"].stream("POST", "/v1/chat/completions", json=body) as stream:
        job = stream.headers["x-orchestrator-job-id"]
        for line in stream.iter_lines():
            if '"content": "word' in line:
                received.append(line)
                if len(received) == 10:
                    assert clients["alpha"].delete(f"/v1/jobs/{job}").status_code == 200
    assert 10 <= len(received) < 30  # the rest of the answer never reached the client
    keys, alpha = made["keys"], made["alpha"][0]
    deadline = time.monotonic() + 20
    while any(r.job_id == job for r in keys.unsettled(0)) and time.monotonic() < deadline:
        time.sleep(0.1)  # the worker settles when the provider's call returns
    assert keys.spent(alpha) == pytest.approx(paid, rel=1e-9) and paid > 0
    assert clients["alpha"].get(f"/v1/jobs/{job}").json()["status"] == "cancelled"
    store = JobStore(get_settings())
    assert store.redis.keys("*cache:t.alpha:*") == []  # the cancelled answer was not cached
    assert 0 < store.redis.ttl(store.answers.key(job)) <= 600  # and its stream expires


def test_an_mcp_session_answers_only_the_key_that_opened_it(tenants):
    clients, _, _ = tenants
    accept = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    opening = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    opened = clients["alpha"].post("/mcp", json=opening, headers=accept)
    assert opened.status_code == 200
    session = {**accept, "mcp-session-id": opened.headers["mcp-session-id"]}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert clients["beta"].post("/mcp", json=listing, headers=session).status_code == 404
    assert clients["alpha2"].post("/mcp", json=listing, headers=session).status_code == 404  # a key, not a tenant
    assert clients["alpha"].post("/mcp", json=listing, headers=session).status_code in (200, 202)
