"""Every fenced block of the README and docs/ is run or checked, as a reader would use it.

One `orchestrator serve` runs for the module the way the quick start runs it: no `ORCH_REDIS_URL`, so the embedded
Valkey server and an in-process worker, the product's own catalog, API keys required, and the provider accounts
pointed at local wire-format servers. A block's commands then run as written, in a fresh directory holding the
files they name (`jobs.jsonl`, `contracts/`, `outcomes.jsonl.gz`), with `ORCH_KEY` set to a key of that server and
port 8080 read as the test server's port. `curl` fails on an HTTP error (`--fail-with-body`), and every block runs
under `set -euo pipefail`: a copied example that would fail, fails here.

By language, unless a directive on the line before the fence says otherwise (`<!-- docs-test: KIND ARGS -->`):

- `bash`, `python`: run; exit status 0.
- no language: the output of the block before it, which must contain it (whitespace aside); a block whose first
  line is `$ command` is a transcript, its command run and its remaining lines the output.
- `json`, `yaml`: need a directive naming what reads them.

Directives: `output` (as above), `ci` (the test command, which `.ci/run` must run verbatim), `install` (the
virtualenv and pip steps are this environment's; the rest runs), `settings` (YAML that settings must accept),
`model MODULE.CLASS` (each JSON object a valid instance), `mcp-host` (a host's MCP config whose command runs here),
`covered-by PATH::TEST` (long-running processes, run by that test, which must exist).
"""

from __future__ import annotations

import gzip
import importlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
FENCE = re.compile(
    r"^(?:<!-- docs-test: (?P<directive>[^>]*?) -->\n)?```(?P<language>\w*)\n(?P<body>.*?)^```$", re.M | re.S
)
PORT_IN_TEXT = re.compile(r"\b(localhost|127\.0\.0\.1):8080\b")


@dataclass
class Block:
    path: Path
    line: int
    language: str
    body: str
    directive: str

    @property
    def kind(self) -> str:
        if self.directive:
            return self.directive.split()[0]
        if not self.language:
            return "transcript" if self.body.startswith("$ ") else "output"
        return self.language

    @property
    def argument(self) -> str:
        return self.directive.partition(" ")[2].strip()

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start("language")) + 1
            found.append(Block(path, line, match["language"], match["body"], (match["directive"] or "").strip()))
    return found


BLOCKS = blocks()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Reader:
    """What a block runs with: the directory it runs in, its environment, the port of the test server."""

    directory: Path
    env: dict[str, str]
    port: int
    outputs: dict[str, str]

    def localize(self, text: str) -> str:
        return PORT_IN_TEXT.sub(lambda match: f"{match[1]}:{self.port}", text)


