"""image-classification through whole runs (train, checkpoint, evaluate with TTA), tiny."""

from __future__ import annotations

import json
import math

import yaml

import attd_core

TINY = [
    "model.backbone.d_model=16",
    "model.backbone.n_layers=1",
    "model.backbone.d_state=4",
    "model.adapter.rank=1",
    "train.max_steps=3",
    "train.batch_size=8",
    "train.eval_batch_size=16",
    "eval.limit=12",
]


def run(manager, overrides, out, tta=("fixed:1",)):
    resolved = attd_core.resolve_run_config(
        manager,
        task="image-classification",
        tta=list(tta),
        overrides=[*TINY, *overrides],
        output_dir=out,
    )
    return resolved, attd_core.run_experiment(resolved, manager)


def check_summary(summary, n):
    assert list(summary.eval) == ["none", "fixed:1"]
    for result in summary.eval.values():
        assert result.n == n and 0.0 <= result.accuracy <= 1.0
    assert summary.eval["fixed:1"].mean_k == 1.0
    assert summary.train.steps == 3 and math.isfinite(summary.train.loss)


def test_digits_run_with_tta(manager, tmp_path):
    resolved, summary = run(manager, ["task.limit_train=64"], tmp_path / "run")
    check_summary(summary, 12)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["task"]["dataset"] == "digits"
    # float pixels by default: a corrupted pixel is still a value the encoder trained on
    assert config["task"]["encoder_options"] == {"mean": 0.5, "std": 0.5, "dtype": "float"}
    defaults = manager.get("task", "image-classification").run_defaults
    assert resolved.config.train.lr == defaults["train.lr"]  # the task's run defaults apply
    # the resolved config.yaml resolves again to the same run
    again = attd_core.resolve_run_config(manager, config_files=[tmp_path / "run" / "config.yaml"])
    assert again.config == resolved.config


def test_digits_as_patches_with_tta(manager, tmp_path):
    overrides = ["task.encoder=patches", "task.encoder_options.patch_size=2", "task.limit_train=32"]
    _, summary = run(manager, overrides, tmp_path / "run")
    check_summary(summary, 12)


def test_an_image_folder_run_with_tta(manager, split_folder, tmp_path):
    overrides = [
        f"task.dataset={split_folder}",
        f"task.cache_dir={tmp_path / 'hf-cache'}",
        "task.image_size=4",
        "task.encoder_options.dtype=int",
    ]
    _, summary = run(manager, overrides, tmp_path / "run")
    check_summary(summary, 4)  # the folder's own test split: two images per class
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    evals = [record for record in records if record["event"] == "eval"]
    assert {record["tta"] for record in evals} == {"none", "fixed:1"}


def test_a_bad_task_option_is_a_config_error_naming_the_key(manager):
    import pytest

    with pytest.raises(attd_core.ConfigError, match="task.encoder_options"):
        attd_core.resolve_run_config(
            manager,
            task="image-classification",
            overrides=["task.encoder_options.dtype=half"],
        )
    with pytest.raises(attd_core.ConfigError, match="task.limit_test"):
        attd_core.resolve_run_config(
            manager, task="image-classification", overrides=["task.limit_test=0"]
        )


def test_memo_views_adapt_under_fixed_adaptive_and_oracle(manager, tmp_path):
    """memo with the task's own augmentations (crops and noise of float pixels) runs
    through the evaluator with every kind of strategy."""
    overrides = ["task.limit_train=32", "eval.objective.name=memo", "eval.objective.views=2"]
    tta = ("fixed:1", "adaptive:2", "oracle:2")
    resolved, summary = run(manager, overrides, tmp_path / "run", tta=tta)
    assert resolved.config.eval.objective.name == "memo"
    assert list(summary.eval) == ["none", *tta]
    for result in summary.eval.values():
        assert result.n == 12 and 0.0 <= result.accuracy <= 1.0
    assert summary.eval["fixed:1"].mean_k == 1.0
    assert 0.0 <= summary.eval["adaptive:2"].mean_k <= 2.0
