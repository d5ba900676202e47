"""What compose.yaml and the Containerfile ask for is what this checkout has: no image can be built here (no Docker
daemon), so the files are held to the code they run instead."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from api.cli import _parser

ROOT = Path(__file__).resolve().parents[2]


def test_every_compose_service_runs_a_command_the_cli_accepts():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "api", "worker-llm", "worker-preprocess", "flower"} <= set(services)
    for name, service in services.items():
        command = service.get("command", [])
        if command[:1] == ["orchestrator"]:
            args = _parser().parse_args(command[1:])
            assert callable(args.handler), name
    build = services["api"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert services["api"]["environment"]["ORCH_REDIS_URL"].startswith("redis://redis:")


def test_compose_runs_the_same_processes_as_the_procfile():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    procfile = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line and not line[0] == "#"
    )
    assert "--queues llm.simple,llm.moderate,llm.complex --pool threads" in procfile["llm"]
    assert " ".join(compose["worker-llm"]["command"]).startswith(
        "orchestrator worker --queues llm.simple,llm.moderate,llm.complex --pool threads"
    )
    assert "--queues preprocess --pool prefork" in procfile["preprocess"]
    assert "--queues preprocess --pool prefork" in " ".join(compose["worker-preprocess"]["command"])


def test_the_image_copies_what_the_package_needs_and_runs_unprivileged():
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    copied = set(re.findall(r"^COPY (?:--from=\S+ )?(\S+)", containerfile, re.M))
    assert {"pyproject.toml", "shared", "api", "workers", "config"} <= copied
    assert re.search(r"^USER (?!root)\w+", containerfile, re.M)
    for data in ("shared/routing/model/difficulty.json", "shared/routing/data/routellm_mmlu.jsonl.gz"):
        assert (ROOT / data).is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"shared.routing.model"' in pyproject and '"shared.routing.data"' in pyproject
