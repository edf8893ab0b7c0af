"""attd-plugin-example's registrations: attd_core's public API only, no torch."""

from __future__ import annotations

from collections.abc import Callable

from attd_core import PluginSpec, TaskSpec, hookimpl

from attd_plugin_example.options import MajorityOptions


@hookimpl
def attd_register(register: Callable[[PluginSpec], None]) -> None:
    register(
        TaskSpec(
            name="majority",
            summary="Synthetic: does token A occur more often than token B? (2 classes)",
            factory="attd_plugin_example.task:MajorityTask",
            config=MajorityOptions,
            run_defaults={
                "train.epochs": 3,
                "train.lr": 0.003,
                "model.backbone.d_model": 32,
                "model.backbone.n_layers": 1,
            },
        )
    )
