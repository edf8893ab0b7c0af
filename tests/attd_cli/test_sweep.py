"""`attd sweep` in-process on the parity task: the grid, its reports, skipping and resuming."""

from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner, Result

import attd_core
import attd_core._plugin as core_plugin
from attd_cli.app import app
from attd_cli.sweep import cell_name, parse_grid, plan_cells, split_values, sweep
from attd_core import ConfigError, NoOptions, TaskSpec, hookimpl
from attd_core.testing import ParityPlugin, new_plugin_manager

FAST = [
    "--set", "model.backbone.d_model=8",
    "--set", "model.backbone.n_layers=1",
    "--set", "model.backbone.d_state=4",
    "--set", "model.adapter.rank=1",
    "--set", "train.max_steps=2",
    "--set", "eval.limit=8",
]  # fmt: skip
LR = "train.lr=0.01,0.1"
D_MODEL = "model.backbone.d_model=8,16"
CELLS = [
    "train.lr=0.01,model.backbone.d_model=8",
    "train.lr=0.01,model.backbone.d_model=16",
    "train.lr=0.1,model.backbone.d_model=8",
    "train.lr=0.1,model.backbone.d_model=16",
]


class BrokenTaskPlugin:
    """The task `broken`, whose factory raises a TypeError (json.loads of its options)."""

    @hookimpl
    def attd_register(self, register: Any) -> None:
        register(TaskSpec(name="broken", summary="broken", factory="json:loads", config=NoOptions))


@pytest.fixture
def manager(fresh_plugin_manager: attd_core.PluginManager) -> attd_core.PluginManager:
    fresh_plugin_manager.add_plugin(core_plugin, name="core")
    fresh_plugin_manager.add_plugin(ParityPlugin(), name="parity")
    fresh_plugin_manager.add_plugin(BrokenTaskPlugin(), name="broken")
    return fresh_plugin_manager


def invoke(manager: attd_core.PluginManager, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "120"}, obj=manager)


def sweep_2x2(manager: attd_core.PluginManager, out: Path, *extra: str) -> Result:
    return invoke(
        manager, "sweep", "--task", "parity", *FAST, "--grid", LR, "--grid", D_MODEL,
        "--tta", "fixed:1", "--output-dir", str(out), *extra,
    )  # fmt: skip


def summary_times(out: Path) -> dict[str, int]:
    return {name: (out / name / "summary.json").stat().st_mtime_ns for name in CELLS}


def test_sweep_runs_the_grid_writes_reports_and_skips_finished_cells(manager, tmp_path):
    out = tmp_path / "sweep"
    result = sweep_2x2(manager, out)
    assert result.exit_code == 0, result.output
    for header in ("train.lr", "model.backbone.d_model", "tta", "accuracy", "mean k", "status"):
        assert header in result.stdout
    assert "wrote" in result.stdout and "sweep.md" in result.stdout

    report = json.loads((out / "sweep.json").read_text())
    assert report["grid"] == {"train.lr": [0.01, 0.1], "model.backbone.d_model": [8, 16]}
    assert report["counts"] == {"run": 4, "skipped": 0, "failed": 0}
    assert [cell["name"] for cell in report["cells"]] == CELLS
    first = report["cells"][0]
    assert first["values"] == {"train.lr": 0.01, "model.backbone.d_model": 8}
    assert first["overrides"] == ["train.lr=0.01", "model.backbone.d_model=8"]
    assert first["status"] == "run" and first["error"] is None and first["seconds"] > 0
    assert list(first["eval"]) == ["none", "fixed:1"] and first["eval"]["none"]["n"] == 8
    assert first["train"]["steps"] == 2
    for cell in report["cells"]:
        config = yaml.safe_load((out / cell["name"] / "config.yaml").read_text())
        assert config["train"]["lr"] == cell["values"]["train.lr"]
        assert config["model"]["backbone"]["d_model"] == cell["values"]["model.backbone.d_model"]
        assert config["model"]["backbone"]["n_layers"] == 1  # --set applies to every cell

    md = (out / "sweep.md").read_text()
    assert "# attd sweep: parity" in md and "4 cells (4 run, 0 skipped, 0 failed)" in md
    assert "| train.lr | model.backbone.d_model | tta | accuracy | loss | mean k | seconds |" in md
    rows = [line for line in md.splitlines() if line.startswith("| 0.")]
    assert len(rows) == 8  # 4 cells x (none, fixed:1)
    assert rows[1].startswith("| 0.01 | 8 | fixed:1 | ") and rows[1].endswith(" | run |")

    before = summary_times(out)
    again = sweep_2x2(manager, out)
    assert again.exit_code == 0, again.output
    assert again.stdout.count("finished, skipped") == 4
    assert summary_times(out) == before  # nothing trained again
    report = json.loads((out / "sweep.json").read_text())
    assert report["counts"] == {"run": 0, "skipped": 4, "failed": 0}
    assert report["cells"][0]["eval"] == first["eval"]
    assert "| 0.01 | 8 | none | " in (out / "sweep.md").read_text()

    changed = sweep_2x2(manager, out, "--set", "train.max_steps=3")
    assert changed.exit_code == 2, changed.output
    assert f"grid cell {CELLS[0]}: " in changed.stderr
    assert "finished with other settings (train.max_steps: 2 there, 3 now)" in changed.stderr


