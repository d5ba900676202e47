"""Outcome data: per-prompt scores (and costs) of real models, one JSON line per prompt.

`{"id", "source", "prompt", "scores": {model: 0..1}, "cost_usd": {model: USD}}`, gzipped or not. A prompt's
benchmark is the first two parts of its `source` (`routellm/mmlu/anatomy` -> `routellm/mmlu`). The files the router
ships with are package data, with their notices (`shared/routing/data/NOTICE.md`).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

DATA_PACKAGE = "shared.routing.data"
BUNDLED_DATA = ("routerbench_train.jsonl.gz", "routellm_mmlu.jsonl.gz")


class Outcome(BaseModel):
    """One prompt and how each model did on it."""

    id: str
    source: str
    prompt: str
    scores: dict[str, float]
    cost_usd: dict[str, float] = {}

    @property
    def benchmark(self) -> str:
        return "/".join(self.source.split("/")[:2])


def bundled_data() -> list[Path]:
    """The outcome files in the package."""
    directory = resources.files(DATA_PACKAGE)
    return [Path(str(directory.joinpath(name))) for name in BUNDLED_DATA]


def load_outcomes(paths: Iterable[Path]) -> list[Outcome]:
    """Every outcome line of `paths`; a line that is not one is an error naming the file and line."""
    outcomes = []
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        outcomes.append(Outcome.model_validate_json(line))
                    except ValueError as error:
                        raise ValueError(f"{path}:{number}: not an outcome line: {error}") from None
    return outcomes
