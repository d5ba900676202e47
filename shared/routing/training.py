"""Training: the difficulty model and its calibration, learned from per-prompt outcomes of real models.

The label of a prompt (`outcomes`) is whether the cheap reference model scored below the strong one; benchmarks weigh
equally, so the largest does not decide alone.

Generalisation is the point, since the router meets requests unlike any benchmark:

- structure weights are held at zero or above (more evidence of work never lowers difficulty);
- skill offsets are pulled towards stated priors rather than towards zero, so a skill the data barely covers keeps
  what is known of it (cheap models trail on math, code, reasoning and extraction, not on conversation or rewriting)
  until data says otherwise;
- the text direction is strongly regularised, and learned on static embeddings, so words the data never used still
  score by what they mean;
- a benchmark whose strong model scores below `min_strong_score` is dropped: a strong model below chance is a grading
  failure, not a difficulty;
- calibration uses scores from models that never saw the benchmark being scored (leave one benchmark out).

Nothing is random: the same files give the same artifact.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from shared.routing.difficulty import (
    MODEL_FILE,
    TOKEN_SCORES_FILE,
    DifficultyWeights,
    ModelCard,
    TextWeights,
)
from shared.routing.evaluation import gap_curve
from shared.routing.features import STRUCTURE_FEATURES, focus, structure
from shared.routing.intent import WORD
from shared.routing.mixes import TierScores, calibrate
from shared.routing.outcomes import Outcome, bundled_data, load_outcomes
from shared.routing.skills import Skill, read_skill
from shared.tokens import DEFAULT_ENCODING, encode, encoding

_REFERENCE_SKILL = Skill.factual
_SKILLS = list(Skill)


class TrainingConfig(BaseModel):
    """What to learn from: which model is strong, which cheap, which stand for each tier; and how hard to pull."""

    strong: str = "gpt-4-1106-preview"
    cheap: list[str] = Field(
        ["mistralai/mixtral-8x7b-chat", "mixtral-8x7b-instruct"],
        description="The cheap reference model, by each name it has in the data; the first present in a row counts.",
    )
    stand_ins: dict[str, list[str] | float] = Field(
        {"simple": ["mistralai/mixtral-8x7b-chat", "mixtral-8x7b-instruct"], "moderate": 0.5},
        description="Per tier, cheapest first: the models in the data that stand for it, or the share of the gap "
        "between the tier below and the strong model it is assumed to close.",
    )
    tier_costs: dict[str, float] = Field(
        {"simple": 0.03, "moderate": 0.25},
        description="What each tier costs per request as a share of the strong model, for finding the cheapest mix: "
        "about what the small and mid models of one provider cost against its flagship.",
    )
    robust: bool = Field(True, description="Keep each quality target on every benchmark, not only on average.")
    skill_priors: dict[Skill, float] = Field(
        {
            Skill.math: 0.5,
            Skill.code: 0.5,
            Skill.reasoning: 0.5,
            Skill.extraction: 0.5,
            Skill.factual: 0.0,
            Skill.explanation: -1.0,
            Skill.writing: -0.5,
            Skill.transform: -1.0,
            Skill.conversation: -1.5,
        },
        description="Log-odds of each skill against a factual question, before the data is heard.",
    )
    structure_l2: float = 1e-3
    skill_l2: float = 1e-3
    text_l2: float = 1.0
    shrink_tokens: float = 8.0
    min_strong_score: float = 0.3


@dataclass
class Dataset:
    """Outcomes turned into what the model reads, one row per usable prompt."""

    outcomes: list[Outcome]
    structure: np.ndarray  # (n, len(STRUCTURE_FEATURES))
    skills: np.ndarray  # (n, len(Skill)) one-hot
    text: np.ndarray  # (n, embedding dims): shrunk mean token vector
    label: np.ndarray  # 1.0 where the cheap reference fell short of the strong model
    benchmark: np.ndarray
    dropped: dict[str, str]

    def __len__(self) -> int:
        return len(self.outcomes)

    def scores(self, names: list[str]) -> np.ndarray:
        """Per row, the mean score of whichever of `names` the row has (NaN when none)."""
        return np.array([_mean_of(outcome.scores, names) for outcome in self.outcomes])

    def costs(self, names: list[str]) -> np.ndarray:
        return np.array([_mean_of(outcome.cost_usd, names) for outcome in self.outcomes])


@dataclass
class Fitted:
    """A fitted model: its stored weights and token scores, and the text direction that scores dataset rows."""

    weights: DifficultyWeights
    token_scores: np.ndarray
    direction: np.ndarray  # token vector -> text score (before the weight)

    def predict(self, data: Dataset, rows: np.ndarray) -> np.ndarray:
        w = self.weights
        structure_weights = np.array([w.structure[name] for name in STRUCTURE_FEATURES])
        skill_weights = np.array([w.skills[skill] for skill in _SKILLS])
        logit = w.intercept + data.structure[rows] @ structure_weights + data.skills[rows] @ skill_weights
        logit += w.text.weight * (data.text[rows] @ self.direction)
        return 1.0 / (1.0 + np.exp(-logit))


@dataclass
class Trained:
    card: ModelCard
    token_scores: np.ndarray
    report: dict[str, object]


@functools.cache
def token_vectors() -> np.ndarray:
    """A static embedding for every o200k token: wordllama's mean vector over the token's text (once a process)."""
    import wordllama
    from wordllama import WordLlama

    model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    enc = encoding(DEFAULT_ENCODING)
    texts = []
    for token in range(enc.n_vocab):
        try:
            texts.append(enc.decode_single_token_bytes(token).decode("utf-8", "replace"))
        except KeyError:
            texts.append("")
    vectors = np.zeros((enc.n_vocab, model.embedding.shape[1]), dtype=np.float32)
    for token, encoded in enumerate(model.tokenizer.encode_batch(texts, add_special_tokens=False)):
        if encoded.ids:
            vectors[token] = model.embedding[encoded.ids].mean(axis=0)
    return vectors


def featurize(outcomes: list[Outcome], config: TrainingConfig, vectors: np.ndarray) -> Dataset:
    dropped: dict[str, str] = {}
    usable = [o for o in outcomes if config.strong in o.scores and any(name in o.scores for name in config.cheap)]
    by_source: dict[str, list[float]] = {}
    for outcome in usable:
        by_source.setdefault(outcome.source, []).append(outcome.scores[config.strong])
    for source, values in by_source.items():
        if np.mean(values) < config.min_strong_score:
            dropped[source] = f"{config.strong} scores {np.mean(values):.2f}, below {config.min_strong_score}"
    usable = [o for o in usable if o.source not in dropped]
    if not usable:
        raise ValueError(f"no outcome has scores for both {config.strong} and one of {', '.join(config.cheap)}")

    rows_structure, rows_skill, rows_text, labels = [], [], [], []
    for outcome in usable:
        text = focus(outcome.prompt)
        words = WORD.findall(text.lower())
        shape = structure(text, words)
        values = shape.features
        rows_structure.append([values[name] for name in STRUCTURE_FEATURES])
        skill = read_skill(text, words, shape).skill
        rows_skill.append([float(skill == s) for s in _SKILLS])
        tokens = encode(text)
        shrink = len(tokens) / (len(tokens) + config.shrink_tokens)
        rows_text.append(vectors[tokens].mean(axis=0) * shrink if tokens else np.zeros(vectors.shape[1]))
        cheap = next(outcome.scores[name] for name in config.cheap if name in outcome.scores)
        labels.append(float(cheap < outcome.scores[config.strong]))
    return Dataset(
        outcomes=usable,
        structure=np.array(rows_structure),
        skills=np.array(rows_skill),
        text=np.array(rows_text, dtype=np.float64),
        label=np.array(labels),
        benchmark=np.array([o.benchmark for o in usable]),
        dropped=dropped,
    )


def fit(data: Dataset, rows: np.ndarray, config: TrainingConfig, vectors: np.ndarray) -> Fitted:
    """Penalised logistic regression, benchmarks weighted equally, structure weights bounded at zero."""
    from scipy.optimize import minimize

    structure_x, skills_x, text_x, label = data.structure[rows], data.skills[rows], data.text[rows], data.label[rows]
    weight = _balanced_weights(data.benchmark[rows])
    s_mean, s_scale = structure_x.mean(axis=0), structure_x.std(axis=0) + 1e-9
    t_mean, t_scale = text_x.mean(axis=0), text_x.std(axis=0) + 1e-9
    structure_z = (structure_x - s_mean) / s_scale
    text_z = (text_x - t_mean) / t_scale
    learned = [index for index, skill in enumerate(_SKILLS) if skill != _REFERENCE_SKILL]
    skills_z = skills_x[:, learned]
    prior = np.array([config.skill_priors[_SKILLS[index]] for index in learned])
    n_s, n_k = structure_z.shape[1], len(learned)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        b, ws, wk, wt = params[0], params[1 : 1 + n_s], params[1 + n_s : 1 + n_s + n_k], params[1 + n_s + n_k :]
        logit = b + structure_z @ ws + skills_z @ wk + text_z @ wt
        value = np.sum(weight * (np.logaddexp(0.0, logit) - label * logit))
        value += config.structure_l2 * ws @ ws + config.skill_l2 * (wk - prior) @ (wk - prior)
        value += config.text_l2 * wt @ wt
        residual = weight * (1.0 / (1.0 + np.exp(-logit)) - label)
        gradient = np.concatenate(
            [
                [residual.sum()],
                structure_z.T @ residual + 2 * config.structure_l2 * ws,
                skills_z.T @ residual + 2 * config.skill_l2 * (wk - prior),
                text_z.T @ residual + 2 * config.text_l2 * wt,
            ]
        )
        return value, gradient

    start = np.concatenate([[0.0], np.zeros(n_s), prior, np.zeros(text_z.shape[1])])
    bounds = [(None, None)] + [(0.0, None)] * n_s + [(None, None)] * (n_k + text_z.shape[1])
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 5000})
    b, ws, wk, wt = (
        result.x[0],
        result.x[1 : 1 + n_s],
        result.x[1 + n_s : 1 + n_s + n_k],
        result.x[1 + n_s + n_k :],
    )

    # Back to raw units: structure weights per raw value, the text direction as one score per token.
    raw_structure = ws / s_scale
    direction = wt / t_scale
    text_values = text_x @ direction
    spread = float(text_values.std()) or 1.0
    intercept = b - raw_structure @ s_mean - direction @ t_mean
    skill_offsets = dict.fromkeys(_SKILLS, 0.0)
    for index, value in zip(learned, wk, strict=True):
        skill_offsets[_SKILLS[index]] = float(value)
    weights = DifficultyWeights(
        intercept=float(intercept),
        structure={name: float(value) for name, value in zip(STRUCTURE_FEATURES, raw_structure, strict=True)},
        structure_means={name: float(value) for name, value in zip(STRUCTURE_FEATURES, s_mean, strict=True)},
        skills=skill_offsets,
        text=TextWeights(weight=spread, shrink_tokens=config.shrink_tokens),
        text_mean=float(text_values.mean() / spread),
    )
    unit = direction / spread
    return Fitted(weights=weights, token_scores=(vectors @ unit).astype(np.float32), direction=unit)


def held_out_predictions(data: Dataset, rows: np.ndarray, config: TrainingConfig, vectors: np.ndarray) -> np.ndarray:
    """Each row of `rows` scored by a model fitted without the row's benchmark (NaN elsewhere)."""
    predictions = np.full(len(data), np.nan)
    for benchmark in sorted(set(data.benchmark[rows])):
        held_out = rows & (data.benchmark == benchmark)
        predictions[held_out] = fit(data, rows & ~held_out, config, vectors).predict(data, held_out)
    return predictions


