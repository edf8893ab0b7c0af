"""The `listops` task's registration (options only: no torch, no datasets)."""

from __future__ import annotations

from attd_core import PluginSpec, TaskSpec
from attd_tasks_lra.listops.options import ListOpsOptions

SPECS: tuple[PluginSpec, ...] = (
    TaskSpec(
        name="listops",
        summary="LRA ListOps: value of a nested MAX/MIN/MED/SM expression (10 classes)",
        factory="attd_tasks_lra.listops.task:ListOpsTask",
        config=ListOpsOptions,
        # S4 trains ListOps at lr 0.01; with it one epoch of the small preset reaches
        # ~36% on 2 CPU cores in about a minute (1e-3 stays near the majority class).
        run_defaults={"train.lr": 0.01},
    ),
)
