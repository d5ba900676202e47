"""`orchestrator models`: the catalog with today's prices and where each comes from."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.pricing import LIBRARY
from shared.settings import get_settings

console = Console(highlight=False, width=130)


def add_catalog_commands(commands: Any) -> None:
    models = commands.add_parser("models", help="the model catalog: tiers, windows, today's prices and their source")
    models.add_argument("--json", action="store_true", help="print the catalog as JSON")
    models.set_defaults(handler=_models)


def _models(args: argparse.Namespace) -> int:
    settings = get_settings()
    entries = settings.catalog.entries()
    if args.json:
        print(json.dumps([entry.model_dump(mode="json") for entry in entries], indent=2))
        return 0
    table = Table(title=f"the catalog, priced for today ({LIBRARY} unless overridden)")
    for column in ("model", "provider", "tier", "context", "USD/1M in, out, cached", "price", "capabilities"):
        table.add_column(column, justify="right" if column in {"context", "USD/1M in, out, cached"} else "left")
    for entry in entries:
        library = entry.price_source == LIBRARY
        table.add_row(
            entry.name,
            entry.provider,
            entry.tier,
            _size(entry.context_window),
            f"{entry.input_usd_per_mtok:g}, {entry.output_usd_per_mtok:g}, {entry.cached_input_usd_per_mtok:g}",
            "library" if library else entry.price_source,
            " ".join(entry.capabilities),
        )
    console.print(table)
    for entry in entries:
        if entry.long_context:
            console.print(f"{entry.name}: {entry.long_context}")
    console.print(f"baseline: {settings.baseline_model}; update prices with `pip install -U genai-prices`")
    return 0


def _size(tokens: int) -> str:
    return f"{tokens / 1e6:.3g}M" if tokens >= 1_000_000 else f"{tokens // 1000}K"
