"""The `listops` task's registration (options only: no torch, no datasets)."""

from __future__ import annotations

from attd_core import PluginSpec, TaskSpec
from attd_tasks_lra.listops.generator import PRESETS
from attd_tasks_lra.listops.options import ListOpsOptions
from attd_tasks_lra.presets import S4

# S4 trains ListOps at lr 0.01; with it one epoch of the small generator preset reaches
# 34-36% on 2 CPU cores in about a minute (1e-3 stays near the majority class).
CPU = {"train.lr": 0.01}
LRA_GENERATOR = PRESETS["lra"].model_dump(exclude={"seed"})
# LRA's data (the generator's `lra` preset) with the S4 settings, at lr 0.01 and batch 32.
PAPER = {
    **{f"task.{key}": value for key, value in LRA_GENERATOR.items()},
    **S4,
    "train.lr": 0.01,
    "train.batch_size": 32,
    "train.epochs": 40,
}

SPECS: tuple[PluginSpec, ...] = (
    TaskSpec(
        name="listops",
        summary="LRA ListOps: value of a nested MAX/MIN/MED/SM expression (10 classes)",
        factory="attd_tasks_lra.listops.task:ListOpsTask",
        config=ListOpsOptions,
        run_defaults=CPU,
        presets={"cpu": CPU, "paper": PAPER},
    ),
)
