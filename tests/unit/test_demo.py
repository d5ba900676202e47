import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.demo import demo_requests, demo_rows, totals
from shared.pricing import TokenUsage
from shared.prompts import NAIVE_SYSTEM_PROMPT, naive_user_prompt
from shared.settings import load_settings
from shared.tokens import count_tokens

ROOT = Path(__file__).resolve().parents[2]


def test_demo_figures_come_from_catalog_prices_and_real_token_counts(monkeypatch):
    monkeypatch.setenv("ORCH_CONFIG_DIR", str(ROOT / "config"))  # the product's catalog, as the demo shows it
    settings = load_settings()
    rows = demo_rows(settings)
    kinds = {row.intent for row in rows}
    assert {"read", "write", "search", "analyze", "manage"} <= kinds and len(rows) >= 7
    for (_, body), row in zip(demo_requests(), rows, strict=True):
        naive = count_tokens(NAIVE_SYSTEM_PROMPT) + count_tokens(naive_user_prompt(body.request, body.context))
        naive += count_tokens(body.document or "")
        output = row.without_tokens - naive
        usage = TokenUsage(input_tokens=naive, output_tokens=output)
        assert row.without_cost_usd == pytest.approx(settings.catalog.cost(settings.baseline_model, usage))
        usage = TokenUsage(input_tokens=row.with_tokens - output, output_tokens=output)
        assert row.with_cost_usd == pytest.approx(settings.catalog.cost(row.with_model, usage))
        assert row.with_model in settings.models
    total = totals(rows)
    assert total["without_cost_usd"] == pytest.approx(sum(r.without_cost_usd for r in rows), abs=1e-6)
    assert total["savings_pct"] > 90 and total["tokens_saved_pct"] > 50


def test_demo_runs_with_no_key_and_no_redis():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "ORCH_REDIS_URL"}
    env["ORCH_CONFIG_DIR"] = str(ROOT / "config")
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "WITHOUT orchestrator:" in done.stdout and "WITH orchestrator:" in done.stdout
    assert "Savings:" in done.stdout and "document" in done.stdout
