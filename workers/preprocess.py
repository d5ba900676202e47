"""Document preprocessing on the `preprocess` queue: chunk, map the chunks in parallel, reduce to the budget.

`preprocess` chunks the stored document and sends one `map_chunk` per chunk; every worker listening on `preprocess`
takes chunks. Each map task reads only its chunk's bytes from Redis and keeps a few KB beside the job's record
(passage statistics, and a summary when the strategy uses an LLM); the one that keeps the last chunk's sends
`reduce_chunks` (`JobStore.chunk_done`: no chord, so no result backend and no counter outside the job's slot).
`reduce_chunks` builds the compressed text, caches it under (document, strategy, query, budget), and hands the job
on to its `llm.<tier>` queue. A repeated query on the same document finds the cache in `preprocess` and skips all
chunk work.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery.utils.log import get_task_logger

from shared.accounting import usage_of
from shared.chunking import chunks_for
from shared.compression import (
    Compressed,
    Preprocessing,
    PromptTooLong,
    Strategy,
    chunk_room,
    compose,
    fitted_chunking,
    summariser_window,
    summarize,
    summary_key,
    summary_tokens_per_chunk,
)
from shared.execution import ChainExhausted
from shared.extractive import chunk_stats, query_terms
from shared.jobs import JobStatus
from shared.tokens import count_tokens
from workers.celery_app import (
    EXECUTE_TASK,
    PREPROCESS_QUEUE,
    PREPROCESS_TASK,
    REDUCE_TASK,
    CeleryMessage,
    app,
    queue_for,
    task_message,
)
from workers.runtime import services
from workers.tasks import finish_job

log = get_task_logger(__name__)

MAX_REDUCE_LEVELS = 4
#: Summaries of one reduce level in flight at once from one task.
REDUCE_PARALLELISM = 8


@app.task(name=PREPROCESS_TASK, ignore_result=True)
def preprocess(context: dict[str, Any]) -> dict[str, Any]:
    work = Preprocessing.model_validate(context)
    runtime = services()
    if work.job_id and not runtime.jobs.update(
        work.job_id, status=JobStatus.preprocessing, stage="chunking", started_at=time.time()
    ):
        return {"status": "skipped"}  # cancelled or finished meanwhile
    cached = runtime.summaries.get(work.cache_key)
    if cached is not None:
        _continue(work, cached, cache_hit=True)
        return {"status": "cached", "tokens": cached.tokens}
    text = runtime.documents.text(work.document_id)
    if text is None:
        _fail(work, f"document {work.document_id} expired before it could be preprocessed; upload it again")
        return {"status": "missing"}
    chunking = runtime.settings.document_processing.chunking
    if work.strategy.needs_llm and work.llm_chain:
        try:  # chunks that the summariser's window takes, with its instructions and the summary asked for
            chunking = fitted_chunking(chunking, summariser_window(runtime.settings, work.llm_chain))
        except PromptTooLong as error:
            _fail(work, str(error))
            return {"status": "failed"}
    chunks = chunks_for(text, chunking)
    del text
    if work.job_id:
        runtime.jobs.update(work.job_id, chunks_total=len(chunks), stage=f"preprocessing 0/{len(chunks)} chunks")
    owned_ends = [chunk.start_byte for chunk in chunks[1:]] + [chunks[-1].end_byte]
    for chunk, owned_end in zip(chunks, owned_ends, strict=True):
        map_chunk.apply_async(
            (context, chunk.index, len(chunks), chunk.start_byte, owned_end, chunk.end_byte), queue=PREPROCESS_QUEUE
        )
    return {"status": "started", "chunks": len(chunks)}


def _reduce_message(work: Preprocessing, context: dict[str, Any]) -> CeleryMessage:
    return task_message(app, REDUCE_TASK, [context], PREPROCESS_QUEUE, work.run_id)


@app.task(name="orchestrator.preprocess.map", bind=True, ignore_result=True)
def map_chunk(self, context: dict[str, Any], index: int, total: int, start: int, owned_end: int, end: int) -> dict:
    """Statistics of the bytes this chunk owns [start, owned_end); a summary of all of it [start, end) if asked.
    Kept beside the job's record; the task that keeps the last chunk's sends the reduce step."""
    work = Preprocessing.model_validate(context)
    runtime = services()
    if work.job_id and runtime.jobs.status(work.job_id) == JobStatus.cancelled:
        return {"status": "cancelled"}
    owned = runtime.documents.read(work.document_id, start, owned_end)
    stats = chunk_stats(index, owned, start, query_terms(work.query))
    summary, cost, problem = None, 0.0, None
    if work.strategy.needs_llm and work.llm_chain:
        per_chunk = summary_tokens_per_chunk(work.budget, total)
        text = owned + runtime.documents.read(work.document_id, owned_end, end)
        part = f"{index + 1}/{total}"
        try:
            served = summarize(runtime.executor, work.llm_chain, text, work.query, per_chunk, part, work.tenant)
        except (ChainExhausted, PromptTooLong) as error:
            log.warning("chunk %s of %s not summarised: %s", part, work.document_id, error)
            problem = f"chunk {part}: not summarised: {error}"
        else:
            summary = served.completion.text
            cost = 0.0 if served.cache_hit else runtime.settings.catalog.cost(served.model, usage_of(served.completion))
            if served.completion.stop_reason == "length":
                problem = f"chunk {part}: summary cut off at its output limit by {served.model}"
    result = {
        "stats": stats.model_dump(),
        "summary": summary,
        "cost_usd": cost,
        "worker": self.request.hostname,
        "problem": problem,
    }
    done = runtime.jobs.chunk_done(
        work.run_id, work.job_id, index, total, json.dumps(result), _reduce_message(work, context)
    )
    return {"status": "cancelled" if done < 0 else "done", "chunks_done": done}


@app.task(name=REDUCE_TASK, ignore_result=True)
def reduce_chunks(context: dict[str, Any]) -> dict[str, Any]:
    from shared.extractive import ChunkStats

    work = Preprocessing.model_validate(context)
    runtime = services()
    results = [json.loads(raw) for raw in runtime.jobs.chunk_results(work.run_id)]
    if not results:
        return {"status": "skipped"}  # reduced already (a redelivery), or the job was cancelled
    stats = [ChunkStats.model_validate(result["stats"]) for result in results]
    summaries = {s.chunk: r["summary"] for s, r in zip(stats, results, strict=True) if r["summary"] is not None}
    cost = sum(result["cost_usd"] for result in results)
    problems = [result["problem"] for result in results if result.get("problem")]
    text, ranges, note = compose(
        work.strategy,
        stats,
        summaries,
        work.query,
        work.budget,
        lambda start, end: runtime.documents.read(work.document_id, start, end),
    )
    if note and runtime.settings.document_processing.on_summary_failure == "fail":
        _fail(work, f"{note}: " + "; ".join(problems))
        runtime.jobs.drop_chunk_results(work.run_id)
        return {"status": "failed"}
    tokens = count_tokens(text)
    level = 0
    while tokens > work.budget and work.strategy is Strategy.hierarchical and not note and level < MAX_REDUCE_LEVELS:
        text, spent, level_problems = _reduce_level(work, text)
        cost += spent
        problems += level_problems
        tokens, level = count_tokens(text), level + 1
    info = runtime.documents.info(work.document_id)
    compressed = Compressed(
        document_id=work.document_id,
        strategy=work.strategy if not note else Strategy.extractive,
        text=text,
        tokens=tokens,
        original_tokens=info.tokens if info else 0,
        chunks=len(stats),
        passages=ranges,
        cost_usd=cost,
        note=note,
        problems=problems,
    )
    # A fallback is what the extractive strategy makes, not what the planned one's key names: it is kept under the
    # extractive key, where a request for it finds it, and never reused as the planned strategy's result.
    stored = work.cache_key
    if note:
        extractive = Strategy.extractive
        stored = summary_key(runtime.settings, work.document_id, extractive, work.query, work.budget, work.tenant)
    runtime.summaries.put(stored, compressed)
    workers = sorted({result["worker"] for result in results})
    _continue(work, compressed, cache_hit=False, workers=workers, stored=stored)
    runtime.jobs.drop_chunk_results(work.run_id)
    return {"status": "done", "tokens": tokens, "chunks": len(stats), "cache_key": work.cache_key}


def _reduce_level(work: Preprocessing, text: str) -> tuple[str, float, list[str]]:
    """Summaries too long for the budget: summarise groups of them again, one level up, the groups in parallel. A
    group holds up to 8 summaries, as many as the summariser's window takes; one that fails is kept as it was."""
    runtime = services()
    groups = _groups(text.split("\n\n"), chunk_room(summariser_window(runtime.settings, work.llm_chain)))
    per_group = max(64, work.budget // len(groups) - 16)

    def one(number: int, group: list[str]) -> tuple[list[str], float, str | None]:
        part = f"{number}/{len(groups)} (summaries)"
        try:
            served = summarize(
                runtime.executor, work.llm_chain, "\n\n".join(group), work.query, per_group, part, work.tenant
            )
        except (ChainExhausted, PromptTooLong) as error:
            return group, 0.0, f"group {part}: not summarised: {error}"
        spent = 0.0 if served.cache_hit else runtime.settings.catalog.cost(served.model, usage_of(served.completion))
        cut = served.completion.stop_reason == "length"
        return [served.completion.text], spent, f"group {part}: summary cut off at its output limit" if cut else None

    with ThreadPoolExecutor(min(REDUCE_PARALLELISM, len(groups))) as pool:
        done = list(pool.map(one, range(1, len(groups) + 1), groups))
    out = [part for parts, _, _ in done for part in parts]
    return "\n\n".join(out), sum(spent for _, spent, _ in done), [problem for *_, problem in done if problem]


def _groups(parts: list[str], room: int, most: int = 8) -> list[list[str]]:
    """`parts` in order, packed into groups of at most `most` parts and `room` tokens (a longer part alone)."""
    groups: list[list[str]] = [[]]
    used = 0
    for part in parts:
        tokens = count_tokens(part) + 2
        if groups[-1] and (used + tokens > room or len(groups[-1]) == most):
            groups.append([])
            used = 0
        groups[-1].append(part)
        used += tokens
    return groups


def _continue(
    work: Preprocessing, compressed: Compressed, cache_hit: bool, workers: list[str] = (), stored: str | None = None
) -> None:
    """Record what preprocessing produced on the job (`stored`: the key the model reads it from, by default the
    work's own) and queue the job for its model."""
    if not work.job_id:
        return
    runtime = services()
    record = runtime.jobs.get(work.job_id)
    if record is None or record.document is None:
        return
    document = record.document.model_copy(
        update={
            "strategy": compressed.strategy,
            "sent_tokens": compressed.tokens,
            "tokens_saved": compressed.original_tokens - compressed.tokens,
            "chunks": compressed.chunks,
            "summary_cache_hit": cache_hit,
            "summary_key": stored or work.cache_key,
            "preprocessing_cost_usd": 0.0 if cache_hit else compressed.cost_usd,
            "note": compressed.note,
            "fell_back_from": work.strategy if compressed.note else None,
            "problems": compressed.problems,
            "workers": list(workers),
        }
    )
    stage = "queued for the model" + (f" ({compressed.note})" if compressed.note else "")
    if runtime.jobs.update(work.job_id, document=document, status=JobStatus.queued, stage=stage, progress=0.9):
        queue = queue_for(work.tier or "moderate")
        runtime.jobs.sending(work.job_id, queue, task_message(app, EXECUTE_TASK, [work.job_id], queue, work.job_id))


def _fail(work: Preprocessing, message: str) -> None:
    jobs = services().jobs
    record = jobs.get(work.job_id) if work.job_id else None
    if record is not None:
        finish_job(jobs, record, status=JobStatus.failed, stage="failed", error=message)