def _fixture_files(directory: Path) -> None:
    """The files the examples name."""
    (directory / "jobs.jsonl").write_text(
        "\n".join(
            json.dumps(body)
            for body in (
                {"request": "Define entropy"},
                {"request": "Translate 'good night' into Spanish"},
                {"request": "Summarise the termination rules", "document": "Either party may terminate on notice."},
            )
        )
        + "\n"
    )
    contracts = directory / "contracts"
    contracts.mkdir()
    (contracts / "lease.txt").write_text(
        "Lease agreement.\n\n12. Termination. Either party may terminate this lease with 60 days' written notice.\n"
    )
    (contracts / "supply.txt").write_text(
        "Supply contract.\n\n9. Termination. The buyer may terminate at once if a delivery is late by 30 days.\n"
    )
    # outcomes in the documented format, for `orchestrator router train`: real prompts and scores of the shipped
    # data, under the names the example uses
    from shared.routing.outcomes import bundled_data, load_outcomes

    strong, cheap = "gpt-4-1106-preview", ("mixtral-8x7b-instruct", "mistralai/mixtral-8x7b-chat")
    rows, taken = [], Counter()
    for outcome in load_outcomes(bundled_data()):
        weak = next((model for model in cheap if model in outcome.scores), None)
        if strong in outcome.scores and weak and taken[outcome.benchmark] < 150:
            taken[outcome.benchmark] += 1
            scores = {"gpt-6-astra": outcome.scores[strong], "gpt-6-luna": outcome.scores[weak]}
            scores["gpt-6.1-sol"] = (scores["gpt-6-astra"] + scores["gpt-6-luna"]) / 2
            rows.append({"id": outcome.id, "source": outcome.source, "prompt": outcome.prompt, "scores": scores})
    with gzip.open(directory / "outcomes.jsonl.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Iterator[Reader]:
    from tests.wire.servers import AnthropicWireServer, GeminiWireServer, OpenAIWireServer

    servers = [OpenAIWireServer(), AnthropicWireServer(), GeminiWireServer()]
    for server in servers:
        server.start()
    openai, anthropic, google = servers
    directory = tmp_path_factory.mktemp("reader")
    _fixture_files(directory)
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith(("ORCH_", "OPENAI_"))}
    env |= {
        "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
        "ORCH_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "ORCH_CONFIG_DIR": str(ROOT / "config"),  # the product's catalog, as the docs show it
        "ORCH_API_PORT": str(port),
        "OPENAI_API_KEY": "sk-docs",
        "OPENAI_BASE_URL": openai.url,
        "ANTHROPIC_API_KEY": "sk-ant-docs",
        "ORCH_PROVIDERS__ANTHROPIC__BASE_URL": anthropic.url,
        "GOOGLE_API_KEY": "g-docs",
        "ORCH_PROVIDERS__GOOGLE__BASE_URL": google.url,
        "COLUMNS": "120",
        "PYTHONPATH": str(ROOT),
    }
    log = directory / "serve.log"
    serve = subprocess.Popen(
        [str(BIN / "orchestrator"), "serve"], cwd=directory, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert serve.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        created = subprocess.run(
            [str(BIN / "orchestrator"), "keys", "create", "--name", "docs"],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        env["ORCH_KEY"] = created.stdout.strip()
        yield Reader(directory, env, port, {})
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        for server in servers:
            server.stop()


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def _run_bash(block: Block, reader: Reader, script: str) -> str:
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body --silent --show-error "$@"; }\n'
    done = subprocess.run(
        ["bash", "-c", prelude + reader.localize(script)],
        cwd=reader.directory,
        env=reader.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{block.name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _installed(script: str) -> str:
    """The command without the steps that make the environment under test: a virtualenv and pip install."""
    steps = [step.strip() for step in script.strip().split("&&")]
    kept = [step for step in steps if not re.match(r"(python3? -m venv|\S*pip install)\b", step)]
    return " && ".join(kept).replace(".venv/bin/", "")


def _previous_output(block: Block, reader: Reader) -> str:
    index = BLOCKS.index(block)
    for earlier in reversed(BLOCKS[:index]):
        if earlier.path == block.path and earlier.name in reader.outputs:
            return reader.outputs[earlier.name]
    raise AssertionError(f"{block.name}: output of no command before it in {block.path.name}")


def check(block: Block, reader: Reader) -> None:
    kind, body = block.kind, block.body
    if kind in ("bash", "install"):
        reader.outputs[block.name] = _run_bash(block, reader, _installed(body) if kind == "install" else body)
    elif kind == "python":
        done = subprocess.run(
            [sys.executable, "-c", reader.localize(body)],
            cwd=reader.directory,
            env=reader.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{block.name}:\n{done.stderr}"
        reader.outputs[block.name] = done.stdout
    elif kind == "output":
        assert _collapsed(body) in _collapsed(_previous_output(block, reader)), block.name
    elif kind == "transcript":
        command, _, expected = body.partition("\n")
        output = _run_bash(block, reader, command[2:])
        assert _collapsed(expected) in _collapsed(output), f"{block.name}:\n{output}"
    elif kind == "ci":
        assert body.strip() in (ROOT / ".ci" / "run").read_text(), f"{block.name}: not what .ci/run runs"
    elif kind == "settings":
        _accepted_by_settings(block, reader)
    elif kind == "model":
        module, _, name = block.argument.rpartition(".")
        model = getattr(importlib.import_module(module), name)
        for document in _json_documents(body):
            assert set(document) <= set(model.model_fields), f"{block.name}: {set(document) - set(model.model_fields)}"
            model.model_validate(document)
    elif kind == "mcp-host":
        for server in json.loads(body)["mcpServers"].values():
            command = [Path(server["command"]).name, *server["args"], "--help"]
            done = subprocess.run(command, env=reader.env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, f"{block.name}: {shlex.join(command)}: {done.stderr}"
    elif kind == "covered-by":
        path, _, test = block.argument.partition("::")
        assert f"def {test}(" in (ROOT / path).read_text(), f"{block.name}: no test {block.argument}"
    else:
        raise AssertionError(f"{block.name}: a {kind or 'plain'} block needs a docs-test directive")


def _json_documents(body: str) -> list[dict]:
    try:
        return [json.loads(body)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in body.splitlines() if line.strip()]


def _accepted_by_settings(block: Block, reader: Reader) -> None:
    """The YAML, added to the product's config, is read by the settings with the values it gives."""
    directory = reader.directory / ("config-" + re.sub(r"\W", "-", block.name))  # one per block, across files
    directory.mkdir()
    (directory / "zz-example.yaml").write_text(block.body)
    env = reader.env | {"ORCH_CONFIG_DIR": os.pathsep.join([str(ROOT / "config"), str(directory)])}
    probe = "from shared.settings import get_settings; s = get_settings(); print(s.model_dump_json())"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{block.name}: settings refused it:\n{done.stderr}"
    settings = json.loads(done.stdout)
    for section, entries in yaml.safe_load(block.body).items():
        for name in entries:
            assert name in settings[section], f"{block.name}: {section}.{name} not read"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_block(block: Block, reader: Reader) -> None:
    check(block, reader)


def test_every_document_has_its_blocks_found():
    """The fence pattern finds every block (a block it missed would go unchecked)."""
    for path in DOCUMENTS:
        fences = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("```"))
        assert fences == 2 * sum(1 for block in BLOCKS if block.path == path), path
