"""`summary.json` through `RunSummary`: today's shape, older runs' shapes, and bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from attd_core import ConfigError, EvalSummary, RunSummary

FIRST_SHAPE = {  # `attd run` as first released: accuracy only, no regime, adapter or shift
    "task": "listops",
    "eval": {
        "none": {"accuracy": 0.25, "mean_k": 0.0, "seconds": 1.5, "n": 100},
        "fixed:3": {"accuracy": 0.5, "mean_k": 3.0, "seconds": 4.5, "n": 100},
    },
    "backbone": "mamba",
    "train": {"steps": 10, "epochs": 1, "loss": 1.25, "seconds": 30.0},
    "seed": 0,
    "device": "cpu",
    "output_dir": "runs/listops-20240101-000000",
}

BEFORE_METRICS = {  # regimes, costs and percentiles, but each entry's accuracy alone
    **FIRST_SHAPE,
    "adapter": "delta-ssm:rank=4",
    "scan_backend": "chunked",
    "eval": {
        "adaptive:8": {
            "accuracy": 0.75,
            "mean_k": 2.5,
            "p50_k": 2,
            "p90_k": 8,
            "seconds": 3.0,
            "seconds_per_sample": 0.03,
            "n": 100,
            "uses_labels": False,
            "adapter_parameters": 64,
        }
    },
    "train": {
        "regime": "controller",
        "steps": 10,
        "epochs": 1,
        "loss": 1.25,
        "seconds": 30.0,
        "controller": {"steps": 3, "loss": 0.5, "seconds": 2.0},
    },
}


def write(run_dir: Path, data: Any) -> Path:
    run_dir.mkdir(exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(data), encoding="utf-8")
    return run_dir


def test_the_first_summary_shape_still_loads(tmp_path):
    summary = RunSummary.read(write(tmp_path / "run", FIRST_SHAPE))
    assert summary.task == "listops" and summary.backbone == "mamba"
    assert summary.shift is None and summary.adapter is None and summary.scan_backend is None
    assert summary.train.regime == "base" and summary.train.controller is None
    fixed = summary.eval["fixed:3"]
    assert fixed.metrics == {"accuracy": 0.5} and fixed.accuracy == 0.5
    assert fixed.mean_k == 3.0 and fixed.n == 100 and fixed.seconds == 4.5
    assert fixed.p50_k is None and fixed.seconds_per_sample is None
    assert fixed.uses_labels is False and fixed.adapter_parameters is None


def test_a_summary_from_before_metrics_keeps_its_controller_phase(tmp_path):
    summary = RunSummary.read(write(tmp_path / "run", BEFORE_METRICS))
    assert summary.train.regime == "controller"
    assert summary.train.controller is not None and summary.train.controller.steps == 3
    entry = summary.eval["adaptive:8"]
    assert entry.metrics == {"accuracy": 0.75} and entry.p90_k == 8
    assert entry.adapter_parameters == 64


def test_accuracy_repeats_the_metric_and_is_none_without_one():
    classified = EvalSummary(metrics={"accuracy": 0.5, "loss": 0.7}, mean_k=1, seconds=1, n=2)
    modelled = EvalSummary(metrics={"perplexity": 3.0}, mean_k=1, seconds=1, n=2)
    assert classified.accuracy == 0.5 and modelled.accuracy is None


def test_writing_keeps_the_documented_shape_and_unknown_fields(tmp_path):
    data = {**FIRST_SHAPE, "from_a_newer_version": [1, 2]}
    data["eval"] = {"none": {**FIRST_SHAPE["eval"]["none"], "per_example": [True, False]}}
    run_dir = write(tmp_path / "run", data)
    RunSummary.read(run_dir).write(run_dir)
    written = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert written["from_a_newer_version"] == [1, 2]
    assert written["eval"]["none"]["per_example"] == [True, False]
    assert written["eval"]["none"]["metrics"] == {"accuracy": 0.25}
    assert "controller" not in written["train"]  # only the controller regime has one


def test_non_finite_numbers_are_written_as_null(tmp_path):
    summary = RunSummary.model_validate(FIRST_SHAPE)
    summary.train.loss = math.nan
    summary.eval["none"].metrics["loss"] = math.inf
    summary.write(tmp_path)
    text = (tmp_path / "summary.json").read_text(encoding="utf-8")
    written = json.loads(text)  # strict JSON: no NaN or Infinity
    assert written["train"]["loss"] is None and written["eval"]["none"]["metrics"]["loss"] is None
    assert RunSummary.read(tmp_path).train.loss is None


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (None, ["not found", "did not finish"]),
        ("{", ["not valid JSON"]),
        ("[]", ["is not a run summary"]),
        (json.dumps({**FIRST_SHAPE, "eval": {"none": {"n": 3}}}), ["eval.none.mean_k"]),
        (json.dumps({key: v for key, v in FIRST_SHAPE.items() if key != "eval"}), ["eval"]),
    ],
    ids=["missing", "not json", "not a mapping", "bad entry", "no eval"],
)
def test_a_bad_summary_is_a_one_line_error_naming_the_file(tmp_path, content, fragments):
    if content is not None:
        (tmp_path / "summary.json").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        RunSummary.read(tmp_path)
    message = str(caught.value)
    assert repr(str(tmp_path / "summary.json")) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message
