"""The same seed and config give bit-identical metrics on CPU; another seed does not."""

from __future__ import annotations

import json

from attd_core import resolve_run_config
from attd_core.runtime.run import run_experiment
from attd_core.testing import ParityPlugin, new_plugin_manager

SETTINGS = [
    "model.backbone.d_model=8",
    "model.backbone.n_layers=1",
    "model.backbone.d_state=4",
    "model.backbone.dropout=0.1",
    "model.adapter.rank=1",
    "train.max_steps=6",
    "train.log_every=1",
    "eval.tta=[fixed:2, adaptive:3]",
]


def records(manager, out, seed):
    resolved = resolve_run_config(
        manager, task="parity", overrides=SETTINGS, seed=seed, output_dir=out
    )
    run_experiment(resolved, manager)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    # wall-clock seconds are the only fields allowed to differ
    drop = {"seconds", "seconds_per_sample", "validation_seconds"}
    return [
        {key: value for key, value in json.loads(line).items() if key not in drop} for line in lines
    ]


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    manager = new_plugin_manager(parity=ParityPlugin())
    first = records(manager, tmp_path / "a", seed=5)
    assert first == records(manager, tmp_path / "b", seed=5)
    assert [r["event"] for r in first].count("eval") == 3
    assert first != records(manager, tmp_path / "c", seed=6)
