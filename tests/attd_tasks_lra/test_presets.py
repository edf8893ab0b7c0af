"""Every LRA task offers a cpu preset (its defaults) and a paper preset, and both resolve."""

from __future__ import annotations

import pytest

import attd_tasks_lra._plugin as lra_plugin
from attd_core import TaskSpec, resolve_run_config
from attd_core.testing import new_plugin_manager

TASKS = [spec for spec in lra_plugin.SPECS if isinstance(spec, TaskSpec)]


@pytest.mark.parametrize("spec", TASKS, ids=lambda spec: spec.name)
def test_cpu_is_the_default_and_paper_is_the_s4_setting(spec):
    assert spec.presets["cpu"] == spec.run_defaults
    manager = new_plugin_manager(lra=lra_plugin)
    default = resolve_run_config(manager, task=spec.name).config
    assert resolve_run_config(manager, task=spec.name, preset="cpu").config == default
    paper = resolve_run_config(manager, task=spec.name, preset="paper").config
    backbone = paper.model.backbone.options()
    assert (backbone["d_model"], backbone["n_layers"], backbone["d_state"]) == (256, 6, 64)
    assert paper.train.warmup_ratio == 0.1 and paper.model.pooling == "masked-mean"
    assert paper.train.epochs > default.train.epochs
