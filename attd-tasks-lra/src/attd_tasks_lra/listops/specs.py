"""The `listops` task's registration (options only: no torch, no datasets)."""

from __future__ import annotations

from attd_core import PluginSpec, TaskSpec
from attd_tasks_lra.listops.generator import PRESETS
from attd_tasks_lra.listops.options import ListOpsOptions

# S4 trains ListOps at lr 0.01; with it one epoch of the small generator preset reaches
# ~36% on 2 CPU cores in about a minute (1e-3 stays near the majority class).
CPU = {"train.lr": 0.01}
LRA_GENERATOR = PRESETS["lra"].model_dump(exclude={"seed"})
# LRA's data (the generator's `lra` preset) with the S4 settings of specs/lra.md: 6 x 256,
# mean pooling, AdamW at lr 0.01 with 10% warm-up then cosine decay, batch 32.
PAPER = {
    **{f"task.{key}": value for key, value in LRA_GENERATOR.items()},
    "model.backbone.d_model": 256,
    "model.backbone.n_layers": 6,
    "model.pooling": "masked-mean",
    "train.lr": 0.01,
    "train.batch_size": 32,
    "train.epochs": 40,
    "train.weight_decay": 0.05,
    "train.warmup_ratio": 0.1,
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
