"""Routing: what a request is, how hard it is for a cheap model, and which model should answer it."""

from shared.routing.analysis import Analysis, RequestOptions, TierDecision, TokenCounts, analyze
from shared.routing.intent import Intent
from shared.routing.plan import Constraints, Estimate, Plan, PlanningError, baseline_estimate, plan
from shared.routing.skills import Skill

__all__ = [
    "Analysis",
    "Constraints",
    "Estimate",
    "Intent",
    "Plan",
    "PlanningError",
    "RequestOptions",
    "Skill",
    "TierDecision",
    "TokenCounts",
    "analyze",
    "baseline_estimate",
    "plan",
]
