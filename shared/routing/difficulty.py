"""Difficulty: the learned chance that a cheap model's answer falls short of the strong model's on a request.

A logistic model over three kinds of evidence, each chosen because it carries from one kind of request to another:

- the skill (math, code, reasoning... see `skills`), as an offset in log-odds;
- the request's structure (quantities, operations, code, conditions; see `features`), with weights held at zero or
  above, so more evidence of work never makes a request look easier, whatever quirk a data set has;
- what its words mean: every o200k token carries a score, the projection of its static embedding (wordllama) on
  the learned direction, and the request gets the mean over its tokens, shrunk towards zero when there are few.

The artifact (`model/difficulty.json` and `model/token_scores.npy`) is written by `orchestrator router train` and
read once per process; the estimate costs a few microseconds: no network, no GPU.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from shared.routing.calibration import Calibration
from shared.routing.features import STRUCTURE_FEATURES
from shared.routing.skills import Skill
from shared.settings import ConfigError

MODEL_PACKAGE = "shared.routing.model"
MODEL_FILE = "difficulty.json"
TOKEN_SCORES_FILE = "token_scores.npy"


class TextWeights(BaseModel):
    weight: float = Field(description="Log-odds per unit of the mean token score.")
    shrink_tokens: float = Field(description="A text of n tokens counts n / (n + shrink_tokens) of its mean score.")
    encoding: str = "o200k_base"


class DifficultyWeights(BaseModel):
    """The learned model as stored: raw-unit weights, so applying it needs no scaling step."""

    intercept: float
    structure: dict[str, float]
    structure_means: dict[str, float] = Field(description="Training means, to explain what pushed a request up.")
    skills: dict[Skill, float] = Field(description="Log-odds offset of each skill.")
    text: TextWeights
    text_mean: float = 0.0


class ModelCard(BaseModel):
    """Everything `difficulty.json` holds: weights, calibration, and what they were trained and measured on."""

    version: int = 1
    weights: DifficultyWeights
    calibration: Calibration
    training: dict[str, Any] = Field(default_factory=dict, description="Data, settings and evaluation figures.")


class Difficulty(BaseModel):
    probability: float = Field(ge=0, le=1, description="Chance that a cheap model falls short of the strong one.")
    evidence: list[str] = Field(description="What raised it most, in words.")


class DifficultyModel:
    """The shipped (or a freshly trained) difficulty model, ready to score requests."""

    def __init__(self, card: ModelCard, token_scores: np.ndarray) -> None:
        self.card = card
        self.weights = card.weights
        self.calibration = card.calibration
        self._token_scores = token_scores
        self._token_list = token_scores.tolist()  # a short text sums faster in Python than through numpy
        self._structure = [(name, card.weights.structure[name]) for name in STRUCTURE_FEATURES]

    @classmethod
    def load(cls, directory: Traversable | Path | None = None) -> DifficultyModel:
        directory = directory or resources.files(MODEL_PACKAGE)
        card = ModelCard.model_validate(json.loads(directory.joinpath(MODEL_FILE).read_text(encoding="utf-8")))
        with directory.joinpath(TOKEN_SCORES_FILE).open("rb") as handle:
            scores = np.load(handle).astype(np.float32)
        return cls(card, scores)

    def text_score(self, token_ids: list[int]) -> float:
        """Mean token score, shrunk towards zero for short texts whose mean says little."""
        if not token_ids:
            return 0.0
        count = len(token_ids)
        if count <= 64:
            scores = self._token_list
            mean = sum([scores[token] for token in token_ids]) / count
        else:
            mean = float(self._token_scores.take(token_ids).mean())
        return mean * count / (count + self.weights.text.shrink_tokens)

    def estimate(self, structure: dict[str, float], skill: Skill, token_ids: list[int]) -> Difficulty:
        weights = self.weights
        contributions: list[tuple[float, str]] = []
        logit = weights.intercept + weights.skills[skill]
        contributions.append((weights.skills[skill], f"skill {skill}"))
        for name, weight in self._structure:
            value = structure[name]
            logit += weight * value
            if weight:
                contributions.append((weight * (value - weights.structure_means[name]), name))
        text = weights.text.weight * self.text_score(token_ids)
        logit += text
        contributions.append((text - weights.text.weight * weights.text_mean, "wording"))
        probability = 1.0 / (1.0 + math.exp(-logit))
        raised = [f"{label} (+{value:.2f})" for value, label in sorted(contributions, reverse=True) if value > 0.05]
        return Difficulty(probability=round(probability, 4), evidence=raised[:4])


@functools.cache
def shipped_model() -> DifficultyModel:
    """The model in the package, loaded once per process."""
    return DifficultyModel.load()


@functools.cache
def model_in(directory: Path | None) -> DifficultyModel:
    """The model written to `directory` by `orchestrator router train --out` (None: the shipped one), loaded once."""
    if directory is None:
        return shipped_model()
    try:
        return DifficultyModel.load(directory.expanduser())
    except (OSError, ValueError) as error:
        raise ConfigError(f"routing.model_dir: no usable difficulty model in {directory}: {error}") from None
