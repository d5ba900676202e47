"""`orchestrator batch PATH`: a JSONL file of job bodies, or a folder of text files with one shared request.

Resumable: every finished item is appended to the results file (with its key: the line number or the file name)
as soon as it finishes, and every submitted one to a `.pending` file beside it. Run it again after an interrupt
and finished items are skipped, submitted ones are followed rather than submitted again, and only the rest is
submitted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from api.batches import REFUSALS, as_job, parse_jsonl, plan_lines, refusal_reason
from api.submission import submit
from shared.batches import BatchItem, result_line
from shared.breaker import CircuitBreakers
from shared.documents import NotText, decode_text
from shared.jobs import JobStore
from shared.settings import Settings

POLL_SECONDS = 0.2


def read_items(path: Path, request: str | None) -> list[tuple[str, dict[str, Any] | str]]:
    """(key, job body or the reason there is none) for every item of a JSONL file or a folder of text files."""
    if path.is_dir():
        if not request:
            raise ValueError("a folder of documents needs --request, the request applied to each")
        items: list[tuple[str, dict[str, Any] | str]] = []
        for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            try:
                items.append((file.name, {"request": request, "document": decode_text(file.read_bytes(), file.name)}))
            except NotText as error:
                items.append((file.name, str(error)))
        return items
    return [(f"line {number}", value) for number, value in parse_jsonl(path.read_text(encoding="utf-8"))]


def default_output(path: Path) -> Path:
    return path.with_name(f"{path.stem if path.is_file() else path.name}.results.jsonl")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by an interrupt: that item is simply done again
    return rows


def run_batch(path: Path, request: str | None, output: Path, settings: Settings, celery: Any, console: Console) -> dict:
    items = read_items(path, request)
    pending_path = output.with_name(output.name + ".pending")
    done = {row["key"] for row in _read_jsonl(output) if "key" in row}
    pending = {row["key"]: row["job_id"] for row in _read_jsonl(pending_path) if row.get("key") not in done}
    store = JobStore(settings)
    open_breakers = CircuitBreakers(settings, store.redis).unavailable()
    counts = {"succeeded": 0, "failed": 0, "refused": 0, "cancelled": 0, "skipped": len(done)}

    columns = (
        TextColumn("[bold]batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with (
        Progress(*columns, console=console) as progress,
        output.open("a", encoding="utf-8") as results,
        pending_path.open("a", encoding="utf-8") as submitted,
    ):
        bar = progress.add_task("batch", total=len(items), completed=len(done), counts="")

        def finish(key: str, line: str, status: str) -> None:
            results.write(json.dumps({"key": key} | json.loads(line)) + "\n")
            results.flush()
            counts[status] = counts.get(status, 0) + 1
            progress.update(bar, advance=1, counts=" ".join(f"{k} {v}" for k, v in counts.items() if v))

        for number, (key, value) in enumerate(items, start=1):
            if key in done or key in pending:
                continue
            try:
                record = submit(as_job(value), settings, store, celery, open_breakers)
            except REFUSALS as error:
                finish(key, result_line(BatchItem(line=number, error=refusal_reason(error)), None), "refused")
                continue
            pending[key] = record.id
            submitted.write(json.dumps({"key": key, "job_id": record.id}) + "\n")
            submitted.flush()

        lines = {key: number for number, (key, _) in enumerate(items, start=1)}
        while pending:
            keys = list(pending)
            for key, record in zip(keys, store.get_many([pending[k] for k in keys]), strict=True):
                item = BatchItem(line=lines.get(key, 0), job_id=pending[key])
                if record is None:
                    finish(key, result_line(item.model_copy(update={"error": "job expired"}), None), "failed")
                elif record.status.terminal:
                    finish(key, result_line(item, record), record.status)
                else:
                    continue
                del pending[key]
            if pending:
                time.sleep(POLL_SECONDS)
    pending_path.unlink(missing_ok=True)
    return counts


def dry_run(path: Path, request: str | None, settings: Settings) -> Any:
    items = read_items(path, request)
    return plan_lines([(number, value) for number, (_, value) in enumerate(items, start=1)], settings)
