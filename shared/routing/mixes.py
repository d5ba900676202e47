"""The cheapest mix of tiers that keeps a quality target, found on scored requests.

Each cheaper tier takes a band of difficulty (the cheapest tier the easiest requests), the strong model the rest.
A mix keeps a target when the share of the strong model's quality it keeps is at least the target on every
benchmark (robust) or on their average, each benchmark weighing the same. `calibrate` finds, for every target from
0.50 to 1.00, the cheapest mix that keeps it, with no threshold rising as the target does, and writes them as the
`Calibration` that planning reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from shared.routing.calibration import Calibration, TargetRow


@dataclass
class TierScores:
    """What calibration reads: per request its difficulty and benchmark, and each candidate's score and cost."""

    difficulty: np.ndarray
    benchmark: np.ndarray
    strong: np.ndarray
    strong_cost: np.ndarray
    tiers: dict[str, np.ndarray]  # scores, cheapest tier first
    tier_costs: dict[str, np.ndarray]


TARGETS = tuple(round(0.5 + 0.01 * step, 2) for step in range(51))


@dataclass
class OrderedScores:
    """Requests in difficulty order, with per-request loss and cost scaled so every benchmark weighs the same."""

    difficulty: np.ndarray
    ends: np.ndarray  # prefix lengths that keep ties whole, 0 first
    group: np.ndarray
    groups: int
    loss: list[np.ndarray]  # per tier then strong: share of its benchmark's strong quality lost
    cost: list[np.ndarray]  # per tier then strong: share of the (benchmark-balanced) always-strong cost

    @classmethod
    def of(cls, scores: TierScores) -> OrderedScores:
        order = np.argsort(scores.difficulty, kind="stable")
        ordered = scores.difficulty[order]
        _, group = np.unique(scores.benchmark[order], return_inverse=True)
        groups = int(group.max()) + 1
        strong = scores.strong[order]
        strong_cost = scores.strong_cost[order]
        quality_scale = groups * np.bincount(group, weights=strong)[group]
        cost_scale = groups * np.bincount(group, weights=strong_cost)[group]
        loss = [(strong - scores.tiers[t][order]) / quality_scale for t in scores.tiers] + [np.zeros(len(order))]
        cost = [scores.tier_costs[t][order] / cost_scale for t in scores.tiers] + [strong_cost / cost_scale]
        ends = np.concatenate([[0], np.nonzero(np.diff(ordered))[0] + 1, [len(ordered)]])
        return cls(ordered, ends, group, groups, loss, cost)

    def kept(self, bounds: list[int], robust: bool) -> float:
        """Quality kept when tier j takes positions bounds[j-1]..bounds[j] (the strong model the rest)."""
        lost = np.zeros(self.groups)
        start = 0
        for tier, end in enumerate(bounds):
            lost += np.bincount(self.group[start:end], weights=self.loss[tier][start:end], minlength=self.groups)
            start = end
        per_benchmark = 1.0 - lost * self.groups
        return float(per_benchmark.min() if robust else per_benchmark.mean())

    def spent(self, bounds: list[int]) -> float:
        total, start = 0.0, 0
        for tier, end in enumerate([*bounds, len(self.difficulty)]):
            total += float(self.cost[tier][start:end].sum())
            start = end
        return total

    @property
    def tiers(self) -> range:
        return range(len(self.loss) - 1)

    def longest_last_band(self, lower: list[int], target: float, robust: bool, limit: int) -> list[int] | None:
        """With the cheaper bands ending at `lower`, the furthest end of the last band that keeps the target."""
        start = lower[-1] if lower else 0
        fixed = np.zeros(self.groups)
        previous = 0
        for tier, end in enumerate(lower):
            fixed += np.bincount(self.group[previous:end], weights=self.loss[tier][previous:end], minlength=self.groups)
            previous = end
        last = self.loss[len(lower)]
        running = np.zeros((self.groups, len(self.difficulty) - start + 1))
        for index in range(self.groups):
            running[index, 1:] = np.cumsum(np.where(self.group[start:] == index, last[start:], 0.0))
        per_benchmark = 1.0 - (fixed[:, None] + running) * self.groups
        quality = per_benchmark.min(axis=0) if robust else per_benchmark.mean(axis=0)
        ends = self.ends[(self.ends >= start) & (self.ends <= limit)] - start
        keeps = np.minimum.accumulate(quality[ends] >= target - 1e-12)
        if not keeps[0]:
            return None
        return [*lower, start + int(ends[np.nonzero(keeps)[0][-1]])]

    def bounds_of(self, thresholds: list[float]) -> list[int]:
        """Where each tier's band ends when a request goes to the first tier whose threshold admits it."""
        bounds, previous = [], 0
        for threshold in thresholds:
            previous = max(previous, int(np.searchsorted(self.difficulty, threshold, side="right")))
            bounds.append(previous)
        return bounds

    def thresholds_of(self, bounds: list[int]) -> list[float]:
        return [float(self.difficulty[end - 1]) if end else -1.0 for end in bounds]


def cheapest_mix(
    ordered: OrderedScores, target: float, robust: bool, limits: list[int] | None = None, grid: int = 240
) -> list[int]:
    """The cheapest tier bands that keep `target`, each ending at or before its `limits` entry.

    The cheaper tiers' bands are tried on a grid of difficulty quantiles; the most expensive cheap tier then takes
    the longest band that keeps the target (every shorter one keeping it too), and the cheapest combination wins.
    """
    tiers = len(ordered.tiers)
    limits = limits or [len(ordered.difficulty)] * tiers
    positions = ordered.ends
    if len(positions) > grid:
        positions = np.unique(positions[np.linspace(0, len(positions) - 1, grid).round().astype(int)])
    best: tuple[float, list[int]] = (ordered.spent([0] * tiers), [0] * tiers)
    for lower in product(positions, repeat=tiers - 1):
        if list(lower) != sorted(lower) or any(end > limit for end, limit in zip(lower, limits, strict=False)):
            continue
        bounds = ordered.longest_last_band(list(map(int, lower)), target, robust, limits[-1])
        if bounds is not None and (cost := ordered.spent(bounds)) < best[0]:
            best = (cost, bounds)
    return best[1]


def calibrate(scores: TierScores, strong: str, stand_ins: dict[str, str], robust: bool) -> Calibration:
    """The cheapest mix for every target of `TARGETS`, its thresholds never rising as the target does."""
    ordered = OrderedScores.of(scores)
    tiers = list(scores.tiers)
    rows, limits = [], [len(ordered.difficulty)] * len(tiers)
    for target in TARGETS:
        bounds = cheapest_mix(ordered, target, robust, limits)
        limits = [max(bounds[: index + 1]) for index in range(len(bounds))]
        thresholds = ordered.thresholds_of(bounds)
        rows.append(
            TargetRow(
                target=target,
                thresholds={tier: round(value, 6) for tier, value in zip(tiers, thresholds, strict=True)},
                quality=round(ordered.kept(bounds, robust), 4),
                cost=round(ordered.spent(bounds), 4),
                strong_share=round(1 - bounds[-1] / len(ordered.difficulty), 4),
            )
        )
    return Calibration(strong=strong, tiers=tiers, stand_ins=stand_ins, robust=robust, rows=rows)
