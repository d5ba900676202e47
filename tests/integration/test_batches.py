"""Batches through real workers and Redis: counts, ordered results, bad lines, dry runs, and a resumed CLI run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from shared.planning import Planner
from shared.requests import JobRequest
from shared.settings import get_settings
from tests.wire.servers import Reply

ROOT = Path(__file__).resolve().parents[2]


def wait_for_batch(api, batch_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (summary := api.get(f"/v1/batches/{batch_id}").json())["progress"] < 1:
        assert time.monotonic() < deadline, json.dumps(summary)
        time.sleep(0.2)
    return summary


@pytest.mark.distributed
def test_a_500_item_batch_completes_with_correct_counts_and_ordered_results(api, start_worker):
    start_worker(concurrency=32)
    items = [{"request": f"What is the capital of country number {i}?"} for i in range(500)]
    items[17] = {"request": ""}  # invalid: refused with its line number, the rest run
    items[42] = {"request": "hi", "options": {"preferred_models": ["gpt-9"]}}
    items[99]["options"] = {"max_tokens": 3}  # its answer is cut, and its line says so
    accepted = api.post("/v1/batches", json={"items": items})
    assert accepted.status_code == 202
    body = accepted.json()
    assert (body["total"], body["accepted"]) == (500, 498)
    assert [
        (item["line"], "gpt-9" in item["error"] or "at least 1 character" in item["error"]) for item in body["refused"]
    ] == [(18, True), (43, True)]

    summary = wait_for_batch(api, body["id"])
    assert summary["counts"] == {"succeeded": 498, "refused": 2}
    assert summary["finished"] == 500 and summary["progress"] == 1
    assert summary["cost_usd"] > 0 and summary["savings_usd"] > 0.9 * summary["baseline_cost_usd"]

    lines = [json.loads(line) for line in api.get(f"/v1/batches/{body['id']}/results").text.splitlines()]
    assert [line["line"] for line in lines] == list(range(1, 501))
    assert lines[17]["status"] == "refused"
    for number in (1, 250, 500):
        assert lines[number - 1]["result"].endswith(f"country number {number - 1}?")
    assert [lines[i]["stop_reason"] for i in (0, 99, 499)] == ["stop", "length", "stop"]
    assert sum(line.get("cost_usd") or 0 for line in lines) == pytest.approx(summary["cost_usd"])


def test_jsonl_upload_with_bad_lines_and_cancel(api):
    upload = '{"request": "Define entropy"}\nnot json\n\n[1, 2]\n{"request": "Define enthalpy"}\n'
    accepted = api.post("/v1/batches", content=upload, headers={"content-type": "application/x-ndjson"}).json()
    assert accepted["accepted"] == 2
    assert [(r["line"], r["error"].split(":")[0]) for r in accepted["refused"]] == [
        (2, "not JSON"),
        (4, "each line must be a JSON object"),
    ]
    cancelled = api.delete(f"/v1/batches/{accepted['id']}").json()  # no worker runs: both still queued
    assert cancelled["counts"] == {"cancelled": 2, "refused": 2}
    assert api.get("/v1/batches/nope").status_code == 404


def test_dry_run_projection_equals_the_sum_of_the_item_plans(api):
    requests = [
        "What is 2+2?",
        "Create a REST API for user management",
        "Analyze our churn drivers",
        "Restart the nginx service on staging",
    ]
    response = api.post(
        "/v1/batches",
        params={"dry_run": True},
        json={"items": [{"request": text} for text in requests] + [{"request": ""}]},
    )
    assert response.status_code == 200
    plan = response.json()
    assert (plan["planned"], plan["refused"]) == (4, 1)
    settings = get_settings()
    plans = [Planner(settings).propose(JobRequest(request=text)).plan for text in requests]
    assert plan["cost_usd"] == pytest.approx(sum(p.estimated_cost_usd for p in plans))
    assert plan["baseline_cost_usd"] == pytest.approx(sum(p.baseline.cost_usd for p in plans))
    assert plan["tokens"] == sum(p.estimated_input_tokens + p.estimated_output_tokens for p in plans)
    assert [item["model"] for item in plan["items"][:4]] == [p.model for p in plans]
    assert redis.Redis.from_url(settings.redis_url).keys("orch:job:*") == []  # nothing ran


def test_an_interrupted_cli_batch_resumes_without_redoing_finished_items(
    redis_env, provider_env, start_worker, wire_servers, tmp_path
):
    start_worker(concurrency=2)
    wire_servers["google"].set_model("gemini-2.0-flash", Reply(delay_s=0.25))
    source = tmp_path / "jobs.jsonl"
    source.write_text("".join(json.dumps({"request": f"Define term number {i}"}) + "\n" for i in range(24)))
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "api.cli", "batch", str(source), "--output", str(output)]

    first = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not output.exists() or len(output.read_text().splitlines()) < 4:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    first.wait(timeout=30)
    finished_before = len(output.read_text().splitlines())
    assert 4 <= finished_before < 24

    second = subprocess.run(command, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["key"] for row in rows) == sorted(f"line {i}" for i in range(1, 25))
    assert all(row["status"] == "succeeded" for row in rows)
    assert f"skipped {finished_before}" in second.stdout
    jobs = [k for k in redis.Redis.from_url(redis_env).keys("orch:job:*") if k.count(b":") == 3]
    assert len(jobs) == 24  # every item submitted exactly once across both runs
    assert not output.with_name("out.jsonl.pending").exists()


def test_cli_dry_run_of_a_folder(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Revenue grew 12% in Q3.")
    (folder / "b.txt").write_text("Costs fell 3% in Q3.")
    (folder / "c.bin").write_bytes(b"\x00\x01binary")
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "batch", str(folder), "--request", "Summarize", "--dry-run", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["planned"], plan["refused"]) == (2, 1)
    assert "binary, not text" in plan["items"][2]["error"]
