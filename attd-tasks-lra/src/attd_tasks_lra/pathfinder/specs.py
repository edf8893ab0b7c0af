"""The `pathfinder` and `pathx` tasks' registrations (options only: no torch, no datasets)."""

from __future__ import annotations

from attd_core import PluginSpec, TaskSpec
from attd_tasks_lra.pathfinder.options import PathfinderOptions, PathXOptions
from attd_tasks_lra.presets import S4

# The S4 settings at lr 0.004 and batch 64, on LRA's 160k/20k/20k split.
PAPER = {
    "task.num_train": 160_000,
    "task.num_val": 20_000,
    "task.num_test": 20_000,
    **S4,
    "train.lr": 0.004,
    "train.batch_size": 64,
    "train.epochs": 200,
}
# Validating every 50 of its 250 steps lets `attd report` draw the curve (bench/README.md:
# on 2 cores none of the settings tried left ln 2 within 15 minutes).
CPU = {"train.lr": 0.004, "train.eval_every": 50, "train.eval_limit": 500}

SPECS: tuple[PluginSpec, ...] = (
    TaskSpec(
        name="pathfinder",
        summary="LRA Pathfinder: are two markers on one dashed contour? 32x32 pixels (2 classes)",
        factory="attd_tasks_lra.pathfinder.task:PathfinderTask",
        config=PathfinderOptions,
        run_defaults=CPU,
        presets={"cpu": CPU, "paper": PAPER},
    ),
    TaskSpec(
        name="pathx",
        summary="LRA Path-X: Pathfinder at 128x128 pixels, 16,384 tokens (2 classes)",
        factory="attd_tasks_lra.pathfinder.task:PathfinderTask",
        config=PathXOptions,
        run_defaults=CPU,
        presets={"cpu": CPU, "paper": PAPER},
    ),
)
