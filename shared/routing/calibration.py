"""Calibration: which difficulties each tier can take while the traffic keeps a share of the strong model's quality.

Training scores every outcome with a model that never saw its benchmark, then asks of those outcomes: if every
request up to difficulty θ went to a cheaper tier and the rest to the strong model, what share of the strong model's
quality would be kept, and at what cost? For each quality target it keeps the largest such θ per tier, the most
expensive cheap tier first, then the cheaper ones inside it, so the mix as a whole keeps the target (on every
benchmark of the data, or on their average). A request goes to the cheapest tier whose threshold admits its
difficulty; the thresholds never rise with the target, so a higher target never sends a request to a cheaper tier.

The rows hold, per target, the thresholds and what the mix kept and cost on the calibration outcomes: the
cost-quality curve of the router.
"""

from __future__ import annotations

import bisect

from pydantic import BaseModel, Field, model_validator


class TargetRow(BaseModel):
    target: float
    thresholds: dict[str, float] = Field(description="Per tier: requests with difficulty up to this may go there.")
    quality: float = Field(description="Share of the strong model's quality the mix kept on the calibration data.")
    cost: float | None = Field(description="Cost of the mix relative to always-strong, where the data has prices.")
    strong_share: float = Field(description="Share of requests the mix sent to the strong model.")


class Calibration(BaseModel):
    strong: str = Field(description="The model (or tier) whose quality is 1.")
    tiers: list[str] = Field(description="The cheaper tiers, cheapest first.")
    stand_ins: dict[str, str] = Field(description="Per tier, what in the outcome data it was calibrated on.")
    robust: bool = Field(description="True: each target is kept on every benchmark, not only on their average.")
    rows: list[TargetRow] = Field(description="Ascending targets.")

    @model_validator(mode="after")
    def _consistent(self) -> Calibration:
        targets = [row.target for row in self.rows]
        if not targets or targets != sorted(targets):
            raise ValueError("rows must be in ascending target order")
        for row in self.rows:
            if set(row.thresholds) != set(self.tiers):
                raise ValueError(f"target {row.target}: thresholds for {sorted(row.thresholds)}, tiers {self.tiers}")
        return self

    def row(self, target: float) -> TargetRow:
        """The row for `target`: the first calibrated target at or above it, so the target is never undercut."""
        index = bisect.bisect_left([row.target for row in self.rows], target - 1e-9)
        return self.rows[min(index, len(self.rows) - 1)]

    def tier_for(self, difficulty: float, target: float) -> str | None:
        """The cheapest tier whose threshold admits `difficulty`, or None for the strong model."""
        thresholds = self.row(target).thresholds
        for tier in self.tiers:
            if difficulty <= thresholds[tier]:
                return tier
        return None
