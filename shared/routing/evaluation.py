"""How well a difficulty score routes, measured as RouteLLM measures routers.

Send the requests with the highest score to the strong model and the rest to the weak one. As the share of strong
calls p goes from 0 to 1, the routed quality goes from the weak model's to the strong model's; PGR(p) is the share
of that gap recovered. APGR is the area under PGR (random routing: 0.5), CPT(x) the least share of strong calls that
recovers x of the gap. Requests with equal scores are taken in random order, so ties are counted at their expected
value: the curve is exact and piecewise linear, and a constant score scores 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GapCurve:
    shares: np.ndarray  # share of strong calls at each tie-group boundary, 0 .. 1
    recovered: np.ndarray  # PGR at those shares

    @property
    def apgr(self) -> float:
        return float(np.trapezoid(self.recovered, self.shares))

    def cpt(self, level: float) -> float:
        """The least share of strong calls that recovers `level` of the gap (1.0 if never)."""
        above = np.nonzero(self.recovered >= level)[0]
        if not len(above):
            return 1.0
        end = above[0]
        if end == 0:
            return 0.0
        x0, x1 = self.shares[end - 1], self.shares[end]
        y0, y1 = self.recovered[end - 1], self.recovered[end]
        return float(x0 + (x1 - x0) * (level - y0) / (y1 - y0))


def gap_curve(score: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> GapCurve:
    """PGR as the share of strong calls grows, taking the highest scores first."""
    score, strong, weak = (np.asarray(a, dtype=float) for a in (score, strong, weak))
    gap = strong.mean() - weak.mean()
    if gap <= 0:
        raise ValueError("the strong model does not beat the weak one on these outcomes: no gap to recover")
    order = np.argsort(-score, kind="stable")
    gain = (strong - weak)[order]
    ordered = score[order]
    boundaries = np.nonzero(np.diff(ordered))[0] + 1  # where a tie group ends
    ends = np.concatenate([[0], boundaries, [len(score)]])
    cumulative = np.concatenate([[0.0], np.cumsum(gain)])[ends]
    count = len(score)
    return GapCurve(shares=ends / count, recovered=cumulative / count / gap)


def quality_and_cost(chosen: np.ndarray, scores: np.ndarray, costs: np.ndarray, strong: int) -> tuple[float, float]:
    """Quality kept and cost saved against always asking the strong model, for one model index per request."""
    rows = np.arange(len(chosen))
    kept = scores[rows, chosen].sum() / scores[:, strong].sum()
    saved = 1.0 - costs[rows, chosen].sum() / costs[:, strong].sum()
    return float(kept), float(saved)


def oracle_choice(scores: np.ndarray, cost_order: list[int], strong: int) -> np.ndarray:
    """Per request, the cheapest model that scores at least what the strong model scores."""
    chosen = np.full(len(scores), strong)
    for index in reversed(cost_order):
        chosen = np.where(scores[:, index] >= scores[:, strong], index, chosen)
    return chosen
