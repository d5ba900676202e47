"""The Procfile's processes, started by honcho as an operator would, serve a job end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.conftest import poll

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_honcho_runs_api_workers_and_flower_from_the_procfile(redis_env, provider_env, tmp_path):
    api_port, flower_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "ORCH_API_PORT": str(api_port),
        "PORT": "5000",  # what honcho would hand the first process: the API must not take it
        "FLOWER_PORT": str(flower_port),
        "ORCH_WORKER_CONCURRENCY": "4",
        "FLOWER_UNAUTHENTICATED_API": "true",
        "PATH": "/usr/bin:/bin",  # not activated: `orchestrator start` finds its own commands
    }
    log = tmp_path / "honcho.log"
    honcho = subprocess.Popen(
        [str(Path(sys.executable).parent / "orchestrator"), "start"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/readyz").status_code == 200 and b"ready." in log.read_bytes():
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            job = client.post("/v1/jobs", json={"request": "What is a noun?"}).json()
            record = poll(client, job["id"], timeout=30)
            assert record["status"] == "succeeded", log.read_text()[-3000:]
            assert record["model_used"] == "gemini-2.0-flash"
            # no line per request unless ORCH_API_ACCESS_LOG asks for one
            assert b'"POST /v1/jobs HTTP/1.1" 202' not in log.read_bytes()
        # Flower sees the workers through the same (prefixed) broker
        deadline = time.monotonic() + 30
        while True:
            try:
                workers = httpx.get(
                    f"http://127.0.0.1:{flower_port}/api/workers", params={"refresh": 1}, timeout=5
                ).json()
                if any(name.startswith("llm-") for name in workers) and any(
                    name.startswith("preprocess-") for name in workers
                ):
                    break
            except (httpx.TransportError, ValueError):
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