def tier_outcomes(data: Dataset, difficulty: np.ndarray, config: TrainingConfig) -> TierScores:
    """The product's tiers on the data: each tier's scores from its stand-ins, its price from `tier_costs`."""
    strong = data.scores([config.strong])
    tiers: dict[str, np.ndarray] = {}
    below = None
    for tier, spec in config.stand_ins.items():
        if isinstance(spec, float):
            if below is None:
                raise ValueError(f"tier {tier}: a share of the gap needs a cheaper tier with stand-in models first")
            tiers[tier] = below + spec * (strong - below)
        else:
            tiers[tier] = data.scores(spec)
        below = tiers[tier]
    usable = ~np.isnan(strong) & ~np.isnan(difficulty)
    for values in tiers.values():
        usable &= ~np.isnan(values)
    count = int(usable.sum())
    return TierScores(
        difficulty=difficulty[usable],
        benchmark=data.benchmark[usable],
        strong=strong[usable],
        strong_cost=np.ones(count),
        tiers={tier: values[usable] for tier, values in tiers.items()},
        tier_costs={tier: np.full(count, config.tier_costs[tier]) for tier in tiers},
    )


def gap_recovered(data: Dataset, difficulty: np.ndarray, config: TrainingConfig) -> dict[str, dict[str, float]]:
    """APGR, CPT(50%) and CPT(80%) of `difficulty` on each benchmark, for the strong / cheap reference pair."""
    strong, cheap = data.scores([config.strong]), data.scores(config.cheap)
    figures = {}
    for benchmark in sorted(set(data.benchmark)):
        rows = (data.benchmark == benchmark) & ~np.isnan(difficulty)
        curve = gap_curve(difficulty[rows], strong[rows], cheap[rows])
        figures[benchmark] = {"apgr": curve.apgr, "cpt50": curve.cpt(0.5), "cpt80": curve.cpt(0.8)}
    return figures


