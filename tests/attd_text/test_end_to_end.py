"""Both text tasks through a whole run (train, checkpoint, evaluate with TTA), tiny settings."""

from __future__ import annotations

import json
import math

import pytest
import yaml

import attd_core

TINY = [
    "model.backbone.d_model=16",
    "model.backbone.n_layers=1",
    "model.backbone.d_state=4",
    "model.adapter.rank=1",
    "train.max_steps=4",
    "train.batch_size=8",
    "train.eval_batch_size=16",
]


def run(manager, task, overrides, out, tta=("fixed:1",)):
    resolved = attd_core.resolve_run_config(
        manager, task=task, tta=list(tta), overrides=[*TINY, *overrides], output_dir=out
    )
    return resolved, attd_core.run_experiment(resolved, manager)


def eval_records(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {record["tta"]: record for record in map(json.loads, lines) if record["event"] == "eval"}


def test_text_classification_runs_with_tta(manager, files, tmp_path):
    data = files.csv(tmp_path / "reviews.csv", files.reviews(60))
    overrides = [
        f"task.data_files={data}",
        f"task.cache_dir={tmp_path / 'hf-cache'}",
        "task.test_fraction=0.2",
        "task.encoder_options.eos=true",
    ]
    resolved, summary = run(manager, "text-classification", overrides, tmp_path / "run")
    assert resolved.config.task.options()["encoder_options"] == {"eos": True, "cls": False}
    assert list(summary.eval) == ["none", "fixed:1"]
    for result in summary.eval.values():
        assert result.n == 12 and 0.0 <= result.accuracy <= 1.0
    assert summary.eval["fixed:1"].mean_k == 1.0
    records = eval_records(tmp_path / "run")
    assert all(math.isfinite(record["loss"]) for record in records.values())
    assert summary.train.steps == 4 and math.isfinite(summary.train.loss)


def test_language_modeling_runs_with_next_token_tta(manager, corpus, tmp_path):
    overrides = [f"task.path={corpus}", "task.block_size=32", "train.lr=0.01"]
    resolved, summary = run(manager, "language-modeling", overrides, tmp_path / "run")
    assert resolved.config.eval.objective.name == "next-token"  # the task's run default
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["eval"]["objective"]["name"] == "next-token"
    assert list(summary.eval) == ["none", "fixed:1"]
    assert summary.eval["fixed:1"].mean_k == 1.0
    for tta, record in eval_records(tmp_path / "run").items():
        assert record["n"] == summary.eval[tta].n > 0
        assert 1.0 < record["perplexity"] < 259 * 2, (
            record
        )  # trained a little: near uniform or better
        assert record["bits_per_byte"] == pytest.approx(record["loss"] / math.log(2))
        assert 0.0 <= record["accuracy"] <= 1.0
    assert summary.train.loss < math.log(259) + 0.5


def test_language_modeling_with_an_adaptive_calibrated_strategy(manager, corpus, tmp_path):
    overrides = [f"task.path={corpus}", "task.block_size=32", "task.limit_test=8"]
    tta = ["adaptive:2,controller=quantile"]
    _, summary = run(manager, "language-modeling", overrides, tmp_path / "run", tta=tta)
    result = summary.eval["adaptive:2,controller=quantile"]
    assert result.n == 8 and 0.0 <= result.mean_k <= 2.0


def test_cli_runs_text_classification(manager, files, tmp_path):
    pytest.importorskip("attd_cli")
    from typer.testing import CliRunner

    from attd_cli.app import app

    data = files.jsonl(tmp_path / "reviews.jsonl", files.reviews(40))
    out = tmp_path / "run"
    sets = [*TINY, f"task.data_files={data}", f"task.cache_dir={tmp_path / 'hf-cache'}"]
    args = ["run", "--task", "text-classification", "--tta", "fixed:1", "--output-dir", str(out)]
    args += [part for item in sets for part in ("--set", item)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "100"}, obj=manager)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "text-classification" and set(summary["eval"]) == {"none", "fixed:1"}


def test_cli_reports_a_missing_file_in_one_line(manager, tmp_path):
    pytest.importorskip("attd_cli")
    from typer.testing import CliRunner

    from attd_cli.app import app

    args = ["run", "--task", "language-modeling", "--set", f"task.path={tmp_path / 'none.txt'}"]
    args += ["--output-dir", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"}, obj=manager)
    assert result.exit_code == 2, result.output
    assert "task.path: file not found" in result.stderr and "Traceback" not in result.output
