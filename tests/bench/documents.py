"""Million-token documents: chunking speed against the best chunking libraries, the extractive preprocessing chord
with one and two preprocess worker processes, a worker's peak memory, and needle retention.

The corpus is the Python standard library's own source, concatenated until it holds at least 1,000,000 tokens,
with 20 distinct facts ("needles") planted at random places. Each needle is then asked for, and the extractive
result under a 20,000-token budget must keep the passage that holds it.

Run: python tests/bench/documents.py   (the library comparison needs `pip install -e '.[bench]'`)
Targets: chunking 1M tokens under 2 s and at least as fast as the fastest library; extractive preprocessing of
1M tokens to a 100K budget under 20 s; retention at least 18 of 20.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from support import ROOT, bench_redis, stop

NEEDLE_SUBJECTS = [
    "amber lighthouse",
    "cobalt observatory",
    "crimson archive",
    "silver greenhouse",
    "jade foundry",
    "violet harbour",
    "copper monastery",
    "ivory aqueduct",
    "scarlet windmill",
    "onyx planetarium",
    "teal granary",
    "golden viaduct",
    "indigo citadel",
    "coral boathouse",
    "ochre lantern works",
    "bronze apiary",
    "pearl funicular",
    "slate bell tower",
    "maroon telegraph office",
    "azure salt mine",
]


def build_corpus(min_tokens: int, seed: int = 2024) -> tuple[str, list[tuple[str, str]]]:
    from api.demo import standard_library_source

    parts = standard_library_source(min_tokens)
    rng = random.Random(seed)
    needles = []
    for subject in NEEDLE_SUBJECTS:
        code = f"{rng.randint(100, 999)}-{rng.choice(['KESTREL', 'MARLIN', 'QUARTZ', 'ZEPHYR', 'TUNDRA'])}"
        needle = f"The access code of the {subject} is {code}."
        parts.insert(rng.randrange(len(parts)), f"\n\n{needle}\n\n")
        needles.append((subject, needle))
    return "\n\n".join(parts), needles


def best_of(repeat: int, action) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def start_workers(count: int, env: dict[str, str], log_dir: Path) -> list[subprocess.Popen]:
    workers = []
    for index in range(count):
        log = log_dir / f"preprocess-{count}-{index}.log"
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "api.cli",
                    "worker",
                    "--queues",
                    "preprocess",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    "1",
                    "--loglevel",
                    "WARNING",
                ],
                cwd=ROOT,
                env=env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    return workers


def wait_ready(workers: list[subprocess.Popen], app, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        if len(replies) >= len(workers):
            return
    raise TimeoutError("preprocess workers did not start")


def peak_rss_mb(workers: list[subprocess.Popen]) -> float:
    """Highest VmHWM of the worker processes and their pool children."""
    peak = 0
    for worker in workers:
        pids = [worker.pid]
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
        if children.exists():
            pids += [int(pid) for pid in children.read_text().split()]
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except FileNotFoundError:
                pass
    return peak / 1024


def main() -> None:
    from shared.chunking import chunk_text
    from shared.tokens import count_tokens
    from tests.bench.chunking_libraries import time_chunkers

    console = Console()
    corpus, needles = build_corpus(1_000_000)
    corpus_tokens = count_tokens(corpus)
    console.print(f"corpus: {corpus_tokens:,} tokens, {len(corpus.encode()):,} bytes")

    chunk_s = best_of(3, lambda: chunk_text(corpus, chunk_size=10_000, overlap=200))
    libraries = time_chunkers(corpus, 10_000, repeat=3, overlap=200)
    fastest = min(libraries.values()) if libraries else float("nan")

    with bench_redis() as url:
        env = {**os.environ, "ORCH_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
        os.environ.update({"ORCH_REDIS_URL": url})
        from shared.compression import Preprocessing, Strategy, summary_key
        from shared.documents import DocumentStore
        from shared.settings import get_settings
        from workers.celery_app import PREPROCESS_QUEUE, PREPROCESS_TASK, app, celery_config

        get_settings.cache_clear()
        settings = get_settings()
        app.conf.update(celery_config(settings))
        document = DocumentStore(settings).put(corpus)
        cache = __import__("redis").Redis.from_url(url)

        def run_chord(query: str) -> float:
            key = summary_key(settings, document.id, Strategy.extractive, query, 100_000)
            work = Preprocessing(
                document_id=document.id, strategy=Strategy.extractive, query=query, budget=100_000, cache_key=key
            )
            started = time.perf_counter()
            app.send_task(PREPROCESS_TASK, args=[work.model_dump(mode="json")], queue=PREPROCESS_QUEUE)
            while not cache.exists(key):
                time.sleep(0.01)
                if time.perf_counter() - started > 300:
                    raise TimeoutError("preprocessing did not finish")
            return time.perf_counter() - started

        timings, peak = {}, 0.0
        for count in (1, 2):
            workers = start_workers(count, env, Path("/tmp"))
            try:
                wait_ready(workers, app)
                timings[count] = run_chord(f"where is the access code checked, run {count}")
                peak = max(peak, peak_rss_mb(workers))
            finally:
                stop(*workers)

    retained = needle_retention(corpus, needles)

    table = Table(title="million-token documents")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("corpus tokens", f"{corpus_tokens:,}")
    table.add_row("chunk 1M tokens (ours)", f"{chunk_s:.3f} s")
    for name, seconds in sorted(libraries.items(), key=lambda item: item[1]):
        table.add_row(f"chunk with {name}", f"{seconds:.3f} s ({chunk_s / seconds:.2f}x ours/theirs)")
    table.add_row("extractive to 100K, 1 worker", f"{timings[1]:.2f} s")
    table.add_row("extractive to 100K, 2 workers", f"{timings[2]:.2f} s (speed-up {timings[1] / timings[2]:.2f}x)")
    table.add_row("peak worker RSS", f"{peak:.0f} MB")
    table.add_row("needles kept at 20K budget", f"{retained}/20 ({retained / 20:.0%})")
    console.print(table)
    print(
        json.dumps(
            {
                "corpus_tokens": corpus_tokens,
                "chunk_s": round(chunk_s, 4),
                "chunk_ratio_vs_fastest": round(chunk_s / fastest, 3) if libraries else None,
                "extractive_s_1_worker": round(timings[1], 3),
                "extractive_s_2_workers": round(timings[2], 3),
                "peak_rss_mb": round(peak, 1),
                "needle_retention": retained / 20,
            }
        )
    )


def needle_retention(corpus: str, needles: list[tuple[str, str]]) -> int:
    """Ask for each needle; count those whose passage the extractive result under 20K tokens keeps."""
    from shared.chunking import chunk_text
    from shared.compression import Strategy, compose
    from shared.extractive import chunk_stats, query_terms

    data = corpus.encode()
    chunks = chunk_text(corpus, chunk_size=10_000, overlap=200)
    owned = [
        (c.start_byte, nxt.start_byte if nxt else c.end_byte)
        for c, nxt in zip(chunks, [*chunks[1:], None], strict=True)
    ]
    read = lambda start, end: data[start:end].decode()  # noqa: E731
    kept = 0
    for subject, needle in needles:
        query = f"What is the access code of the {subject}?"
        stats = [chunk_stats(i, read(a, b), a, query_terms(query)) for i, (a, b) in enumerate(owned)]
        text, _, _ = compose(Strategy.extractive, stats, {}, query, 20_000, read)
        kept += needle in text
    return kept


if __name__ == "__main__":
    main()
