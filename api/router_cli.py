"""`orchestrator router`: rebuild the difficulty model and its calibration from outcome data, and show the figures."""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)


def add_router_commands(commands: Any) -> None:
    router = commands.add_parser("router", help="the learned router: retrain it on outcome data")
    actions = router.add_subparsers(required=True, metavar="ACTION")
    train = actions.add_parser(
        "train",
        help="fit the difficulty model and calibrate the tiers (default: the bundled outcome data, into the package)",
    )
    train.add_argument("--data", type=Path, action="append", help="outcome JSONL file, gzipped or not (repeatable)")
    train.add_argument("--out", type=Path, help="directory to write difficulty.json and token_scores.npy into")
    train.add_argument("--strong", help="the strong model's name in the data")
    train.add_argument("--cheap", action="append", help="the cheap reference model's name(s) in the data")
    train.add_argument(
        "--tier",
        action="append",
        metavar="TIER=MODEL[,MODEL]|SHARE",
        help="what stands for a tier in the data: models, or the share of the gap to the strong model it closes",
    )
    train.add_argument("--average", action="store_true", help="keep targets on the benchmarks' average, not each")
    train.add_argument("--json", action="store_true", help="print the training report as JSON")
    train.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from shared.routing.difficulty import MODEL_PACKAGE
    from shared.routing.training import TrainingConfig, train, write_model

    overrides: dict[str, Any] = {}
    if args.strong:
        overrides["strong"] = args.strong
    if args.cheap:
        overrides["cheap"] = args.cheap
    if args.tier:
        overrides["stand_ins"] = dict(_stand_in(item) for item in args.tier)
    if args.average:
        overrides["robust"] = False
    for path in args.data or []:
        if not path.is_file():
            console.print(f"[red]no such outcome file[/red]: {path}")
            return 2
    try:
        config = TrainingConfig(**overrides)
        trained = train(config, args.data)
    except ValueError as error:
        console.print(f"[red]cannot train[/red]: {error}")
        return 2
    out = args.out or Path(str(resources.files(MODEL_PACKAGE)))
    write_model(trained, out)
    if args.json:
        print(json.dumps(trained.report | {"calibration": trained.card.calibration.model_dump()}, default=str))
        return 0
    _print_report(trained)
    console.print(f"written to {out}")
    return 0


def _stand_in(item: str) -> tuple[str, list[str] | float]:
    tier, _, spec = item.partition("=")
    if not spec:
        raise SystemExit(f"--tier {item}: expected TIER=MODEL[,MODEL] or TIER=SHARE")
    try:
        return tier, float(spec)
    except ValueError:
        return tier, spec.split(",")


def _print_report(trained: Any) -> None:
    report = trained.report
    console.print(f"{report['outcomes']:,} outcomes from {', '.join(report['data'])}")
    for source, why in report["dropped_sources"].items():
        console.print(f"  dropped {source}: {why}")
    table = Table(title="each benchmark scored by a model that never saw it (strong vs cheap reference)")
    for column in ("benchmark", "prompts", "APGR", "CPT(50%)", "CPT(80%)"):
        table.add_column(column, justify="right")
    for benchmark, figures in report.get("leave_one_benchmark_out", {}).items():
        table.add_row(
            benchmark,
            f"{report['benchmarks'][benchmark]:,}",
            f"{figures['apgr']:.3f}",
            f"{figures['cpt50']:.1%}",
            f"{figures['cpt80']:.1%}",
        )
    console.print(table)
    calibration = trained.card.calibration
    table = Table(title="calibration: thresholds per quality target, and what the mix kept on the data")
    for column in ("target", *calibration.tiers, "quality kept", "strong share", "relative cost"):
        table.add_column(column, justify="right")
    for row in calibration.rows:
        if row.target in (0.85, 0.9, 0.95, 0.97, 0.99):
            table.add_row(
                f"{row.target:.2f}",
                *(f"{row.thresholds[tier]:.3f}" for tier in calibration.tiers),
                f"{row.quality:.3f}",
                f"{row.strong_share:.1%}",
                "-" if row.cost is None else f"{row.cost:.2f}",
            )
    console.print(table)
