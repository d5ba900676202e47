"""The `orchestrator` command: analyse, run, serve, worker.

With no `ORCH_REDIS_URL`, `run` and `serve` start the embedded Valkey server and an in-process worker, so one
command shows the whole path (plan, queue, worker, provider, result) on a fresh machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis import RedisError
from rich import box
from rich.console import Console
from rich.table import Table

from api.catalog_cli import add_catalog_commands
from api.router_cli import add_router_commands
from shared.auth import TENANT_NAME
from shared.errors import OrchestratorError
from shared.heap import freeze_startup_heap
from shared.pricing import LIBRARY, saved_pct, usd
from shared.settings import ConfigError, Settings, get_settings

console = Console(stderr=False, highlight=False)
errors = Console(stderr=True, highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from api.embedded import exit_now, jobs_on_interrupt, work_abandoned

    # Interrupted, `orchestrator run` cancels its job: its user no longer waits for the answer, and nobody else would
    # read it. Every other command leaves its jobs queued (those in flight are put back), for the next run to finish.
    policy = "cancel" if args.handler is _run else "requeue"
    try:
        with jobs_on_interrupt(policy):
            return args.handler(args)
    except ConfigError as error:
        errors.print(f"[red]configuration error[/red]: {error}")
        return 2
    except OrchestratorError as error:
        errors.print(f"[red]{error.code.replace('_', ' ')}[/red]: {error.message}")
        return 1
    except (RedisError, OperationalError) as error:
        from shared.store import shown_url

        url = shown_url(get_settings().redis_url or "the embedded server")
        errors.print(
            f"[red]store unavailable[/red]: cannot reach Redis at {url} ({error}). Start it, or unset ORCH_REDIS_URL "
            "to use the embedded server."
        )
        return 3
    except BrokenPipeError:
        # the reader of stdout went away (`orchestrator analyze --json | head`): say nothing more to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as interrupt:
        code = getattr(interrupt, "exit_code", 130)
        if work_abandoned():
            exit_now(code)  # threads still run work that was given up on (and put back): do not wait for them
        return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description="Cheapest capable LLM per request.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def request_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--context", type=json.loads, default={}, help="context as a JSON object")
        command.add_argument(
            "--model", dest="preferred_models", action="append", default=[], help="preferred model (repeatable)"
        )
        command.add_argument("--max-cost", type=float, help="maximum estimated cost in USD")
        command.add_argument("--max-tokens", type=int, help="maximum output tokens")
        command.add_argument(
            "--quality-target", type=float, help="share of the strongest tier's quality to keep (default 0.95)"
        )
        command.add_argument("--document", type=Path, help="a text file the request is about")
        command.add_argument(
            "--strategy",
            choices=["auto", "extractive", "hierarchical", "semantic", "hybrid"],
            help="how to compress a document that does not fit the model",
        )

    analyze = commands.add_parser("analyze", help="show intent, complexity, tokens and the plan; runs nothing")
    analyze.add_argument("text", nargs="?", help="the request")
    analyze.add_argument("--jsonl", type=Path, help='file of {"request": ...} lines; one JSON line out per line')
    analyze.add_argument("--json", action="store_true", help="print JSON")
    request_options(analyze)
    analyze.set_defaults(handler=_analyze)

    run = commands.add_parser("run", help="run one request through the queue and print the result")
    run.add_argument("text")
    run.add_argument("--json", action="store_true", help="print the job record as JSON")
    run.add_argument("--timeout", type=float, default=300, help="seconds to wait for the result")
    request_options(run)
    run.set_defaults(handler=_run)

    serve = commands.add_parser("serve", help="run the HTTP API (embedded Redis and worker when none configured)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=_serve)

    metrics = commands.add_parser("metrics", help="requests, tokens, cost and savings over a period")
    metrics.add_argument("--period", default="1h", choices=["1m", "5m", "1h", "1d"])
    metrics.add_argument("--json", action="store_true", help="print the raw object")
    metrics.set_defaults(handler=_metrics)

    demo = commands.add_parser("demo", help="cost of a varied set of requests with and without the orchestrator")
    demo.add_argument("--json", action="store_true", help="print the rows and totals as JSON")
    demo.set_defaults(handler=_demo)

    batch = commands.add_parser("batch", help="run a JSONL file of jobs, or a folder of documents; resumable")
    batch.add_argument("path", type=Path, help="a JSONL file (one job body per line) or a folder of text files")
    batch.add_argument("--request", help="with a folder: the request applied to every document")
    batch.add_argument("--output", type=Path, help="results file (default: PATH.results.jsonl)")
    batch.add_argument("--dry-run", action="store_true", help="plan every item and project the cost; run none")
    batch.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    batch.set_defaults(handler=_batch)

    keys = commands.add_parser("keys", help="API keys of the HTTP API: create, list, revoke")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="make a key (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--budget-usd", type=_positive(float), help="spend allowed per period")
    create.add_argument("--period", choices=["day", "month"], default="day")
    create.add_argument("--rate-per-minute", type=_positive(int), help="requests allowed per minute")
    create.add_argument("--tenant", type=_tenant_name, help="team whose keys share their jobs, batches and documents")
    create.add_argument("--admin", action="store_true", help="sees every tenant's work and metrics")
    create.set_defaults(handler=_keys_create)
    listing = key_commands.add_parser("list", help="every key with its budget, spend and state")
    listing.set_defaults(handler=_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_keys_revoke)

    services = commands.add_parser("services", help="the downstream MCP services: state, tools, breaker")
    services.add_argument("--json", action="store_true", help="print JSON instead of a table")
    services.set_defaults(handler=_services)

    mcp = commands.add_parser("mcp", help="the MCP server over stdio (for Claude Desktop, Claude Code, IDEs)")
    mcp.set_defaults(handler=_mcp)

    add_router_commands(commands)
    add_catalog_commands(commands)

    start = commands.add_parser(
        "start", help="distributed mode on one machine: the Procfile's API, workers and Flower, with honcho"
    )
    start.set_defaults(handler=_start)

    worker = commands.add_parser("worker", help="run a Celery worker (distributed mode)")
    worker.add_argument(
        "--queues",
        default="llm.simple,llm.moderate,llm.complex",
        help="comma-separated queues (llm.simple, llm.moderate, llm.complex, preprocess)",
    )
    worker.add_argument("--pool", default="threads", choices=["threads", "gevent", "prefork", "solo"])
    worker.add_argument("--concurrency", type=int)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=_worker)
    return parser


def _job_request(args: argparse.Namespace, text: str) -> Any:
    from shared.documents import decode_text
    from shared.requests import JobRequest

    document = decode_text(args.document.read_bytes(), str(args.document)) if args.document else None
    return JobRequest(
        request=text,
        context=args.context,
        document=document,
        options={
            "preferred_models": args.preferred_models,
            "max_cost": args.max_cost,
            "max_tokens": args.max_tokens,
            "quality_target": args.quality_target,
            "strategy": args.strategy,
        },
    )


def _summary(proposal: Any) -> dict[str, Any]:
    analysis, plan = proposal.analysis, proposal.plan
    return {
        "intent": analysis.intent,
        "skill": analysis.skill,
        "skill_evidence": analysis.skill_evidence,
        "tier": analysis.tier,
        "complexity_score": analysis.complexity_score,
        "difficulty_evidence": analysis.difficulty_evidence,
        "quality_target": analysis.decision.quality_target,
        "thresholds": analysis.decision.thresholds,
        "tier_reason": analysis.decision.reason,
        "model": plan.model,
        "fallbacks": plan.fallbacks,
        "estimated_tokens": plan.estimated_input_tokens + plan.estimated_output_tokens,
        "estimated_cost_usd": usd(plan.estimated_cost_usd),
        "baseline_model": plan.baseline.model,
        "baseline_tokens": plan.baseline.input_tokens + plan.baseline.output_tokens,
        "baseline_cost_usd": usd(plan.baseline.cost_usd),
        "preprocess": plan.preprocess,
        "reason": plan.reason,
    } | _services_summary(proposal.services)


def _services_summary(selection: Any) -> dict[str, Any]:
    if selection is None:
        return {}
    return {
        "services": [choice.service for choice in selection.services],
        "tools_offered": [f"{choice.service}.{tool}" for choice in selection.services for tool in choice.tools],
        "tool_schema_tokens": selection.schema_tokens_offered,
        "tool_schema_tokens_all": selection.schema_tokens_all,
        "tool_schema_tokens_saved": selection.schema_tokens_saved,
    }


@contextmanager
def _service_manager(settings: Settings) -> Iterator[Any]:
    """Sessions to the configured MCP services for this command, or None when there are none."""
    if not settings.mcp_services:
        yield None
        return
    from shared.services.manager import ServiceManager

    manager = ServiceManager(settings)
    try:
        yield manager
    finally:
        manager.close()


def _analyze(args: argparse.Namespace) -> int:
    settings = get_settings()
    with _service_manager(settings) as tools:
        return _analyze_with(args, settings, tools)


def _analyze_with(args: argparse.Namespace, settings: Settings, tools: Any) -> int:
    from shared.errors import OrchestratorError
    from shared.planning import Planner
    from shared.requests import JobRequest

    planner = Planner(settings, tools)
    if args.jsonl:
        try:
            lines = args.jsonl.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            errors.print(f"[red]cannot read {args.jsonl}[/red]: {error}")
            return 2
        failures = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                proposal = planner.propose(JobRequest.model_validate_json(line))
                out: dict[str, Any] = {"line": number, **_summary(proposal)}
            except (ValidationError, OrchestratorError) as error:
                failures += 1
                out = {"line": number, "error": _error_text(error)}
            print(json.dumps(out, default=str))
        return 1 if failures else 0
    if not args.text:
        errors.print("give the request text, or --jsonl FILE")
        return 2
    try:
        proposal = planner.propose(_job_request(args, args.text))
    except (ValidationError, OrchestratorError, OSError, ValueError) as error:
        errors.print(f"[red]cannot plan[/red]: {_error_text(error)}")
        return 1
    if args.json:
        print(json.dumps({**_summary(proposal), **proposal.model_dump(mode="json")}, indent=2))
    else:
        _print_proposal(proposal)
    return 0


def _error_text(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in error.errors())
    return str(error)


def _print_proposal(proposal: Any) -> None:
    summary = _summary(proposal)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    tokens = proposal.analysis.tokens
    rows = [
        ("intent", f"{summary['intent']}"),
        ("skill", f"{summary['skill']} ({', '.join(summary['skill_evidence'])})"),
        (
            "difficulty",
            f"{summary['complexity_score']:.3f}"
            + (f" ({', '.join(summary['difficulty_evidence'])})" if summary["difficulty_evidence"] else ""),
        ),
        ("tier", f"{summary['tier']}: {summary['tier_reason']}"),
        ("tokens", f"request {tokens.request}, context {tokens.context}, document {tokens.document}"),
        (
            "model",
            f"{summary['model']}  ({summary['reason']})"
            + (
                f"; document compressed to {proposal.plan.document_budget_tokens:,} tokens"
                if proposal.plan.preprocess
                else ""
            ),
        ),
        ("fallbacks", ", ".join(summary["fallbacks"]) or "-"),
        ("estimate", f"{summary['estimated_tokens']:,} tokens, ${summary['estimated_cost_usd']:.6f}"),
        (
            "baseline",
            f"{summary['baseline_model']}: {summary['baseline_tokens']:,} tokens, ${summary['baseline_cost_usd']:.6f}",
        ),
    ]
    selection = proposal.services
    if selection is not None:
        offered = ", ".join(f"{c.service} ({', '.join(c.tools)})" for c in selection.services) or "none"
        rows.append(("services", offered))
        rows.append(
            (
                "tool schemas",
                f"{selection.schema_tokens_offered:,} tokens offered of "
                f"{selection.schema_tokens_all:,} for all tools "
                f"({selection.schema_tokens_saved:,} saved)",
            )
        )
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _services(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.mcp_services:
        console.print("no MCP services configured (mcp_services in config/services.yaml)")
        return 0
    from shared.breaker import CircuitBreakers
    from shared.services.manager import ServiceManager
    from shared.store import StoreUnavailable, redis_client

    try:
        breakers = CircuitBreakers(settings, redis_client(settings))
    except StoreUnavailable:
        breakers = None  # no shared Redis: breaker states are unknown here, the services still answer
    manager = ServiceManager(settings, breakers)
    try:
        manager.catalog()  # connect and list, so the states below are first-hand
        states = manager.states()
    finally:
        manager.close()
    if args.json:
        print(json.dumps([state.model_dump(mode="json") for state in states], indent=2))
        return 0
    table = Table("service", "type", "state", "breaker", "tools", "capabilities")
    for state in states:
        status = state.state + (f": {state.error}" if state.error else "")
        table.add_row(
            state.name, state.type, status, state.breaker, ", ".join(state.tools) or "-", ", ".join(state.capabilities)
        )
    console.print(table)
    return 0 if all(state.state != "failed" for state in states) else 1


@contextmanager
def _runtime(settings: Settings, worker_threads: int | None) -> Iterator[Settings]:
    """Redis and workers for this command: the configured ones, or the embedded server and an in-process worker
    (api/embedded.py), stopped in order however the command ends."""
    from api.embedded import EmbeddedRuntime

    with EmbeddedRuntime(settings, worker_threads=worker_threads) as runtime:
        yield runtime.settings


def _run(args: argparse.Namespace) -> int:
    from api.app import build_orchestrator
    from shared.errors import OrchestratorError
    from shared.planning import Planner

    settings = get_settings()
    try:
        body = _job_request(args, args.text)
        proposal = Planner(settings).propose(body)
    except (ValidationError, OSError, ValueError) as error:
        errors.print(f"[red]bad request[/red]: {_error_text(error)}")
        return 1
    except OrchestratorError as error:
        errors.print(f"[red]cannot plan[/red]: {error}")
        return 1
    if not args.json:
        _print_proposal(proposal)
    if not settings.usable_providers():
        errors.print(
            f"\n[yellow]No provider key is configured, so nothing was sent.[/yellow] To run it, "
            f"{settings.key_variables_hint()}."
        )
        return 2
    with _runtime(settings, worker_threads=4) as settings:
        with build_orchestrator(settings) as orchestrator:
            try:
                record = orchestrator.submit(body)
                finished = orchestrator.wait(record, args.timeout)
            except OrchestratorError as error:
                errors.print(f"[red]cannot run[/red]: {error}")
                return 1
    if finished is None or not finished.status.terminal:
        errors.print(
            f"job {record.id} still {finished.status if finished else 'unknown'} after {args.timeout:.0f}s;"
            " is a worker running for its queue?"
        )
        return 1
    if args.json:
        print(finished.model_dump_json(indent=2))
    else:
        _print_outcome(finished)
    return 0 if finished.status == "succeeded" else 1


def _print_outcome(record: Any) -> None:
    if record.status != "succeeded":
        console.print(f"\n[red]{record.status}[/red]: {record.error}")
        return
    console.print(f"\n{record.result}\n")
    usage = record.usage
    console.print(
        f"[dim]{record.model_used} · {usage.input_tokens:,} in / {usage.output_tokens:,} out · "
        f"${record.cost_usd:.6f} vs ${record.baseline_cost_usd:.6f} baseline · saved {record.savings_pct:.1f}% · "
        f"{record.duration_ms:.0f} ms[/dim]"
    )


def _metrics(args: argparse.Namespace) -> int:
    from shared.metrics import read_metrics
    from shared.store import redis_client

    with _runtime(get_settings(), worker_threads=None) as settings:
        report = read_metrics(settings, redis_client(settings), args.period)
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0
    table = Table(title=f"last {args.period}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        (
            "requests",
            f"{report.total_requests:,} ({report.successful_requests:,} ok, {report.failed_requests:,} "
            f"failed, {report.rejected_requests:,} refused)",
        ),
        ("success rate", f"{report.success_rate:.1%}"),
        ("requests per minute", f"{report.requests_per_minute:.2f}"),
        (
            "duration",
            f"avg {report.avg_duration_ms:.0f} ms, p50 {report.p50_duration_ms:.0f}, "
            f"p95 {report.p95_duration_ms:.0f}, p99 {report.p99_duration_ms:.0f}",
        ),
        (
            "tokens",
            f"{report.total_tokens:,} (baseline {report.baseline_tokens:,}, saved "
            f"{report.total_tokens_saved:,} = {report.tokens_saved_pct:.1f}%)",
        ),
        (
            "cost",
            f"${report.total_cost_usd:.6f} (baseline ${report.baseline_cost_usd:.6f}, saved "
            f"${report.savings_usd:.6f} = {report.savings_pct:.1f}%)",
        ),
        ("cache hit rate", f"{report.cache_hit_rate:.1%} ({report.cache_hits:,} hits)"),
    ]
    for name in ("model", "intent", "tier", "provider"):
        distribution = getattr(report, f"{name}_distribution")
        rows.append((name + "s", ", ".join(f"{key} {value}" for key, value in distribution.items()) or "-"))
    if report.service_calls:
        errors_of = report.service_errors
        rows.append(
            (
                "service calls",
                ", ".join(
                    f"{name} {calls} ({errors_of.get(name, 0)} not ok)" for name, calls in report.service_calls.items()
                ),
            )
        )
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from api.demo import demo_rows, totals

    rows = demo_rows(get_settings())
    total = totals(rows)
    if args.json:
        print(json.dumps({"rows": [row.model_dump() for row in rows], "totals": total}, indent=2))
        return 0
    table = Table(
        title=f"Without: {rows[0].without_model}, naive prompt, whole documents. With: the plan.",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("request", "intent/tier", "without", "USD", "with", "USD", "model", "saved"):
        table.add_column(
            column, justify="left" if column in ("request", "intent/tier", "model") else "right", no_wrap=True
        )
    for row in rows:
        saved = saved_pct(row.with_cost_usd, row.without_cost_usd)
        table.add_row(
            row.kind,
            f"{row.intent}/{row.tier}",
            f"{row.without_tokens:,}",
            f"{row.without_cost_usd:.4f}",
            f"{row.with_tokens:,}",
            f"{row.with_cost_usd:.4f}",
            row.with_model,
            f"{saved:.0f}%",
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        f"{total['without_tokens']:,}",
        f"{total['without_cost_usd']:.4f}",
        f"{total['with_tokens']:,}",
        f"{total['with_cost_usd']:.4f}",
        "",
        f"{total['savings_pct']:.0f}%",
    )
    Console(highlight=False, width=max(console.width, 104)).print(table)  # narrower would truncate the figures
    console.print(
        f"WITHOUT orchestrator: {total['without_tokens']:,} tokens, ${total['without_cost_usd']:.4f}\n"
        f"WITH orchestrator:    {total['with_tokens']:,} tokens, ${total['with_cost_usd']:.4f}\n"
        f"Savings: {total['tokens_saved']:,} tokens ({total['tokens_saved_pct']}%), "
        f"${total['savings_usd']:.4f} ({total['savings_pct']}%)"
    )
    console.print(
        f"[dim]Today's prices of the catalog's models ({LIBRARY}) and real token counts of the prompts; "
        "the answer length is the same estimate on both sides. Nothing was sent.[/dim]"
    )
    return 0


def _batch(args: argparse.Namespace) -> int:
    from api.batch_cli import default_output, dry_run, run_batch

    settings = get_settings()
    try:
        if args.dry_run:
            plan = dry_run(args.path, args.request, settings)
            if args.json:
                print(plan.model_dump_json(indent=2))
            else:
                console.print(
                    f"{plan.planned} items planned, {plan.refused} refused\n"
                    f"WITHOUT orchestrator: {plan.baseline_tokens:,} tokens, ${plan.baseline_cost_usd:.4f}\n"
                    f"WITH orchestrator:    {plan.tokens:,} tokens, ${plan.cost_usd:.4f}\n"
                    f"Savings: ${plan.savings_usd:.4f} ({plan.savings_pct}%)"
                )
                for item in plan.items:
                    if item.error:
                        errors.print(f"line {item.line}: {item.error}")
            return 0
        if not settings.usable_providers():
            errors.print(f"No provider key is configured: {settings.key_variables_hint()}.")
            return 2
        output = args.output or default_output(args.path)
        with _runtime(settings, worker_threads=settings.worker_concurrency) as settings:
            from api.app import build_orchestrator

            with build_orchestrator(settings) as orchestrator:
                counts = run_batch(args.path, args.request, output, orchestrator, console)
    except (OSError, ValueError) as error:
        errors.print(f"[red]cannot run the batch[/red]: {error}")
        return 1
    console.print(", ".join(f"{name} {count}" for name, count in counts.items() if count) + f"; results in {output}")
    return 0 if not counts.get("failed") else 1


@contextmanager
def _key_store() -> Iterator[Any]:
    from shared.auth import KeyStore
    from shared.store import redis_client

    with _runtime(get_settings(), worker_threads=None) as settings:
        yield KeyStore(settings, redis_client(settings))


def _positive(kind: type[int] | type[float]):
    """An argparse type: a number above zero, or a usage error that says so."""

    def parse(value: str) -> int | float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be above zero, got {value}")
        return number

    return parse


def _tenant_name(value: str) -> str:
    if not TENANT_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError("a tenant name is 1-64 letters, digits, '.', '_' or '-'")
    return value


def _keys_create(args: argparse.Namespace) -> int:
    with _key_store() as keys:
        api_key, secret = keys.create(
            args.name, args.budget_usd, args.period, args.rate_per_minute, args.tenant, args.admin
        )
    # the key alone on stdout, so `export ORCH_KEY=$(orchestrator keys create --name me)` keeps it
    errors.print(f"key {api_key.id} ({api_key.name}) created; it is shown only now:")
    print(secret)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    table = Table("id", "name", "tenant", "state", "budget", "spent this period", "rate/min", box=box.SIMPLE_HEAD)
    with _key_store() as keys:
        for api_key in keys.list():
            budget = f"${api_key.budget_usd:.4f}/{api_key.budget_period}" if api_key.budget_usd is not None else "-"
            table.add_row(
                api_key.id,
                api_key.name,
                (api_key.tenant or "-") + (" (admin)" if api_key.admin else ""),
                "revoked" if api_key.revoked else "active",
                budget,
                f"${keys.spent(api_key):.6f}",
                str(api_key.rate_per_minute or "-"),
            )
    console.print(table)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    with _key_store() as keys:
        if not keys.revoke(args.key_id):
            errors.print(f"no key {args.key_id}")
            return 1
    console.print(f"key {args.key_id} revoked")
    return 0


def _start(args: argparse.Namespace) -> int:
    """honcho over the Procfile, with this environment's commands first on the PATH (so `orchestrator` and `celery`
    are found without activating it) and the API on ORCH_API_PORT (8080), whatever PORT honcho assigns."""
    from shared.settings import PROJECT_ROOT

    procfile = PROJECT_ROOT / "Procfile"
    if not procfile.is_file():
        errors.print(f"no Procfile at {procfile}: `orchestrator start` runs from a checkout")
        return 2
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    command = [sys.executable, "-m", "honcho", "-f", str(procfile), "-d", str(PROJECT_ROOT), "start"]
    os.execvpe(sys.executable, command, environment)
    return 0  # not reached: honcho replaced this process


def _mcp(args: argparse.Namespace) -> int:
    from api.embedded import EmbeddedRuntime

    settings = get_settings()
    with EmbeddedRuntime(settings, worker_threads=settings.worker_concurrency) as runtime:
        from api.app import build_orchestrator
        from api.mcp_server import create_mcp_server

        server = create_mcp_server(build_orchestrator(runtime.settings))
        # stdio; everything else this process prints goes to stderr. The server reads stdin in a thread that only
        # the host's closing it ends, so it runs in a thread of its own, and a signal ends the command without it.
        runtime.run_in_thread(server.run, name="mcp-stdio")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.embedded import EmbeddedRuntime

    class Server(uvicorn.Server):
        """uvicorn's server, told of SIGINT and SIGTERM by the runtime (which owns them) instead of catching them
        itself: uvicorn re-raises a caught signal after its shutdown with the handler it found, and the default
        SIGTERM handler would end the process before the runtime stops the worker and the embedded server."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            with runtime.signals_to(self.stop):
                yield

        def stop(self, force: bool) -> None:
            self.should_exit = True
            self.force_exit = self.force_exit or force

    settings = get_settings()
    with EmbeddedRuntime(settings, worker_threads=settings.worker_concurrency) as runtime:
        from api.app import create_app

        app = create_app(runtime.settings)
        freeze_startup_heap()
        config = uvicorn.Config(
            app,
            host=args.host or runtime.settings.api_host,
            port=args.port or runtime.settings.api_port,
            access_log=runtime.settings.api_access_log,
        )
        server = Server(config)
        server.run()
    return 0 if server.started else 3  # uvicorn's own code for a server that could not start (a port in use)


