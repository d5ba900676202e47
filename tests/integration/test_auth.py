"""API keys, rate limits and budgets on the real Redis with real workers; provider keys never leak."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from shared.auth import worst_case_cost
from shared.planning import Planner
from shared.requests import JobRequest
from tests.integration.conftest import poll
from tests.wire.servers import Fail

QUESTION = "What is a noun?"


def test_without_with_a_wrong_and_with_a_revoked_key(secured):
    _, keys, client = secured
    api_key, secret = keys.create("team-a")
    missing = client().post("/v1/jobs", json={"request": QUESTION})
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client("orch_not-a-key").post("/v1/jobs", json={"request": QUESTION})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
    assert client(secret).post("/v1/jobs", json={"request": QUESTION}).status_code == 202
    assert keys.revoke(api_key.id)
    revoked = client(secret).post("/v1/jobs", json={"request": QUESTION})
    assert revoked.status_code == 403 and "revoked" in revoked.json()["detail"]
    assert client().get("/healthz").status_code == 200  # health stays open
    assert client().post("/mcp", json={}).status_code == 401  # so does nothing else


def test_rate_limit_per_key(secured):
    _, keys, client = secured
    _, secret = keys.create("chatty", rate_per_minute=3)
    with client(secret) as c:
        codes = [c.post("/v1/analyze", json={"request": QUESTION}).status_code for _ in range(4)]
        limited = c.post("/v1/analyze", json={"request": QUESTION})
    assert codes == [200, 200, 200, 429]
    assert "rate limit of 3 requests per minute" in limited.json()["detail"]
    assert 1 <= int(limited.headers["retry-after"]) <= 61


@pytest.mark.distributed
def test_concurrent_requests_never_overspend_a_budget(secured, start_worker):
    settings, keys, client = secured
    reservation = worst_case_cost(Planner(settings).propose(JobRequest(request=QUESTION)).plan, settings)
    api_key, secret = keys.create("budgeted", budget_usd=10.5 * reservation)

    def post(i: int) -> httpx.Response:
        with client(secret) as c:
            return c.post("/v1/jobs", json={"request": QUESTION, "options": {"cache": False}})

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(post, range(50)))
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 429]
    # ten at the full worst case; the half reservation left may take one more with its answer capped to fit
    assert len(accepted) in (10, 11) and len(accepted) + len(refused) == 50
    assert "cannot cover this request" in refused[0].json()["detail"]
    with client(secret) as c:
        reserved = [c.get(f"/v1/jobs/{job_id}").json()["billing"]["reserved_usd"] for job_id in accepted]
    assert sum(reserved) <= api_key.budget_usd
    assert sum(amount < 0.9 * reservation for amount in reserved) == len(accepted) - 10

    # the worker starts after the burst: a job settled during it would free part of its reservation for another
    start_worker()
    with client(secret) as c:
        records = [poll(c, job_id) for job_id in accepted]
    assert all(r["status"] == "succeeded" for r in records)
    actual = sum(r["cost_usd"] for r in records)
    assert keys.spent(api_key) == pytest.approx(actual)  # reservations settled to what the jobs really cost
    assert actual <= api_key.budget_usd


def test_a_budget_exhausted_mid_batch_stops_further_spending(secured):
    settings, keys, client = secured
    reservation = worst_case_cost(Planner(settings).propose(JobRequest(request=QUESTION)).plan, settings)
    _, secret = keys.create("batcher", budget_usd=5.5 * reservation)
    with client(secret) as c:
        body = c.post("/v1/batches", json={"items": [{"request": QUESTION}] * 30}).json()
    assert body["accepted"] == 6  # five at the full worst case, the sixth capped to the half reservation left
    assert [item["line"] for item in body["refused"]] == list(range(7, 31))
    assert all("budget" in item["error"] for item in body["refused"])


def test_openai_clients_authenticate_with_the_key(secured, start_worker):
    _, keys, client = secured
    start_worker()
    _, secret = keys.create("sdk")
    base = str(client().base_url).rstrip("/") + "/v1"
    answer = openai.OpenAI(base_url=base, api_key=secret, max_retries=0).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}]
    )
    assert answer.choices[0].message.content.startswith("[gemini-2.0-flash]")
    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=base, api_key="orch_wrong", max_retries=0).models.list()
    assert refused.value.code == "invalid_api_key" and refused.value.body["message"] == "invalid API key"
    assert client().get("/v1/jobs/unknown").json()["detail"].startswith("missing API key")  # elsewhere, FastAPI's


def test_provider_keys_appear_in_no_response_and_no_log(secured, start_worker, wire_servers, provider_env, tmp_path):
    _, keys, client = secured
    worker = start_worker()
    _, secret = keys.create("auditor")
    provider_keys = [provider_env["OPENAI_API_KEY"], provider_env["ANTHROPIC_API_KEY"], provider_env["GOOGLE_API_KEY"]]
    # a provider that echoes the rejected key in its error message
    wire_servers["google"].push(Fail(400, f"API key {provider_env['GOOGLE_API_KEY']} is not valid"))
    seen = []
    with client(secret) as c:
        failed = poll(c, c.post("/v1/jobs", json={"request": QUESTION}).json()["id"])
        ok = poll(c, c.post("/v1/jobs", json={"request": "Define entropy"}).json()["id"])
        assert failed["status"] == "failed" and "is not valid" in failed["error"]
        assert ok["status"] == "succeeded"
        for path in (
            "/v1/jobs/" + failed["id"],
            "/v1/jobs/" + ok["id"],
            "/v1/metrics?period=5m",
            "/v1/health/providers",
            "/openapi.json",
            "/v1/models",
            "/metrics",
        ):
            seen.append(c.get(path).text)
        seen.append(c.post("/v1/analyze", json={"request": QUESTION}).text)
    seen.append(worker.output())
    seen.append(worker.log.read_text(errors="replace"))
    for text in seen:
        for provider_key in provider_keys:
            assert provider_key not in text


def test_mcp_over_http_runs_on_the_callers_key_and_budget(secured, start_worker):
    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    settings, keys, client = secured
    start_worker()
    reservation = worst_case_cost(Planner(settings).propose(JobRequest(request=QUESTION)).plan, settings)
    roomy, roomy_secret = keys.create("ide", budget_usd=100 * reservation)
    _, tight_secret = keys.create("tight", budget_usd=reservation / 1000)  # not even a short answer fits
    url = str(client().base_url).rstrip("/") + "/mcp"

    async def orchestrate(secret: str):
        async with (
            httpx2.AsyncClient(headers={"authorization": f"Bearer {secret}"}, timeout=30) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await session.call_tool("orchestrate", {"request": QUESTION, "options": {"cache": False}})

    served = anyio.run(orchestrate, roomy_secret)
    refused = anyio.run(orchestrate, tight_secret)
    assert not served.is_error and served.structured_content["status"] == "succeeded"
    assert keys.spent(roomy) == pytest.approx(served.structured_content["cost_usd"])
    assert refused.is_error and "cannot cover this request" in refused.content[0].text
