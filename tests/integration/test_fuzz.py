"""A fuzzing run of the OpenAPI schema with a valid key: whatever schemathesis sends, no 5xx and no response
outside the schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from shared.settings import get_settings


def test_no_server_error_and_no_schema_violation(redis_env, provider_env, start_worker, monkeypatch):
    from api.app import create_app
    from shared.auth import KeyStore
    from shared.store import redis_client

    monkeypatch.setenv("ORCH_AUTH__ENABLED", "true")
    get_settings.cache_clear()
    app_settings = get_settings()
    _, secret = KeyStore(app_settings, redis_client(app_settings)).create("fuzzer", tenant="fuzz")
    key = {"authorization": f"Bearer {secret}"}
    start_worker()
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(app_settings))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    calls: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            response = case.call_and_validate(headers=key, checks=[not_a_server_error, response_schema_conformance])
            calls.append(response.status_code)

        fuzz()
    assert len(calls) >= 10 * len(operations)
    assert not [code for code in calls if code >= 500]
    assert 401 not in calls  # every call carried the key
