"""`orchestrator demo`: what a varied set of requests costs with the orchestrator and without it.

Without: every request goes to the baseline model with a naive prompt (a generic preamble and everything
pretty-printed), documents whole. With: the plan the orchestrator makes. Both sides use the real catalog prices and
real token counts of the real prompts; the answer length is the same estimate on both sides. Nothing is sent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.planning import Planner
from shared.pricing import saved_pct
from shared.requests import JobRequest
from shared.settings import Settings
from shared.tokens import count_tokens

LOGIN_HANDLER = """\
@app.post("/login")
def login(form: LoginForm, db: Session = Depends(get_db)):
    user = db.execute(f"SELECT * FROM users WHERE name = '{form.username}'").first()
    if user and user.password == hashlib.md5(form.password.encode()).hexdigest():
        token = jwt.encode({"sub": user.name}, SECRET, algorithm="HS256")
        response = RedirectResponse(form.next or "/")
        response.set_cookie("session", token)
        return response
    logger.info("failed login for %s with password %s", form.username, form.password)
    raise HTTPException(401)
"""


def standard_library_source(min_tokens: int) -> list[str]:
    """Real long text built on this machine, one part per file: the Python standard library's own source, in
    file order, until the parts hold `min_tokens` tokens."""
    parts, tokens = [], 0
    for path in sorted(Path(os.__file__).parent.rglob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        tokens += count_tokens(text)
        if tokens >= min_tokens:
            break
    return parts


def demo_requests() -> list[tuple[str, JobRequest]]:
    return [
        ("question", JobRequest(request="What is the capital of Australia?")),
        ("translation", JobRequest(request="Translate 'Where is the train station?' into German.")),
        (
            "code",
            JobRequest(
                request="Create a REST API for user management",
                context={"framework": "FastAPI", "database": "PostgreSQL", "auth": "JWT"},
            ),
        ),
        (
            "search",
            JobRequest(
                request="Find every place where the retry policy is configured",
                context={"repository": "billing-service", "languages": ["Python", "YAML"]},
            ),
        ),
        (
            "review",
            JobRequest(
                request="Analyze the security vulnerabilities in this login handler",
                context={"code": LOGIN_HANDLER, "framework": "FastAPI"},
            ),
        ),
        (
            "operations",
            JobRequest(
                request="Restart the nginx deployment on the staging cluster and verify that the health checks pass",
                context={"cluster": "staging-eu-1", "namespace": "web"},
            ),
        ),
        (
            "design",
            JobRequest(
                request=(
                    "Design a distributed, fault-tolerant job scheduler in Python that must support exactly-once "
                    "execution, handle worker crashes without losing jobs, scale to 10k jobs per second, and include "
                    "tests. Then write a migration plan from our legacy cron setup, ensuring backward compatibility "
                    "and zero downtime."
                )
            ),
        ),
        (
            "document",
            JobRequest(
                request="Find where the standard library validates file paths and explain it",
                document="\n\n".join(standard_library_source(300_000)),
            ),
        ),
    ]


class DemoRow(BaseModel):
    kind: str
    request: str
    intent: str
    tier: str
    without_model: str
    without_tokens: int
    without_cost_usd: float
    with_model: str
    with_tokens: int
    with_cost_usd: float


def demo_rows(settings: Settings) -> list[DemoRow]:
    rows = []
    for kind, body in demo_requests():
        proposal = Planner(settings).propose(body)
        plan = proposal.plan
        rows.append(
            DemoRow(
                kind=kind,
                request=body.request,
                intent=proposal.analysis.intent,
                tier=proposal.analysis.tier,
                without_model=plan.baseline.model,
                without_tokens=plan.baseline.input_tokens + plan.baseline.output_tokens,
                without_cost_usd=plan.baseline.cost_usd,
                with_model=plan.model,
                with_tokens=plan.estimated_input_tokens + plan.estimated_output_tokens,
                with_cost_usd=plan.estimated_cost_usd,
            )
        )
    return rows


def totals(rows: list[DemoRow]) -> dict[str, Any]:
    without_tokens = sum(r.without_tokens for r in rows)
    with_tokens = sum(r.with_tokens for r in rows)
    without_cost = sum(r.without_cost_usd for r in rows)
    with_cost = sum(r.with_cost_usd for r in rows)
    return {
        "requests": len(rows),
        "without_tokens": without_tokens,
        "with_tokens": with_tokens,
        "tokens_saved": without_tokens - with_tokens,
        "tokens_saved_pct": round(saved_pct(with_tokens, without_tokens), 1),
        "without_cost_usd": round(without_cost, 6),
        "with_cost_usd": round(with_cost, 6),
        "savings_usd": round(without_cost - with_cost, 6),
        "savings_pct": round(saved_pct(with_cost, without_cost), 1),
    }
