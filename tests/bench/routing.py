"""How well the router spends money: the learned difficulty on benchmarks it never saw.

1. Leave one benchmark out (train on the others, score the left-out one), for the strong/weak pair
   gpt-4-1106-preview vs Mixtral-8x7B: APGR, CPT(50%), CPT(80%), beside random routing and the previous release's
   lexical complexity score.
2. Over RouterBench's 11 models with their real per-prompt costs, each RouterBench benchmark left out in turn: the
   router as shipped (Mixtral-8x7B below the difficulty threshold that the other benchmarks, MMLU included, call for
   at the target; gpt-4-1106-preview above it) and, for contrast, the cheapest single model or pair of the ten
   chosen on the other two RouterBench benchmarks. Quality kept and cost saved against always asking
   gpt-4-1106-preview at targets 0.90 / 0.95 / 0.99, beside the oracle (per prompt, the cheapest of the 11 models
   that scores what the strong one scores).
3. The cost-quality curve, as a PNG (`--png`, default routing-curve.png).
4. Time of `analyze` per request.

Run: python tests/bench/routing.py  (needs `pip install -e '.[bench]'` for the plot). Last line: the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from shared.routing.analysis import analyze  # noqa: E402
from shared.routing.evaluation import gap_curve, oracle_choice, quality_and_cost  # noqa: E402
from shared.routing.intent import WORD, classify_intent, intent_scores  # noqa: E402
from shared.routing.mixes import OrderedScores, TierScores, calibrate, cheapest_mix  # noqa: E402
from shared.routing.outcomes import bundled_data, load_outcomes  # noqa: E402
from shared.routing.plan import Constraints, plan  # noqa: E402
from shared.routing.training import (  # noqa: E402
    Dataset,
    TrainingConfig,
    featurize,
    fit,
    held_out_predictions,
    tier_outcomes,
    token_vectors,
)
from shared.settings import load_settings  # noqa: E402
from shared.tokens import count_tokens  # noqa: E402

TARGETS = (0.90, 0.95, 0.99)
CURVE_TARGETS = tuple(round(0.80 + 0.01 * step, 2) for step in range(21))
ROUTERBENCH = ("routerbench/arc-challenge", "routerbench/mbpp", "routerbench/winogrande")


def previous_lexical_score(text: str) -> float:
    """The complexity score of the previous release: cue words and structure, weighted by hand."""
    depth = set(
        "architecture distributed concurrency scalable security authentication encryption consistency transaction "
        "idempotent algorithm optimize complexity proof formal invariant migration microservices fault tolerant "
        "replication sharding kubernetes production compliance latency throughput pipeline tradeoffs strategy "
        "refactor legacy protocol async parallel streaming cache resilience".split()
    )
    constraint = set(
        "must should ensure without including include support handle avoid only exactly require required "
        "never always within under least most constraint constraints".split()
    )
    steps = set("then after afterwards finally next also additionally first second third step steps".split())
    languages = set("api rest endpoint crud schema database python javascript java sql bash json yaml".split())
    head = text[:4000].lower()
    words = WORD.findall(head)
    word_set = set(words)
    base = {"read": 0.0, "search": 0.05, "manage": 0.15, "write": 0.2, "analyze": 0.25}
    intent = classify_intent(intent_scores(words))
    tokens = count_tokens(text)

    def saturate(value: float, half: float) -> float:
        return value / (value + half) if value > 0 else 0.0

    code = len(re.findall(r"```|\bdef |\bclass |\bimport |=>|\(\)|\w+\(\w*\)", head)) + len(word_set & languages)
    size = saturate(math.log1p(tokens) - math.log1p(12), 2.0) if tokens > 12 else 0.0
    simple_question = bool(words) and words[0] in {"what", "who", "when", "where", "define", "how"} and tokens <= 20
    score = (
        base[intent]
        + 0.20 * size
        + 0.30 * saturate(len(word_set & depth), 2)
        + 0.20 * saturate(sum(w in constraint for w in words), 3)
        + 0.10 * saturate(sum(w in steps for w in words), 2)
        + 0.15 * saturate(code, 1.5)
        - 0.15 * simple_question
    )
    return min(1.0, max(0.0, score))


def pair_figures(data: Dataset, scores: np.ndarray, config: TrainingConfig) -> dict[str, dict[str, float]]:
    strong, weak = data.scores([config.strong]), data.scores(config.cheap)
    figures = {}
    for benchmark in sorted(set(data.benchmark)):
        rows = data.benchmark == benchmark
        curve = gap_curve(scores[rows], strong[rows], weak[rows])
        figures[benchmark] = {"apgr": curve.apgr, "cpt50": curve.cpt(0.5), "cpt80": curve.cpt(0.8)}
    return figures


class ModelPanel:
    """RouterBench's 11 models on the rows that have them all: scores, costs, and the strong model's column."""

    def __init__(self, data: Dataset, strong: str) -> None:
        self.rows = np.array([b in ROUTERBENCH for b in data.benchmark])
        outcomes = [o for o, keep in zip(data.outcomes, self.rows, strict=True) if keep]
        self.models = sorted(outcomes[0].scores)
        self.scores = np.array([[o.scores[m] for m in self.models] for o in outcomes])
        self.costs = np.array([[o.cost_usd[m] for m in self.models] for o in outcomes])
        self.benchmark = data.benchmark[self.rows]
        self.strong = self.models.index(strong)

    def outcomes(self, rows: np.ndarray, difficulty: np.ndarray, tiers: tuple[int, ...]) -> TierScores:
        return TierScores(
            difficulty=difficulty[rows],
            benchmark=self.benchmark[rows],
            strong=self.scores[rows, self.strong],
            strong_cost=self.costs[rows, self.strong],
            tiers={self.models[t]: self.scores[rows, t] for t in tiers},
            tier_costs={self.models[t]: self.costs[rows, t] for t in tiers},
        )


def route(difficulty: np.ndarray, tiers: tuple[int, ...], thresholds: list[float], strong: int) -> np.ndarray:
    chosen = np.full(len(difficulty), strong)
    for tier, threshold in reversed(list(zip(tiers, thresholds, strict=True))):
        chosen = np.where(difficulty <= threshold, tier, chosen)
    return chosen


def left_out_difficulty(data, vectors, config, benchmark: str) -> np.ndarray:
    """Every row scored by a model that saw neither its own benchmark nor `benchmark`."""
    left_out = data.benchmark == benchmark
    training = ~left_out
    difficulty = held_out_predictions(data, training, config, vectors)
    difficulty[left_out] = fit(data, training, config, vectors).predict(data, left_out)
    return difficulty


def router_results(data, config, panel, difficulties, targets):
    """The router as shipped, one cheaper tier: Mixtral-8x7B (the cheap reference) below the threshold the other
    benchmarks call for at each target, gpt-4-1106-preview above it."""
    single = config.model_copy(update={"stand_ins": {"simple": config.cheap}})
    cheap = panel.models.index(config.cheap[0])
    results: dict[str, dict[float, tuple[float, float, float, str]]] = {}
    for benchmark, difficulty in difficulties.items():
        calibration_difficulty = np.where(data.benchmark == benchmark, np.nan, difficulty)
        calibration = calibrate(tier_outcomes(data, calibration_difficulty, single), config.strong, {}, config.robust)
        rows = panel.benchmark == benchmark
        held = difficulty[panel.rows][rows]
        results[benchmark] = {}
        for target in targets:
            threshold = calibration.row(target).thresholds["simple"]
            chosen = route(held, (cheap,), [threshold], panel.strong)
            kept, saved = quality_and_cost(chosen, panel.scores[rows], panel.costs[rows], panel.strong)
            results[benchmark][target] = (kept, saved, float(np.mean(chosen == panel.strong)), "Mixtral-8x7B")
    return results


def pair_results(panel, difficulties, targets, robust):
    """For contrast: per left-out benchmark, the cheapest single model or pair among the ten that keeps the target
    on the other two RouterBench benchmarks, applied to the left-out one."""
    results: dict[str, dict[float, tuple[float, float, float, str]]] = {}
    cheap = [m for m in range(len(panel.models)) if m != panel.strong]
    for benchmark, difficulty in difficulties.items():
        panel_difficulty = difficulty[panel.rows]
        training, rows = panel.benchmark != benchmark, panel.benchmark == benchmark
        cost = panel.costs[training].mean(axis=0)
        options = [(m,) for m in cheap] + [tuple(sorted(p, key=lambda m: cost[m])) for p in combinations(cheap, 2)]
        results[benchmark] = {}
        for target in targets:
            best = ((), [], 1.0)
            for tiers in options:
                ordered = OrderedScores.of(panel.outcomes(training, panel_difficulty, tiers))
                bounds = cheapest_mix(ordered, target, robust, grid=120)
                if (spent := ordered.spent(bounds)) < best[2] - 1e-9:
                    best = (tiers, ordered.thresholds_of(bounds), spent)
            tiers, thresholds, _ = best
            chosen = route(panel_difficulty[rows], tiers, thresholds, panel.strong)
            kept, saved = quality_and_cost(chosen, panel.scores[rows], panel.costs[rows], panel.strong)
            mix = " + ".join(panel.models[t].split("/")[-1] for t in tiers) or "strong only"
            results[benchmark][target] = (kept, saved, float(np.mean(chosen == panel.strong)), mix)
    return results


def pooled(results, target: float) -> tuple[float, float]:
    """Quality kept and cost saved over the three left-out benchmarks, each weighing the same."""
    kept = np.mean([results[b][target][0] for b in ROUTERBENCH])
    saved = np.mean([results[b][target][1] for b in ROUTERBENCH])
    return float(kept), float(saved)


def analysis_timing(count: int) -> float:
    """Median µs of analyse + plan over the typical request mix of tests/bench/analysis.py."""
    from tests.bench.analysis import make_requests

    settings = load_settings()
    usable = {"openai", "anthropic", "google"}
    requests = make_requests(count)
    for text, context, options in requests[:200]:
        plan(analyze(text, context, options, settings), Constraints.from_options(options, usable), settings)
    timings = []
    for text, context, options in requests:
        start = time.perf_counter_ns()
        analysis = analyze(text, context, options, settings)
        plan(analysis, Constraints.from_options(options, usable), settings, options.max_tokens)
        timings.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(timings)


def draw(results, oracle, singles, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5))
    saved = [np.mean([results[b][t][1] for b in ROUTERBENCH]) for t in CURVE_TARGETS]
    kept = [np.mean([results[b][t][0] for b in ROUTERBENCH]) for t in CURVE_TARGETS]
    axis.plot(saved, kept, "o-", label="router, targets 0.80-1.00 (left-out benchmarks)")
    for target in TARGETS:
        index = CURVE_TARGETS.index(target)
        offset = (6, -12 + 10 * TARGETS.index(target))
        axis.annotate(f"{target:.2f}", (saved[index], kept[index]), textcoords="offset points", xytext=offset)
    axis.plot([oracle[1]], [oracle[0]], "*", markersize=14, label="oracle")
    mixtral = singles["mistralai/mixtral-8x7b-chat"]
    axis.plot([0, mixtral[1]], [1, mixtral[0]], "--", color="grey", label="Mixtral and GPT-4 mixed at random")
    for name, (quality, saving) in singles.items():
        axis.plot([saving], [quality], "x", color="grey")
        axis.annotate(name.split("/")[-1], (saving, quality), fontsize=7, color="grey")
    axis.set_xlabel("cost saved against always gpt-4-1106-preview")
    axis.set_ylabel("quality kept (share of gpt-4-1106-preview's)")
    axis.set_title("Cost and quality on RouterBench benchmarks the router never saw")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=120)


def results_table(title: str, results, oracle=None) -> Table:
    table = Table(title=title)
    table.add_column("left out", justify="left")
    for target in TARGETS:
        table.add_column(f"target {target:.2f}", justify="right")
    if oracle:
        table.add_column("oracle", justify="right")
    for index, benchmark in enumerate(ROUTERBENCH):
        cells = []
        for target in TARGETS:
            kept, saved, strong_share, mix = results[benchmark][target]
            cells.append(f"{kept:.3f} / {saved:.1%}\n{mix}, strong {strong_share:.0%}")
        extra = [f"{oracle[index][0]:.3f} / {oracle[index][1]:.1%}"] if oracle else []
        table.add_row(benchmark.split("/")[-1], *cells, *extra)
    means = [pooled(results, t) for t in TARGETS]
    extra = []
    if oracle:
        extra = [f"{np.mean([o[0] for o in oracle]):.3f} / {np.mean([o[1] for o in oracle]):.1%}"]
    table.add_row("mean", *(f"{kept:.3f} / {saved:.1%}" for kept, saved in means), *extra)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--png", type=Path, default=Path("routing-curve.png"))
    parser.add_argument("--timing-requests", type=int, default=5000)
    args = parser.parse_args()
    console = Console(width=150)
    config = TrainingConfig()

    console.print("featurizing the outcome data...")
    vectors = token_vectors()
    data = featurize(load_outcomes(bundled_data()), config, vectors)
    everything = np.ones(len(data), dtype=bool)

    learned = pair_figures(data, held_out_predictions(data, everything, config, vectors), config)
    lexical = pair_figures(data, np.array([previous_lexical_score(o.prompt) for o in data.outcomes]), config)
    table = Table(title="leave one benchmark out: gpt-4-1106-preview vs Mixtral-8x7B")
    for column in ("benchmark", "prompts", "APGR", "CPT(50%)", "CPT(80%)", "previous score APGR", "random APGR"):
        table.add_column(column, justify="right")
    for benchmark, figures in learned.items():
        table.add_row(
            benchmark,
            str(int(np.sum(data.benchmark == benchmark))),
            f"{figures['apgr']:.3f}",
            f"{figures['cpt50']:.1%}",
            f"{figures['cpt80']:.1%}",
            f"{lexical[benchmark]['apgr']:.3f}",
            "0.500",
        )
    mean = {key: float(np.mean([f[key] for f in learned.values()])) for key in ("apgr", "cpt50", "cpt80")}
    previous = float(np.mean([f["apgr"] for f in lexical.values()]))
    table.add_row(
        "mean",
        str(len(data)),
        f"{mean['apgr']:.3f}",
        f"{mean['cpt50']:.1%}",
        f"{mean['cpt80']:.1%}",
        f"{previous:.3f}",
        "0.500",
    )
    console.print(table)

    panel = ModelPanel(data, config.strong)
    console.print("cost and quality over RouterBench's 11 models, each RouterBench benchmark left out in turn...")
    difficulties = {b: left_out_difficulty(data, vectors, config, b) for b in ROUTERBENCH}
    results = router_results(data, config, panel, difficulties, CURVE_TARGETS)
    contrast = pair_results(panel, difficulties, TARGETS, config.robust)
    cost_order = list(np.argsort(panel.costs.mean(axis=0)))
    oracle = []
    for benchmark in ROUTERBENCH:
        rows = panel.benchmark == benchmark
        chosen = oracle_choice(panel.scores[rows], cost_order, panel.strong)
        oracle.append(quality_and_cost(chosen, panel.scores[rows], panel.costs[rows], panel.strong))
    singles = {}
    for index, model in enumerate(panel.models):
        per = []
        for benchmark in ROUTERBENCH:
            rows = panel.benchmark == benchmark
            chosen = np.full(int(rows.sum()), index)
            per.append(quality_and_cost(chosen, panel.scores[rows], panel.costs[rows], panel.strong))
        singles[model] = (float(np.mean([p[0] for p in per])), float(np.mean([p[1] for p in per])))
    console.print(
        results_table(
            "the router: quality kept / cost saved against always gpt-4-1106-preview, on the left-out benchmark",
            results,
            oracle,
        )
    )
    console.print(
        results_table("for contrast: the cheapest model or pair of the ten, chosen on the other benchmarks", contrast)
    )
    try:
        draw(results, (np.mean([o[0] for o in oracle]), np.mean([o[1] for o in oracle])), singles, args.png)
        console.print(f"curve written to {args.png}")
    except ImportError:
        console.print("matplotlib is not installed (pip install -e '.[bench]'): no curve drawn")

    median_us = analysis_timing(args.timing_requests)
    console.print(f"analyse + plan: median {median_us:.1f} µs over the request mix of tests/bench/analysis.py")
    kept_095, saved_095 = pooled(results, 0.95)
    print(
        json.dumps(
            {
                "apgr_lobo": round(mean["apgr"], 4),
                "cpt50_lobo": round(mean["cpt50"], 4),
                "cpt80_lobo": round(mean["cpt80"], 4),
                "cost_saved_at_095": round(saved_095, 4),
                "quality_at_095": round(kept_095, 4),
                "quality_at_095_worst_benchmark": round(min(results[b][0.95][0] for b in ROUTERBENCH), 4),
                "analysis_median_us": round(median_us, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
