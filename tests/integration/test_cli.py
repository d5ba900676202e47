"""The `orchestrator` command as a user runs it: a real process, the embedded Valkey, the in-process worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def orchestrator(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "ORCH_REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_in_embedded_mode_goes_through_queue_worker_and_provider(provider_env, wire_servers, tmp_path):
    done = orchestrator("run", "What is a noun?", "--json", env={"ORCH_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "succeeded"
    assert record["model_used"] == "gemini-2.0-flash"
    assert record["result"] == "[gemini-2.0-flash] What is a noun?"
    assert record["cost_usd"] > 0 and record["savings_pct"] > 90
    assert "embedded Redis at redis://127.0.0.1:" in done.stderr
    assert (tmp_path / "valkey" / "appendonly.aof").exists() or (tmp_path / "valkey" / "appendonlydir").exists()
    assert len(wire_servers["google"].requests) == 1


def test_run_without_a_key_prints_the_plan_and_names_the_variables(tmp_path):
    done = orchestrator("run", "Restart the nginx service on staging", env={"ORCH_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert "manage" in done.stdout and "gpt-4o-mini" in done.stdout and "baseline" in done.stdout
    message = " ".join(done.stderr.split())
    assert "No provider key is configured" in message
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "OPENAI_BASE_URL"):
        assert variable in message


def test_analyze_json_and_jsonl(tmp_path):
    done = orchestrator("analyze", "--json", "Find all occurrences of TODO in the repository")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["intent"], out["tier"], out["model"]) == ("search", "moderate", "gpt-4o-mini")
    assert out["skill"] == "factual" and out["quality_target"] == 0.95 and "moderate" in out["tier_reason"]
    assert out["baseline_cost_usd"] > out["estimated_cost_usd"] > 0
    assert out["analysis"]["features"]["words"] > 0 and out["analysis"]["tokens"]["request"] == 8

    lines = tmp_path / "requests.jsonl"
    lines.write_text(
        '{"request": "What is a noun?"}\n'
        "not json\n"
        '{"request": "Deploy the app", "options": {"preferred_models": ["gpt-4o"]}}\n'
    )
    done = orchestrator("analyze", "--jsonl", str(lines))
    assert done.returncode == 1  # one bad line
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["line"] for row in rows] == [1, 2, 3]
    assert rows[0]["intent"] == "read" and rows[0]["tier"] == "simple"
    assert "Invalid JSON" in rows[1]["error"]
    assert rows[2]["model"] == "gpt-4o" and rows[2]["intent"] == "manage"
    for row in (rows[0], rows[2]):
        assert {"intent", "tier", "model", "estimated_cost_usd", "baseline_cost_usd"} <= row.keys()


def test_bad_config_is_a_clear_error(tmp_path):
    (tmp_path / "models.yaml").write_text("models: [1, 2]\n")
    done = orchestrator("analyze", "hi", env={"ORCH_CONFIG_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert "configuration error" in done.stderr and "models.yaml: models" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_dead_redis_is_a_message_naming_it_not_a_traceback(provider_env, tmp_path):
    dead = f"redis://:hunter2@127.0.0.1:{_free_port()}/0"
    for command in (["run", "What is a noun?"], ["keys", "list"], ["metrics"]):
        done = orchestrator(*command, env={"ORCH_REDIS_URL": dead, "ORCH_DATA_DIR": str(tmp_path)})
        assert done.returncode == 3, (command, done.stderr)
        assert "Traceback" not in done.stderr
        message = " ".join(done.stderr.split())
        assert "store unavailable: cannot reach Redis at redis://:***@127.0.0.1:" in message, message
        assert "hunter2" not in done.stderr and "unset ORCH_REDIS_URL" in message


def test_analyze_json_into_a_closed_pipe_ends_quietly(tmp_path):
    lines = tmp_path / "many.jsonl"
    lines.write_text("".join(json.dumps({"request": f"What is {n} squared?"}) + "\n" for n in range(400)))
    command = f"{sys.executable} -m api.cli analyze --jsonl {lines} --json | head -n 1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["line"] == 1
    assert done.stderr == ""


def test_keys_of_a_tenant_and_an_admin_key(redis_env, tmp_path):
    env = {"ORCH_REDIS_URL": redis_env, "ORCH_DATA_DIR": str(tmp_path)}
    bad = orchestrator("keys", "create", "--name", "x", "--tenant", "two words", env=env)
    assert bad.returncode == 2 and "a tenant name is 1-64 letters" in bad.stderr
    made = [
        orchestrator("keys", "create", "--name", name, *extra, env=env)
        for name, extra in (("ci", ["--tenant", "alpha"]), ("ops", ["--admin"]))
    ]
    assert [done.returncode for done in made] == [0, 0]
    assert all(done.stdout.strip().startswith("orch_") for done in made)
    table = orchestrator("keys", "list", env=env | {"COLUMNS": "200"}).stdout.splitlines()
    rows = {line.split()[1]: line for line in table if len(line.split()) > 3 and line.split()[0] != "id"}
    assert rows["ci"].split()[2] == "alpha" and "(admin)" in rows["ops"]
