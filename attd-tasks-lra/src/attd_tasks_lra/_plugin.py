"""attd-tasks-lra's registrations: light, so `attd list-plugins` imports no torch."""

from __future__ import annotations

from collections.abc import Callable

from attd_core import PluginSpec, TaskSpec, hookimpl
from attd_tasks_lra.listops.options import ListOpsOptions


@hookimpl
def attd_register(register: Callable[[PluginSpec], None]) -> None:
    register(
        TaskSpec(
            name="listops",
            summary="LRA ListOps: value of a nested MAX/MIN/MED/SM expression (10 classes)",
            factory="attd_tasks_lra.listops.task:ListOpsTask",
            config=ListOpsOptions,
            # S4 trains ListOps at lr 0.01; with it one epoch of the small preset reaches
            # ~36% on 2 CPU cores in about a minute (1e-3 stays near the majority class).
            run_defaults={"train.lr": 0.01},
        )
    )
