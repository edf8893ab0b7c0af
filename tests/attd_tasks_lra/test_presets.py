"""Every LRA task offers a cpu preset (its defaults) and a paper preset, and both resolve."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

import attd_tasks_lra._plugin as lra_plugin
from attd_core import TaskSpec, resolve_run_config, run_experiment
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


@pytest.mark.parametrize(
    ("task", "preset"), [("listops", "cpu"), ("listops", "cpu-long"), ("pathfinder", "cpu")]
)
def test_the_cpu_presets_train_a_few_steps(task, preset, tmp_path):
    """The preset as `attd run` resolves it, on a few generated examples: three optimiser
    steps, validation and the test evaluation run, and the loss stays finite."""
    manager = new_plugin_manager(lra=lra_plugin)
    small_data = ["task.num_train=96", "task.num_val=8", "task.num_test=8"]
    resolved = resolve_run_config(
        manager,
        task=task,
        preset=preset,
        overrides=[*small_data, f"task.cache_dir={tmp_path / 'cache'}", "train.max_steps=3"],
        output_dir=tmp_path / "run",
    )
    summary = run_experiment(resolved, manager, console=Console(file=io.StringIO()))
    assert summary.train.steps == 3 and math.isfinite(summary.train.loss)
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").open()]
    assert [r["step"] for r in records if r["event"] == "val"] == [3]
    assert summary.eval["none"].n == 8
