"""`orchestrator batch PATH`: a JSONL file of job bodies, or a folder of text files with one shared request.

Resumable, by content: every item is known by a hash of what it asks (`item_key`: the canonical JSON of a line's
body, or a file's name and bytes), not by its place in the input. Every finished item is appended to the results
file as soon as it finishes, with that hash (`item`), its label (`key`: "line N" or the file name) and its line
number; every submitted one to a `.pending` file beside it. Run it again after an interrupt and the items whose
content has a result are skipped, submitted ones are followed rather than submitted again, and the rest is
submitted: a line that was edited is new content and runs again, wherever it now is; one that was not is skipped,
even if lines were added above it. Identical items are told apart by their occurrence ("#2" for the second).
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from api.batches import REFUSALS, as_job, parse_jsonl, plan_lines, refusal_reason
from shared.batches import BatchItem, result_line
from shared.documents import NotText, decode_text
from shared.orchestrator import Orchestrator
from shared.planning import Planner
from shared.settings import Settings

POLL_SECONDS = 0.2
KEY_CHARS = 24  # of the SHA-256 in hex: 96 bits, no collision in any batch


class Item:
    """One item of a batch: its content key, its label and line number, and its job body (or why there is none)."""

    __slots__ = ("key", "label", "line", "value")

    def __init__(self, key: str, label: str, line: int, value: dict[str, Any] | str) -> None:
        self.key, self.label, self.line, self.value = key, label, line, value


def item_key(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:KEY_CHARS]


def _canonical(value: dict[str, Any] | str, raw: str) -> bytes:
    """What identifies a line: its body as canonical JSON (key order and spacing do not matter), or the line itself
    when it is not a JSON object."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return raw.strip().encode()


def read_items(path: Path, request: str | None) -> list[Item]:
    """Every item of a JSONL file or a folder of text files, in input order, keyed by content."""
    items: list[Item] = []
    seen: dict[str, int] = {}

    def add(content: bytes, label: str, line: int, value: dict[str, Any] | str) -> None:
        digest = item_key(content)
        seen[digest] = seen.get(digest, 0) + 1
        key = digest if seen[digest] == 1 else f"{digest}#{seen[digest]}"
        items.append(Item(key, label, line, value))

    if path.is_dir():
        if not request:
            raise ValueError("a folder of documents needs --request, the request applied to each")
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        for number, file in enumerate(files, start=1):
            data = file.read_bytes()
            content = json.dumps([file.name, request]).encode() + b"\0" + data
            try:
                add(content, file.name, number, {"request": request, "document": decode_text(data, file.name)})
            except NotText as error:
                add(content, file.name, number, str(error))
        return items
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for number, value in parse_jsonl(text):
        add(_canonical(value, lines[number - 1]), f"line {number}", number, value)
    return items


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


def _identity(row: dict[str, Any], by_label: dict[str, Item]) -> str | None:
    """The content key of the item a results or pending row is for. Rows written before items were keyed by content
    carry only the label ("line N"): they are matched by it, as they were then."""
    value = row.get("item")
    if isinstance(value, str):
        return value
    item = by_label.get(row.get("key")) if isinstance(row.get("key"), str) else None
    return item.key if item is not None else None


def run_batch(path: Path, request: str | None, output: Path, orchestrator: Orchestrator, console: Console) -> dict:
    items = read_items(path, request)
    by_key = {item.key: item for item in items}
    by_label = {item.label: item for item in items}
    pending_path = output.with_name(output.name + ".pending")
    done = {key for row in _read_jsonl(output) if (key := _identity(row, by_label))}
    pending = {
        key: row["job_id"]
        for row in _read_jsonl(pending_path)
        if (key := _identity(row, by_label)) in by_key and key not in done and isinstance(row.get("job_id"), str)
    }
    store = orchestrator.jobs
    open_breakers = orchestrator.breakers.unavailable()
    skipped = sum(1 for item in items if item.key in done)
    counts = {"succeeded": 0, "failed": 0, "refused": 0, "cancelled": 0, "skipped": skipped}

    columns = (
        TextColumn("[bold]batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    try:
        with (
            Progress(*columns, console=console) as progress,
            output.open("a", encoding="utf-8") as results,
            pending_path.open("a", encoding="utf-8") as submitted,
        ):
            bar = progress.add_task("batch", total=len(items), completed=skipped, counts="")

            def finish(item: Item, line: str, status: str) -> None:
                results.write(json.dumps({"key": item.label, "item": item.key} | json.loads(line)) + "\n")
                results.flush()
                counts[status] = counts.get(status, 0) + 1
                progress.update(bar, advance=1, counts=" ".join(f"{k} {v}" for k, v in counts.items() if v))

            for item in items:
                if item.key in done or item.key in pending:
                    continue
                with _uninterrupted():  # a job submitted is a job noted: a rerun follows it, never sends it again
                    try:
                        record = orchestrator.submit(as_job(item.value), open_breakers=open_breakers)
                    except REFUSALS as error:
                        line = result_line(BatchItem(line=item.line, error=refusal_reason(error)), None)
                        finish(item, line, "refused")
                        continue
                    pending[item.key] = record.id
                    submitted.write(json.dumps({"key": item.label, "item": item.key, "job_id": record.id}) + "\n")
                    submitted.flush()

            while pending:
                keys = list(pending)
                for key, record in zip(keys, store.get_many([pending[k] for k in keys]), strict=True):
                    item = by_key[key]
                    entry = BatchItem(line=item.line, job_id=pending[key])
                    if record is None:
                        finish(item, result_line(entry.model_copy(update={"error": "job expired"}), None), "failed")
                    elif record.status.terminal:
                        finish(item, result_line(entry, record), record.status)
                    else:
                        continue
                    del pending[key]
                if pending:
                    time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        finished = skipped + sum(count for name, count in counts.items() if name != "skipped")
        console.print(
            f"interrupted: {finished} of {len(items)} items have their result in {output}, {len(pending)} more are "
            "submitted and stay queued. Run the same command again to finish the batch: it skips the finished "
            "items, follows the submitted ones and submits only the rest."
        )
        raise
    pending_path.unlink(missing_ok=True)
    return counts


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """SIGINT and SIGTERM wait for the end of the block (in the main thread, where they are handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def dry_run(path: Path, request: str | None, settings: Settings) -> Any:
    items = read_items(path, request)
    return plan_lines([(item.line, item.value) for item in items], Planner(settings).propose)
