"""`attd data export` and `attd data info` on a real task (tiny ListOps) and fakes.

They need the `listops` task, so they live with attd-tasks-lra, whose test session
installs it (attd-cli's own session has no task plugins).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from attd_cli import data as data_module
from attd_cli.app import app
from attd_core import get_plugin_manager

TINY = ["--set", "num_train=20", "--set", "task.num_val=6", "--set", "num_test=10"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "120"})  # installed plugins


def test_export_writes_lra_rows_as_json_lines(tmp_path):
    out = tmp_path / "sub" / "test.jsonl"
    result = invoke("data", "export", "--task", "listops", *TINY, "--limit", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote 4 test examples of listops to {out}" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    task = get_plugin_manager().create(
        "task", "listops", {"num_train": 20, "num_val": 6, "num_test": 10}
    )
    assert rows == [task.load_split("test")[i] for i in range(4)]
    assert [path.name for path in out.parent.iterdir()] == ["test.jsonl"]


def test_export_follows_overrides_and_presets(tmp_path):
    out = tmp_path / "train.jsonl"
    args = ["--set", "max_depth=2", "--set", "min_length=3", "--set", "max_length=12"]
    result = invoke(
        "data", "export", "--task", "listops", "--preset", "cpu", *TINY, *args,
        "--split", "train", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20
    assert all(source_length(row["Source"]) < 12 for row in rows)


def source_length(source: str) -> int:
    return sum(symbol not in "()" for symbol in source.split())


def test_an_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "test.jsonl"
    calls = []

    def failing(task, example, index):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt
        return json.dumps(dict(example))

    monkeypatch.setattr(data_module, "record", failing)
    invoke("data", "export", "--task", "listops", *TINY, "--out", str(out))
    assert calls == [0, 1, 2] and list(tmp_path.iterdir()) == []


def test_export_refuses_a_folder_and_unknown_options(tmp_path):
    result = invoke("data", "export", "--task", "listops", "--out", str(tmp_path))
    assert result.exit_code == 2 and "is a folder" in result.stderr
    result = invoke("data", "export", "--task", "listops", "--set", "depth=3", "--out", "x")
    assert result.exit_code == 2 and "task.depth" in result.stderr and "max_depth" in result.stderr


def test_a_field_that_is_not_json_is_named():
    class Task:
        pass

    with pytest.raises(Exception, match="example 0: field 'blob' holds a bytes"):
        data_module.record(Task(), {"blob": b"x", "label": 1}, 0)


def test_a_non_finite_field_is_exported_as_null():
    """A missing value in a numeric column (NaN) used to be written as a bare NaN."""

    class Task:
        pass

    line = data_module.record(Task(), {"score": float("nan"), "label": 1}, 0)
    assert line == '{"score": null, "label": 1}'


def test_info_reports_sizes_lengths_and_label_counts():
    result = invoke("data", "info", "--task", "listops", *TINY, "--limit", "8", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert list(info) == ["train", "validation", "test"]
    assert [info[split]["size"] for split in info] == [20, 6, 10]
    assert [info[split]["measured"] for split in info] == [8, 6, 8]
    for entry in info.values():
        assert sum(entry["labels"].values()) == entry["measured"]
        assert 50 < entry["length"]["min"] <= entry["length"]["mean"] <= entry["length"]["max"]


def test_info_prints_a_table_for_chosen_splits():
    result = invoke("data", "info", "--task", "listops", *TINY, "--split", "validation")
    assert result.exit_code == 0, result.output
    assert "validation" in result.stdout and "train" not in result.stdout


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("afile/out.jsonl", "'{base}/afile' is not a folder"),
        ("afile/sub/out.jsonl", "cannot write there: Not a directory"),
        ("x" * 300 + ".jsonl", "cannot write there: File name too long"),
    ],
)
def test_export_checks_its_destination_before_generating(tmp_path, relative, reason):
    (tmp_path / "afile").write_text("")
    cache = tmp_path / "cache"
    out = tmp_path / relative
    result = invoke(
        "data", "export", "--task", "listops", *TINY, "--set", f"cache_dir={cache}",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: --out {str(out)!r}: {reason.format(base=tmp_path)}\n"
    assert not cache.exists()  # nothing was generated
