"""Strict JSON: every file attd writes parses with a parser that rejects NaN and Infinity."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from attd_core import RunSummary, json_text
from attd_core.runtime.metrics import MetricsWriter


def strict_loads(text: str) -> Any:
    """`json.loads` as browsers and jq read JSON: bare NaN and Infinity are errors."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


NAN, INF = float("nan"), float("inf")


def test_non_finite_numbers_become_null_at_any_depth():
    value = {"a": NAN, "b": [1.5, INF, {"c": -INF}], "d": (NAN, 2), "e": "nan", "f": 3}
    assert strict_loads(json_text(value)) == {
        "a": None,
        "b": [1.5, None, {"c": None}],
        "d": [None, 2],
        "e": "nan",
        "f": 3,
    }


def test_an_unserialisable_value_is_still_a_type_error():
    with pytest.raises(TypeError):
        json_text({"blob": b"x"})


def test_metrics_lines_are_strict_json_with_nested_non_finite_numbers(tmp_path):
    """A nested NaN used to raise ValueError from json.dumps(allow_nan=False)."""
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as metrics:
        metrics.write({"event": "eval", "loss": NAN, "per_class": {"a": INF, "b": 0.5}})
    (line,) = path.read_text().splitlines()
    assert strict_loads(line) == {
        "event": "eval",
        "loss": None,
        "per_class": {"a": None, "b": 0.5},
    }


def test_a_summary_with_non_finite_numbers_is_strict_json(tmp_path):
    entry = {"metrics": {"accuracy": NAN, "perplexity": INF}, "mean_k": 0.0, "seconds": 1.0}
    summary = RunSummary.model_validate(
        {
            "task": "parity",
            "eval": {"none": {**entry, "n": 4}},
            "backbone": "mamba",
            "train": {"steps": 1, "epochs": 1, "loss": NAN, "seconds": 1.0},
            "seed": 0,
            "device": "cpu",
            "output_dir": str(tmp_path),
        }
    )
    summary.write(tmp_path)
    data = strict_loads((tmp_path / "summary.json").read_text())
    assert data["train"]["loss"] is None
    assert data["eval"]["none"]["metrics"] == {"accuracy": None, "perplexity": None}
    assert math.isnan(summary.train.loss)  # the value in memory is left alone
