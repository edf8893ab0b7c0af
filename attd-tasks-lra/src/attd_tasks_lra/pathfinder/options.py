"""Options of the `pathfinder` and `pathx` tasks: the generator's knobs plus data source
and input format."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from attd_tasks_lra.pathfinder.config import PathfinderGeneratorConfig, Resolution

GENERATED = "generated"
DIFFICULTY_FOLDERS = {6: "curv_baseline", 9: "curv_contour_length_9", 14: "curv_contour_length_14"}
"""The official data's folder for each contour length (easy, intermediate, hard)."""


class PathfinderOptions(PathfinderGeneratorConfig):
    """Generated images by default (LRA's Pathfinder: 32x32, contour length 14)."""

    dataset: str = Field(
        GENERATED,
        min_length=1,
        description=f"{GENERATED} (this config's generator, cached as Arrow) or the folder "
        "holding the official pathfinder{32,64,128,256}/ data; the official images are "
        "split 80/10/10 with `seed`, and num_train/num_val/num_test apply to generated data.",
    )
    input: Literal["tokens", "floats"] = Field(
        "tokens",
        description="tokens: pixel values 0..255 as tokens (LRA; vocab 257, pad 256); "
        "floats: values / 255 in [0, 1] through a linear encoder (S4).",
    )
    workers: int | None = Field(
        None, ge=1, le=4096, description="Processes generating images (default: every CPU)."
    )
    cache_dir: Path | None = Field(
        None,
        description="Where generated splits are cached (default $ATTD_CACHE_DIR or ~/.cache/attd).",
    )


class PathXOptions(PathfinderOptions):
    """Path-X: LRA's 128x128 images with hard (14-dash) contours, 16,384 tokens each."""

    resolution: Resolution = Field(128, description="Image side in pixels (Path-X: 128).")
