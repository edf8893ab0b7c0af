"""The Pathfinder generator's config: every knob, validated, and the drawing parameters it
resolves to.

Kept apart from `generator` (numpy, the drawing code) because the tasks' options
subclass it, and `attd list-plugins` imports the options of every task: listing must
not import numpy.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

Resolution = Literal[32, 64, 128, 256]

# Per-resolution drawing parameters of specs/lra.md; the distractor count there is a budget
# divided by the distractor length (e.g. 20 // dl at 32). `contrast` is the gain applied to a
# dash's pixel coverage; at 32 it is the spec's snake contrast 2 times paddle contrast 0.75.
# Margin 2 at 128, where the spec says 2-3: the smaller margin of LRA's range keeps the
# 4-pixel gaps between dashes twice those at 64, in proportion to the image, and one value
# keeps an image's parameters fixed by its config (margin=3 remains a config override).
_TABLE: dict[int, dict[str, float]] = {
    32: dict(margin=1, padding=1, paddle_length=2, paddle_thickness=0.5, marker_radius=1.5,
             seed_distance=7, continuity=1.0, distractor_budget=20, contrast=1.5),
    64: dict(margin=1, padding=1, paddle_length=5, paddle_thickness=1.0, marker_radius=2.5,
             seed_distance=12, continuity=1.8, distractor_budget=22, contrast=0.8),
    128: dict(margin=2, padding=1, paddle_length=5, paddle_thickness=1.5, marker_radius=3.0,
              seed_distance=20, continuity=1.8, distractor_budget=35, contrast=0.9),
    256: dict(margin=3, padding=22, paddle_length=5, paddle_thickness=2.0, marker_radius=5.0,
              seed_distance=27, continuity=1.8, distractor_budget=30, contrast=1.0),
}  # fmt: skip


class ResolvedParameters(NamedTuple):
    """Concrete drawing parameters of a config: the overrides, else the resolution's table."""

    resolution: int
    contour_length: int
    distractor_length: int
    num_distractors: int
    margin: int
    padding: int
    paddle_length: int
    paddle_thickness: float
    marker_radius: float
    seed_distance: int
    continuity: float
    contrast: float


class PathfinderGeneratorConfig(BaseModel):
    """Every knob of the generator; None fields take the resolution's values from the spec."""

    # Built on first use, not at import: listing plugins imports every options model.
    # Floats must be finite; counts have upper bounds, stated in the error.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)

    resolution: Resolution = Field(
        32, description="Image side in pixels: 32 is LRA's Pathfinder, 128 is Path-X."
    )
    contour_length: int = Field(
        14,
        ge=2,
        le=1000,
        description="Dashes per target contour: 6 easy (curv_baseline), 9 intermediate, 14 hard. "
        "Distractor contours have contour_length // 3 dashes (at least 1).",
    )
    margin: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Radius in pixels of the disc that dilates each dash's occupancy footprint; "
        "it keeps dashes apart and sets the gap between a contour's dashes to 2 * margin.",
    )
    padding: int | None = Field(
        None, ge=0, le=127, description="Border in pixels that no dash may enter."
    )
    paddle_length: int | None = Field(None, ge=1, le=64, description="Dash length in pixels.")
    paddle_thickness: float | None = Field(
        None, gt=0.0, le=16.0, description="Dash width in pixels (anti-aliased)."
    )
    marker_radius: float | None = Field(
        None, gt=0.0, le=32.0, description="Radius in pixels of the two marker discs."
    )
    seed_distance: int | None = Field(
        None,
        ge=1,
        le=127,
        description="Distance in pixels between the starts of the two target contours; the "
        "first starts at least twice this far from the border.",
    )
    continuity: float | None = Field(
        None,
        ge=0.0,
        le=100.0,
        description="A dash turning by dtheta from the previous one is weighted by "
        "cos(min(dtheta * continuity, pi/2))^2: higher means straighter contours.",
    )
    num_distractors: int | None = Field(
        None,
        ge=0,
        le=10_000,
        description="Distractor contours to try to place (default: the resolution's budget "
        "20, 22, 35 or 30 divided by the distractor length).",
    )
    contrast: float | None = Field(
        None,
        gt=0.0,
        le=16.0,
        description="Gain on a dash pixel's coverage (the fraction of the pixel the dash "
        "covers), clipped to 1; marker discs have gain 1. 1.5 at 32 (the spec's contrast 2 "
        "times paddle contrast 0.75) makes 0.5-pixel-wide dashes 0.75 bright.",
    )
    # At most 10 million images per split: 50x the official Pathfinder's 200,000.
    num_train: int = Field(8000, ge=1, le=10_000_000, description="Images in the train split.")
    num_val: int = Field(1000, ge=1, le=10_000_000, description="Images in the validation split.")
    num_test: int = Field(1000, ge=1, le=10_000_000, description="Images in the test split.")
    seed: int = Field(
        0, ge=0, description="Image i is drawn from np.random.default_rng([seed, i])."
    )

    def resolved(self) -> ResolvedParameters:
        """The drawing parameters, with None fields filled from the resolution's table."""
        table = _TABLE[self.resolution]
        distractor_length = max(1, self.contour_length // 3)

        def pick(name: str) -> float:
            value = getattr(self, name)
            return table[name] if value is None else value

        num_distractors = self.num_distractors
        if num_distractors is None:
            num_distractors = int(table["distractor_budget"]) // distractor_length
        return ResolvedParameters(
            resolution=self.resolution,
            contour_length=self.contour_length,
            distractor_length=distractor_length,
            num_distractors=num_distractors,
            margin=int(pick("margin")),
            padding=int(pick("padding")),
            paddle_length=int(pick("paddle_length")),
            paddle_thickness=float(pick("paddle_thickness")),
            marker_radius=float(pick("marker_radius")),
            seed_distance=int(pick("seed_distance")),
            continuity=float(pick("continuity")),
            contrast=float(pick("contrast")),
        )

    @model_validator(mode="after")
    def _check_fits(self) -> PathfinderGeneratorConfig:
        p = self.resolved()
        size = p.resolution
        if 4 * p.seed_distance >= size:
            raise ValueError(
                f"seed_distance ({p.seed_distance}) must be below resolution / 4 "
                f"({size / 4:g}): the first target contour starts at least 2 * seed_distance "
                "from every border"
            )
        # Every other dash of a contour has a footprint disjoint from all others, of at least
        # paddle_length x margin pixels (half the band within the margin of the dash): a
        # necessary condition, so it never rejects a feasible config; RuntimeError covers the rest.
        needed = 2 * math.ceil(p.contour_length / 2) * max(1, p.paddle_length * p.margin)
        free = (size - 2 * p.padding) ** 2
        if needed > free:
            raise ValueError(
                f"contour_length ({p.contour_length}) is too long for a {size}x{size} image: "
                f"two target contours need at least {needed} free pixels and the image has "
                f"{free} inside its padding"
            )
        return self