def test_a_half_done_cell_is_moved_aside_and_run_again(manager, tmp_path):
    out = tmp_path / "sweep"
    half = out / "train.lr=0.1"
    (half / "checkpoint").mkdir(parents=True)
    (half / "config.yaml").write_text("task: parity\n")
    (half / "metrics.jsonl").write_text('{"step": 1}\n')
    result = invoke(
        manager, "sweep", "--task", "parity", *FAST, "--grid", "train.lr=0.1",
        "--output-dir", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "unfinished run moved to" in result.stderr
    (moved,) = (out / ".incomplete").iterdir()
    assert moved.name.startswith("train.lr=0.1-")
    assert (moved / "config.yaml").read_text() == "task: parity\n"
    assert (half / "summary.json").is_file()
    assert json.loads((out / "sweep.json").read_text())["cells"][0]["status"] == "run"


def test_a_finished_cell_from_an_older_version_is_read_back(manager, tmp_path):
    """A cell whose entries hold accuracy alone (from before `metrics`) is skipped and shown."""
    out = tmp_path / "sweep"
    args = ["sweep", "--task", "parity", *FAST, "--grid", "train.lr=0.1", "--output-dir", str(out)]
    assert invoke(manager, *args).exit_code == 0
    path = out / "train.lr=0.1" / "summary.json"
    summary = json.loads(path.read_text())
    first_keys = ("accuracy", "mean_k", "seconds", "n")
    for key, entry in summary["eval"].items():
        summary["eval"][key] = {name: entry[name] for name in first_keys}
    path.write_text(json.dumps(summary))
    again = invoke(manager, *args)
    assert again.exit_code == 0, again.output
    assert "finished, skipped" in again.stdout
    (cell,) = json.loads((out / "sweep.json").read_text())["cells"]
    accuracy = summary["eval"]["none"]["accuracy"]
    assert cell["eval"]["none"]["metrics"] == {"accuracy": accuracy}
    assert f"| 0.1 | none | {accuracy:.4f} | 0.00 | " in (out / "sweep.md").read_text()


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(manager, tmp_path):
    out = tmp_path / "sweep"
    result = invoke(
        manager, "sweep", *FAST, "--grid", "task=broken,parity", "--output-dir", str(out)
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == (f"error: 1 of 2 cells failed (see {out}/sweep.md)")
    assert "failed task=broken: TypeError: " in result.stderr.replace("\n", " ")
    report = json.loads((out / "sweep.json").read_text())
    broken, parity = report["cells"]
    assert broken["status"] == "failed" and broken["error"].startswith("TypeError: ")
    assert "Traceback" in broken["traceback"] and broken["eval"] == {}
    assert parity["status"] == "run" and (out / "task=parity" / "summary.json").is_file()
    assert report["counts"] == {"run": 1, "skipped": 0, "failed": 1}
    md = (out / "sweep.md").read_text()
    assert "| broken | - | - | - | - | - | - | failed |" in md
    assert f"## Failed cells\n\n- `task=broken`: {broken['error']}" in md


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--grid", "train.lr=0.1,-1"],
            ["grid cell train.lr=-1: invalid config: train.lr", "-1"],
        ),
        (
            ["--grid", "train.lr=0.1", "--grid", "model.backbone.d_model=8,x"],
            ["grid cell train.lr=0.1,model.backbone.d_model=x: ", "model.backbone.d_model"],
        ),
        (["--grid", "train.lrr=0.1"], ["grid cell train.lrr=0.1: ", "train.lrr"]),
        (["--grid", "train.lr"], ["bad --grid 'train.lr': expected KEY=V1,V2,..."]),
        (["--grid", "train.lr=0.1,,0.2"], ["bad --grid 'train.lr=0.1,,0.2': an empty value"]),
        (["--grid", "train.lr=0.1,[1"], ["value '[1' is not valid YAML"]),
        (["--grid", "train.lr=0.1,0.1"], ["value '0.1' is given twice"]),
        (
            ["--grid", "train.lr=0.1", "--grid", "train.lr=0.2"],
            ["--grid train.lr overlaps --grid train.lr"],
        ),
        (
            ["--grid", "model.backbone=mamba", "--grid", "model.backbone.d_model=8"],
            ["--grid model.backbone.d_model overlaps --grid model.backbone"],
        ),
        (["--grid", "task=parity"], ["--grid task conflicts with --task"]),
        (["--grid", "runtime.seed=1,2", "--seed", "3"], ["conflicts with --seed"]),
        (["--grid", "runtime.output_dir=a"], ["conflicts with --output-dir"]),
        (["--grid", "eval.limit=4", "--jobs", "0"], ["--jobs"]),
        ([], ["Missing option '--grid'"]),
    ],
)
def test_bad_sweeps_fail_up_front_with_one_line(manager, tmp_path, args, fragments):
    out = tmp_path / "sweep"
    result = invoke(manager, "sweep", "--task", "parity", "--output-dir", str(out), *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert not out.exists()  # nothing trained, nothing written


def test_a_folder_that_holds_a_run_is_refused(manager, tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    result = invoke(
        manager,
        "sweep",
        "--task",
        "parity",
        "--grid",
        "eval.limit=4",
        "--output-dir",
        str(tmp_path),
    )
    assert result.exit_code == 2
    assert "holds a run (summary.json), not a sweep" in result.stderr


@pytest.mark.parametrize(
    ("text", "key", "values"),
    [
        ("train.lr=0.01,0.1", "train.lr", (0.01, 0.1)),
        ("model.backbone.d_model = 8, 16", "model.backbone.d_model", (8, 16)),
        ("model.backbone=mamba,transformer", "model.backbone", ("mamba", "transformer")),
        ("eval.tta=fixed:1,adaptive:5", "eval.tta", ("fixed:1", "adaptive:5")),
        ("eval.tta='fixed:3,lr=0.1',\"a,b\"", "eval.tta", ("fixed:3,lr=0.1", "a,b")),
        (
            "model.adapter=[delta-ssm, norm-affine],delta-ssm",
            "model.adapter",
            (["delta-ssm", "norm-affine"], "delta-ssm"),
        ),
        ("x={a: 1, b: [2, 3]},null,true,''", "x", ({"a": 1, "b": [2, 3]}, None, True, "")),
    ],
)
def test_grid_values_are_yaml_split_at_top_level_commas(text, key, values):
    axis = parse_grid(text)
    assert axis.key == key and axis.values == values


def test_split_values_keeps_escaped_quotes_and_nested_brackets():
    assert split_values('"a\\",b",[[1,2],[3]],{k: [4, 5]}') == [
        '"a\\",b"',
        "[[1,2],[3]]",
        "{k: [4, 5]}",
    ]


def test_cell_names_are_readable_safe_and_unique():
    hashed = cell_name([("train.lr", 0.01), ("eval.tta", "fixed:1")])
    assert hashed.startswith("train.lr=0.01,eval.tta=fixed_1-") and len(hashed) == 39
    assert cell_name([("train.lr", 0.01), ("model.backbone", "mamba")]) == (
        "train.lr=0.01,model.backbone=mamba"
    )
    unsafe = [cell_name([("x", value)]) for value in ("a/b", "a b", "a_b", [1, 2])]
    assert len(set(unsafe)) == 4 and all("/" not in name and " " not in name for name in unsafe)
    assert unsafe[2] == "x=a_b" and unsafe[0] != unsafe[1]
    long = cell_name([("task.some_option", "v" * 200)])
    assert len(long) == 100 and long == cell_name([("task.some_option", "v" * 200)])


def test_values_that_read_alike_are_refused():
    with pytest.raises(ConfigError, match="would share the folder 'x=1'"):
        plan_cells([parse_grid("x=1,'1'")])


@pytest.mark.slow
def test_jobs_run_cells_in_worker_processes(manager, tmp_path):
    out = tmp_path / "sweep"
    overrides = [flag for flag in FAST if flag != "--set"]
    report = sweep(
        manager,
        task="parity",
        preset=None,
        config_files=[],
        overrides=overrides,
        grid=["train.lr=0.01,0.1"],
        tta=[],
        seed=None,
        output_dir=out,
        jobs=2,
        console=Console(file=io.StringIO()),
        progress_console=Console(file=io.StringIO()),
        manager_factory=functools.partial(new_plugin_manager, parity=ParityPlugin()),
    )
    assert report["counts"] == {"run": 2, "skipped": 0, "failed": 0}, report["cells"]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for name in ("train.lr=0.01", "train.lr=0.1"):
        config = yaml.safe_load((out / name / "config.yaml").read_text())
        assert config["runtime"]["threads"] == max(1, (cpus or 1) // 2)
        assert (out / name / "summary.json").is_file()


def test_a_second_sweep_into_a_folder_is_refused_naming_it(manager, tmp_path):
    out = tmp_path / "sweep"
    with attd_core.lock_folder(out):  # a sweep still running there
        result = invoke(
            manager, "sweep", "--task", "parity", *FAST, "--grid", "train.lr=0.1",
            "--output-dir", str(out),
        )  # fmt: skip
        assert list(out.iterdir()) == []
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: sweep folder {str(out)!r} is in use by another")
    assert result.stderr.count("\n") == 1


def test_an_unfinished_cell_that_a_live_process_writes_is_not_moved(manager, tmp_path):
    out = tmp_path / "sweep"
    half = out / "train.lr=0.1"
    half.mkdir(parents=True)
    (half / "config.yaml").write_text("task: parity\n")
    with attd_core.lock_folder(half):  # `attd run --resume` finishing it
        result = invoke(
            manager, "sweep", "--task", "parity", *FAST, "--grid", "train.lr=0.1",
            "--output-dir", str(out),
        )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"unfinished cell folder {str(half)!r} is in use" in result.stderr
    assert (half / "config.yaml").is_file() and not (out / ".incomplete").exists()


def test_a_cell_whose_folder_another_run_writes_fails_alone(manager, tmp_path):
    out = tmp_path / "sweep"
    busy = out / "train.lr=0.1"
    with attd_core.lock_folder(busy):  # `attd run --output-dir` into the cell's folder
        result = invoke(
            manager, "sweep", "--task", "parity", *FAST, "--grid", "train.lr=0.1,0.01",
            "--output-dir", str(out),
        )  # fmt: skip
    assert result.exit_code == 2, result.output
    cells = {cell["name"]: cell for cell in json.loads((out / "sweep.json").read_text())["cells"]}
    assert cells["train.lr=0.1"]["status"] == "failed"
    assert f"output dir {str(busy)!r} is in use" in cells["train.lr=0.1"]["error"]
    assert cells["train.lr=0.01"]["status"] == "run"


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_sweep_folder_name_is_refused(manager, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    result = invoke(
        manager, "sweep", "--task", "parity", "--grid", "eval.limit=4", "--output-dir", name
    )
    assert result.exit_code == 2, result.output
    assert "--output-dir must name a folder" in result.stderr
    assert list(tmp_path.iterdir()) == []
