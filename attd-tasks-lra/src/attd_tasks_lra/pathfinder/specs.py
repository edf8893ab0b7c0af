"""The `pathfinder` and `pathx` tasks' registrations (options only: no torch, no datasets)."""

from __future__ import annotations

from attd_core import PluginSpec, TaskSpec
from attd_tasks_lra.pathfinder.options import PathfinderOptions, PathXOptions

# S4's Pathfinder settings from specs/lra.md: 6 x 256 with d_state 64, mean pooling, AdamW
# at lr 0.004 with 10% warm-up then cosine decay, batch 64, on LRA's 160k/20k/20k split.
PAPER_SIZES = {"task.num_train": 160_000, "task.num_val": 20_000, "task.num_test": 20_000}
PAPER = {
    **PAPER_SIZES,
    "model.backbone.d_model": 256,
    "model.backbone.n_layers": 6,
    "model.backbone.d_state": 64,
    "model.pooling": "masked-mean",
    "train.lr": 0.004,
    "train.batch_size": 64,
    "train.epochs": 200,
    "train.weight_decay": 0.05,
    "train.warmup_ratio": 0.1,
}
PATHFINDER_CPU = {"train.lr": 0.004}
PATHX_CPU = {"train.lr": 0.004}

SPECS: tuple[PluginSpec, ...] = (
    TaskSpec(
        name="pathfinder",
        summary="LRA Pathfinder: are two markers on one dashed contour? 32x32 pixels (2 classes)",
        factory="attd_tasks_lra.pathfinder.task:PathfinderTask",
        config=PathfinderOptions,
        run_defaults=PATHFINDER_CPU,
        presets={"cpu": PATHFINDER_CPU, "paper": PAPER},
    ),
    TaskSpec(
        name="pathx",
        summary="LRA Path-X: Pathfinder at 128x128 pixels, 16,384 tokens (2 classes)",
        factory="attd_tasks_lra.pathfinder.task:PathfinderTask",
        config=PathXOptions,
        run_defaults=PATHX_CPU,
        presets={"cpu": PATHX_CPU, "paper": PAPER},
    ),
)