def train(config: TrainingConfig, paths: list[Path] | None = None, evaluate: bool = True) -> Trained:
    """Fit on every outcome; calibrate on leave-one-benchmark-out scores; report how those scores route."""
    paths = paths or bundled_data()
    vectors = token_vectors()
    data = featurize(load_outcomes(paths), config, vectors)
    benchmarks = sorted(set(data.benchmark))
    if len(benchmarks) < 2:
        raise ValueError(
            "calibration scores each benchmark with a model fitted on the others, so the data needs prompts of at "
            f"least two benchmarks (the first two parts of `source`); it has {', '.join(benchmarks) or 'none'}"
        )
    everything = np.ones(len(data), dtype=bool)
    fitted = fit(data, everything, config, vectors)
    held_out = held_out_predictions(data, everything, config, vectors)
    calibration = calibrate(
        tier_outcomes(data, held_out, config), config.strong, _describe_stand_ins(config), config.robust
    )
    report: dict[str, object] = {
        "data": {path.name: _sha256(path) for path in paths},
        "outcomes": len(data),
        "benchmarks": {b: int(np.sum(data.benchmark == b)) for b in sorted(set(data.benchmark))},
        "dropped_sources": data.dropped,
    }
    if evaluate:
        report["leave_one_benchmark_out"] = gap_recovered(data, held_out, config)
    card = ModelCard(
        weights=fitted.weights, calibration=calibration, training={**report, "config": config.model_dump()}
    )
    return Trained(card=card, token_scores=fitted.token_scores, report=report)


def write_model(trained: Trained, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_text(trained.card.model_dump_json(indent=1) + "\n", encoding="utf-8")
    with (directory / TOKEN_SCORES_FILE).open("wb") as handle:
        np.save(handle, trained.token_scores.astype(np.float16))


def _describe_stand_ins(config: TrainingConfig) -> dict[str, str]:
    described, below = {}, ""
    for tier, spec in config.stand_ins.items():
        if isinstance(spec, float):
            described[tier] = f"{spec:.0%} of the way from {below} to {config.strong}"
        else:
            described[tier] = ", ".join(spec)
        below = tier
    return described


def _balanced_weights(benchmarks: np.ndarray) -> np.ndarray:
    """Each benchmark's rows share an equal part of a total weight of 1."""
    names, inverse, counts = np.unique(benchmarks, return_inverse=True, return_counts=True)
    return 1.0 / (len(names) * counts[inverse])


def _mean_of(values: dict[str, float], names: list[str]) -> float:
    present = [values[name] for name in names if name in values]
    return float(np.mean(present)) if present else float("nan")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
