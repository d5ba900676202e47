"""What a caller sees when a request cannot be served: a status and a message, never a traceback."""

from __future__ import annotations

import pytest


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "broker": "ok"}


def test_analyze_returns_analysis_and_plan(api):
    response = api.post("/v1/analyze", json={"request": "Refactor the authentication module"})
    assert response.status_code == 200
    body = response.json()
    assert body["analysis"]["intent"] == "write" and body["analysis"]["skill"] == "code"
    assert body["analysis"]["tier"] == "complex" and body["plan"]["model"] == "gpt-4.1"
    assert body["analysis"]["decision"]["quality_target"] == 0.95
    assert body["plan"]["baseline"]["cost_usd"] > body["plan"]["estimated_cost_usd"] > 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "request"),
        ({"request": ""}, "at least 1 character"),
        ({"request": "hi", "options": {"max_cost": -1}}, "greater than 0"),
        ({"request": "hi", "options": {"colour": "red"}}, "Extra inputs are not permitted"),
        ({"request": "hi", "context": "not an object"}, "valid dictionary"),
    ],
)
def test_bad_bodies_are_422_with_the_field(api, body, fragment):
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert fragment in response.text


def test_impossible_constraints_are_422_with_every_reason(api):
    response = api.post("/v1/jobs", json={"request": "hi", "options": {"max_cost": 1e-9}})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith("no model satisfies the constraints")
    assert "exceeds max_cost" in body["rejected"]["gemini-2.0-flash"]


def test_unknown_model_is_422(api):
    response = api.post("/v1/jobs", json={"request": "hi", "options": {"preferred_models": ["gpt-9"]}})
    assert response.status_code == 422 and "unknown model(s) gpt-9" in response.json()["detail"]


def test_unknown_job_is_404(api):
    response = api.get("/v1/jobs/does-not-exist")
    assert response.status_code == 404 and "no job does-not-exist" in response.json()["detail"]


def test_no_provider_key_is_503_naming_the_variables(api, monkeypatch):
    from shared.settings import get_settings

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.usable_providers() == set()
    # the running app holds its settings; a fresh app sees the change
    from fastapi.testclient import TestClient

    from api.app import create_app

    response = TestClient(create_app(settings)).post("/v1/jobs", json={"request": "hi"})
    assert response.status_code == 503
    assert "OPENAI_API_KEY" in response.json()["detail"] and "GEMINI_API_KEY" in response.json()["detail"]