def _worker(args: argparse.Namespace) -> int:
    from workers.celery_app import ALL_QUEUES

    queues = [name.strip() for name in args.queues.split(",") if name.strip()]
    unknown = [name for name in queues if name not in ALL_QUEUES]
    if unknown or not queues:
        errors.print(
            f"[red]unknown queue{'s' if len(unknown) > 1 else ''}[/red]: {', '.join(unknown) or '(none given)'}; "
            f"the queues are {', '.join(ALL_QUEUES)}"
        )
        return 2
    settings = get_settings()
    if not settings.redis_url:
        errors.print(
            "a separate worker needs a shared Redis: set ORCH_REDIS_URL (the embedded mode runs its "
            "workers inside `orchestrator serve`)"
        )
        return 2
    concurrency = args.concurrency or (settings.worker_concurrency if args.pool in ("threads", "gevent") else None)
    # A node name per process: Flower, remote control and the job records tell workers apart by it.
    name = f"{queues[0].split('.')[0]}-{os.getpid()}@%h"
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--pool",
        args.pool,
        "--loglevel",
        args.loglevel,
        "-E",
        "--hostname",
        name,
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if args.pool == "gevent":
        # gevent must patch the standard library before anything opens a socket or a thread, which only Celery's
        # own entry point does early enough; this process has already imported too much.
        os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "workers.celery_app", *argv])
    from workers.celery_app import app

    app.worker_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
