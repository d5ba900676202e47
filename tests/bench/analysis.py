"""Time of analyse + plan per request, on one core, over a varied mix of typical requests.

Run: python tests/bench/analysis.py [--requests N]. Target: median under 200 µs, p99 under 1 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from shared.routing import Constraints, RequestOptions, analyze, plan  # noqa: E402  # noqa: E402
from shared.settings import load_settings  # noqa: E402

OPENERS = [
    "What is",
    "Explain",
    "Summarize",
    "Write",
    "Create",
    "Implement",
    "Refactor",
    "Fix",
    "Find",
    "Search for",
    "Where is",
    "List all",
    "Analyze",
    "Review",
    "Compare",
    "Why does",
    "Deploy",
    "Restart",
    "Configure",
    "Migrate",
    "Translate",
    "Draft",
    "Debug",
    "Audit",
    "Schedule",
]
SUBJECTS = [
    "the authentication module",
    "a REST API for user management",
    "the billing service",
    "our Kafka consumer",
    "the nginx configuration",
    "a Python function that parses ISO dates",
    "the quarterly sales report",
    "the memory leak in the worker pool",
    "all TODO comments in the repository",
    "the database schema",
    "a React component for the settings page",
    "the CI pipeline",
    "the onboarding email",
    "the cache layer",
    "the Kubernetes deployment of the search service",
    "this contract clause",
    "the incident postmortem",
]
CLAUSES = [
    "it must handle concurrent writes",
    "ensure backward compatibility",
    "without downtime",
    "include unit tests",
    "keep latency under 50 ms",
    "support OAuth2 and API keys",
    "then document the changes",
    "it should be idempotent",
    "avoid breaking the public API",
    "and explain the trade-offs",
    "use PostgreSQL transactions",
    "follow the existing code style",
    "after that update the runbook",
]
CONTEXTS = [
    None,
    {"framework": "FastAPI", "database": "PostgreSQL"},
    {"language": "Python", "version": "3.12", "constraints": ["no new dependencies", "typed"]},
    {"service": "billing", "env": "staging", "replicas": 3, "owner": {"team": "payments", "oncall": "ana"}},
]


def make_requests(count: int, seed: int = 7) -> list[tuple[str, dict | None, RequestOptions]]:
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        text = f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)}"
        clauses = rng.choice([0, 0, 1, 2, 3, 5, 8])
        if clauses:
            text += ", " + ", ".join(rng.sample(CLAUSES, clauses)) + "."
        else:
            text += "?" if text.startswith(("What", "Why", "Where")) else "."
        options = RequestOptions(max_cost=0.5) if rng.random() < 0.2 else RequestOptions()
        requests.append((text, rng.choice(CONTEXTS), options))
    return requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    settings = load_settings()
    usable = {"openai", "anthropic", "google"}
    requests = make_requests(args.requests)
    for text, context, options in requests[:200]:  # warm caches and the tokenizer
        plan(analyze(text, context, options, settings), Constraints.from_options(options, usable), settings)

    timings_us = []
    tiers: dict[str, int] = {}
    for text, context, options in requests:
        start = time.perf_counter_ns()
        analysis = analyze(text, context, options, settings)
        plan(analysis, Constraints.from_options(options, usable), settings, options.max_tokens)
        timings_us.append((time.perf_counter_ns() - start) / 1000)
        tiers[analysis.tier] = tiers.get(analysis.tier, 0) + 1

    timings_us.sort()
    pick = lambda q: timings_us[min(len(timings_us) - 1, int(q * len(timings_us)))]  # noqa: E731
    figures = {
        "median_us": round(statistics.median(timings_us), 1),
        "p99_us": round(pick(0.99), 1),
        "requests": len(timings_us),
    }
    table = Table(title="analyse + plan, one core")
    for column in ("requests", "median µs", "p90 µs", "p99 µs", "max µs", "tiers"):
        table.add_column(column, justify="right")
    table.add_row(
        str(len(timings_us)),
        f"{figures['median_us']:.1f}",
        f"{pick(0.9):.1f}",
        f"{figures['p99_us']:.1f}",
        f"{timings_us[-1]:.1f}",
        ", ".join(f"{k} {v}" for k, v in sorted(tiers.items())),
    )
    Console().print(table)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
