"""`attd compare` and `attd eval` in-process, on one tiny run trained once for the module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from typer.testing import CliRunner, Result

import attd_core
import attd_core._plugin as core_plugin
import attd_core.runtime.run as runtime_run
from attd_cli.app import app
from attd_core import ShiftSpec, hookimpl
from attd_core.testing import ParityPlugin

SNAPSHOTS = Path(__file__).parent / "snapshots"
STABLE_ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", "TERMINAL_WIDTH": None}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = [
    "--set", "model.backbone.d_model=8",
    "--set", "model.backbone.n_layers=1",
    "--set", "model.backbone.d_state=4",
    "--set", "model.adapter.rank=1",
    "--set", "train.max_steps=2",
    "--set", "eval.limit=8",
]  # fmt: skip
LIMIT = ["--set", "eval.limit=12"]


class FlipOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    positional: ClassVar[tuple[str, ...]] = ("p",)

    p: float = Field(0.5, ge=0, le=1)


class FlipShift:
    """Swaps tokens 1 and 2 with probability p; counts its calls."""

    calls: ClassVar[int] = 0

    def __init__(self, options: FlipOptions) -> None:
        self.p = options.p

    def apply(self, batch: attd_core.Batch, generator: Any) -> attd_core.Batch:
        type(self).calls += 1
        flip = torch.rand(batch.inputs.shape, generator=generator) < self.p
        flipped = torch.where(batch.inputs > 0, 3 - batch.inputs, batch.inputs)
        return replace(
            batch, inputs=torch.where(flip.to(batch.inputs.device), flipped, batch.inputs)
        )


class FlipPlugin:
    @hookimpl
    def attd_register(self, register: Any) -> None:
        register(
            ShiftSpec(
                name="flip",
                summary="swap tokens 1 and 2",
                factory=f"{__name__}:FlipShift",
                config=FlipOptions,
            )
        )


@pytest.fixture(scope="module")
def manager() -> attd_core.PluginManager:
    manager = attd_core.PluginManager(autoload=False, environ={})
    manager.add_plugin(core_plugin, name="core", distribution="attd-core")
    manager.add_plugin(ParityPlugin(), name="parity")
    manager.add_plugin(FlipPlugin(), name="flip")
    return manager


def invoke(manager: attd_core.PluginManager, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=STABLE_ENV, obj=manager)


@pytest.fixture(scope="module")
def trained(manager, tmp_path_factory) -> Path:
    """A finished run; tests that change it work on a copy (see `run_copy`)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = invoke(manager, "run", "--task", "parity", *TINY, "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture
def captured(monkeypatch) -> list[dict[str, Any]]:
    """The EvalResults that `evaluate_strategies` returns, one dict per call."""
    calls: list[dict[str, Any]] = []
    original = runtime_run.evaluate_strategies

    def spy(*args: Any, **kwargs: Any) -> Any:
        results = original(*args, **kwargs)
        calls.append(results)
        return results

    monkeypatch.setattr(runtime_run, "evaluate_strategies", spy)
    monkeypatch.setattr(attd_core, "evaluate_strategies", spy)  # as the CLI imports it
    return calls


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


def test_compare_writes_json_markdown_and_png(manager, run_copy, captured):
    before = set(os.listdir(run_copy))
    result = invoke(
        manager, "compare", str(run_copy), "--tta", "fixed:1", "--tta", "oracle:2", *LIMIT
    )
    assert result.exit_code == 0, result.output
    assert set(os.listdir(run_copy)) - before == {"compare.json", "compare.md", "compare.png"}
    for fragment in ("none", "fixed:1", "oracle:2 (uses labels)", "p90 k", "compare.png"):
        assert fragment in result.stdout

    report = json.loads((run_copy / "compare.json").read_text())
    assert report["strategies"] == ["none", "fixed:1", "oracle:2"]
    assert list(report["shifts"]) == ["clean"]
    assert report["task"] == "parity" and report["limit"] == 12 and report["split"] == "test"
    (results,) = captured
    clean = report["shifts"]["clean"]
    assert list(clean) == list(results) == ["none", "fixed:1", "oracle:2"]
    for canonical, evaluated in results.items():
        entry = clean[canonical]
        assert entry["accuracy"] == evaluated.metrics["accuracy"]
        assert entry["mean_k"] == evaluated.mean_k
        assert entry["p50_k"] == evaluated.k_percentile(50)
        assert entry["p90_k"] == evaluated.k_percentile(90)
        assert entry["seconds_per_sample"] == evaluated.seconds / evaluated.n
        assert entry["n"] == evaluated.n == 12
        assert entry["uses_labels"] is evaluated.uses_labels
        assert entry["adapter_parameters"] == evaluated.adapter_parameters
        assert entry["stats"] == evaluated.stats
        assert entry["k_histogram"] == {
            str(k): c for k, c in sorted(Counter(evaluated.steps).items())
        }
    assert [clean[c]["uses_labels"] for c in clean] == [False, False, True]
    assert clean["none"]["k_histogram"] == {"0": 12}
    assert clean["fixed:1"]["k_histogram"] == {"1": 12}
    assert clean["fixed:1"]["adapter_parameters"] > 0
    assert clean["none"]["paired"] is None and "correct" not in clean["none"]
    for canonical in ("fixed:1", "oracle:2"):
        none, other = results["none"].correct, results[canonical].correct
        paired = clean[canonical]["paired"]
        assert paired["n"] == 12 and paired["seed"] == report["seed"]
        pairs = list(zip(none, other, strict=True))
        assert paired["wrong_to_right"] == sum(not a and b for a, b in pairs)
        assert paired["right_to_wrong"] == sum(a and not b for a, b in pairs)
        assert paired["difference"] == pytest.approx(
            clean[canonical]["accuracy"] - clean["none"]["accuracy"]
        )
    assert "against none" in result.stdout and "McNemar p" in result.stdout

    md = (run_copy / "compare.md").read_text()
    assert "## clean" in md
    assert "| tta | accuracy | vs none [CI] | McNemar p | flips +/- | mean k |" in md
    assert "paired bootstrap interval" in md
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["none", "fixed:1", "oracle:2"]
    assert "(uses labels)" in rows[2] and "| yes |" in rows[2] and "| no |" in rows[0]
    assert "upper bound" in md

    png = (run_copy / "compare.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    assert not [name for name in os.listdir(run_copy) if name.startswith(".")]


def test_compare_into_an_80_column_pipe_cuts_no_name_or_column(manager, trained, tmp_path):
    args = ["compare", str(trained), "--tta", "fixed:1", "--tta", "oracle:2", *LIMIT]
    args += ["--output", str(tmp_path / "narrow")]
    env = {**STABLE_ENV, "COLUMNS": "80"}
    result = CliRunner().invoke(app, args, env=env, obj=manager)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout and all(len(line) <= 80 for line in lines)
    for name in ("none", "fixed:1", "oracle:2"):
        assert any(line.startswith(f"│ {name} ") for line in lines), name
    header = "\n".join(line for line in lines if line.startswith("┃"))
    for word in ("tta", "accuracy", "mean", "p50", "p90", "s/sample", "n", "uses", "labels"):
        assert f" {word} " in header, word


def test_compare_with_shifts_has_a_section_per_shift(manager, trained, tmp_path):
    FlipShift.calls = 0
    stem = tmp_path / "shifted"
    result = invoke(
        manager, "compare", str(trained), "--tta", "fixed:1", "--shift", "flip:1.0",
        "--shift", "flip", *LIMIT, "--output", str(stem),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "shifted.json").read_text())
    assert list(report["shifts"]) == ["flip:1.0", "flip"]
    for entries in report["shifts"].values():
        assert list(entries) == ["none", "fixed:1"] and entries["none"]["n"] == 12
    assert FlipShift.calls > 0
    md = (tmp_path / "shifted.md").read_text()
    assert "## flip:1.0" in md and "## flip" in md and "## clean" not in md
    assert (tmp_path / "shifted.png").read_bytes().startswith(PNG_MAGIC)
    assert not (trained / "compare.json").exists()


def test_eval_adds_an_entry_to_the_summary_and_a_metrics_line(manager, run_copy):
    lines = (run_copy / "metrics.jsonl").read_text().splitlines()
    result = invoke(manager, "eval", str(run_copy), "--tta", "fixed:k=2", *LIMIT)
    assert result.exit_code == 0, result.output
    assert "fixed:2" in result.stdout and "accuracy" in result.stdout
    summary = json.loads((run_copy / "summary.json").read_text())
    assert list(summary["eval"]) == ["none", "fixed:2"]
    assert summary["eval"]["fixed:2"]["mean_k"] == 2.0 and summary["eval"]["fixed:2"]["n"] == 12
    assert summary["task"] == "parity" and "train" in summary  # the rest is kept
    new = (run_copy / "metrics.jsonl").read_text().splitlines()
    assert new[: len(lines)] == lines and len(new) == len(lines) + 1
    record = json.loads(new[-1])
    assert record["event"] == "eval" and record["tta"] == "fixed:2" and record["n"] == 12
    assert "shift" not in record

    result = invoke(manager, "eval", str(run_copy), "--tta", "none", "--shift", "flip:1.0", *LIMIT)
    assert result.exit_code == 0, result.output
    summary = json.loads((run_copy / "summary.json").read_text())
    assert list(summary["eval"]) == ["none", "fixed:2", "none@flip:1.0"]
    record = json.loads((run_copy / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["tta"] == "none" and record["shift"] == "flip:1.0"
    assert not [name for name in os.listdir(run_copy) if name.startswith(".")]


def test_eval_compares_with_the_runs_none_on_the_same_examples(manager, run_copy):
    result = invoke(manager, "eval", str(run_copy), "--tta", "fixed:2")  # the run's limit
    assert result.exit_code == 0, result.output
    summary = json.loads((run_copy / "summary.json").read_text())
    none, fixed = summary["eval"]["none"], summary["eval"]["fixed:2"]
    paired = fixed["paired"]
    assert paired["n"] == fixed["n"] == none["n"] == 8
    ups = sum(a == "0" and b == "1" for a, b in zip(none["correct"], fixed["correct"], strict=True))
    assert paired["wrong_to_right"] == ups
    assert paired["difference"] == pytest.approx(fixed["accuracy"] - none["accuracy"])
    assert "against none" in result.stdout and "McNemar p" in result.stdout

    result = invoke(manager, "eval", str(run_copy), "--tta", "fixed:1", *LIMIT)  # 12 examples
    assert result.exit_code == 0, result.output
    assert json.loads((run_copy / "summary.json").read_text())["eval"]["fixed:1"]["paired"] is None
    assert "No paired comparison with `none`" in result.stdout.replace("\n", " ")


def test_eval_extends_a_summary_from_an_older_version(manager, run_copy):
    """Entries from before `metrics` was recorded hold accuracy alone; they stay readable."""
    path = run_copy / "summary.json"
    summary = json.loads(path.read_text())
    old = {name: summary["eval"]["none"][name] for name in ("accuracy", "mean_k", "seconds", "n")}
    path.write_text(json.dumps({**summary, "eval": {"none": old}}))
    result = invoke(manager, "eval", str(run_copy), "--tta", "fixed:1", *LIMIT)
    assert result.exit_code == 0, result.output
    written = json.loads(path.read_text())
    assert list(written["eval"]) == ["none", "fixed:1"]
    assert written["eval"]["none"]["metrics"] == {"accuracy": old["accuracy"]}
    assert written["eval"]["none"]["mean_k"] == old["mean_k"]
    assert written["eval"]["fixed:1"]["n"] == 12


def _truncate_weights(run: Path) -> None:
    weights = run / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _drop_checkpoint(run: Path) -> None:
    shutil.rmtree(run / "checkpoint")


@pytest.mark.parametrize("command", ["compare", "eval"])
@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (_truncate_weights, ["model.safetensors", "truncated"]),
        (_drop_checkpoint, ["metadata.json", "missing"]),
    ],
)
def test_a_broken_checkpoint_is_one_line_and_writes_nothing(
    manager, run_copy, command, damage, fragments
):
    damage(run_copy)
    before = {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()}
    result = invoke(manager, command, str(run_copy), "--tta", "fixed:1")
    assert_user_error(result, str(run_copy), *fragments)
    after = {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()}
    assert after == before


@pytest.mark.parametrize("command", ["compare", "eval"])
def test_bad_run_folders_are_one_line_errors(manager, tmp_path, command):
    missing = tmp_path / "missing"
    assert_user_error(
        invoke(manager, command, str(missing), "--tta", "fixed:1"),
        f"run folder {str(missing)!r} not found",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(
        invoke(manager, command, str(empty), "--tta", "fixed:1"),
        f"{str(empty)!r} is not a run folder: it has no config.yaml",
    )
    assert list(empty.iterdir()) == []


def test_compare_needs_a_tta(manager, trained):
    assert_user_error(invoke(manager, "compare", str(trained)), "at least one --tta")


@pytest.mark.parametrize("command", ["compare", "eval"])
def test_an_unknown_shift_is_one_line(manager, trained, command):
    result = invoke(manager, command, str(trained), "--tta", "fixed:1", "--shift", "nope")
    assert_user_error(result, "unknown shift 'nope'; available: flip")


def test_eval_needs_a_finished_run(manager, run_copy):
    (run_copy / "summary.json").unlink()
    result = invoke(manager, "eval", str(run_copy), "--tta", "fixed:1")
    assert_user_error(result, "summary.json", "did not finish")
    assert not (run_copy / "summary.json").exists()


def test_a_bad_tta_or_override_is_one_line(manager, trained):
    assert_user_error(invoke(manager, "compare", str(trained), "--tta", "bogus"), "bogus")
    result = invoke(manager, "eval", str(trained), "--tta", "fixed:1", "--set", "eval.limit=0")
    assert_user_error(result, "eval.limit")
    assert not (trained / "compare.json").exists()


@pytest.mark.parametrize(
    ("args", "snapshot"),
    [
        (["compare", "--help"], "attd_compare_help.txt"),
        (["eval", "--help"], "attd_eval_help.txt"),
    ],
)
def test_help_matches_its_snapshot(manager, args, snapshot):
    result = invoke(manager, *args)
    assert result.exit_code == 0
    shown = "".join(f"{line.rstrip()}\n" for line in result.stdout.splitlines())
    path = SNAPSHOTS / snapshot
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(shown, encoding="utf-8")
    assert shown == path.read_text(encoding="utf-8"), (
        f"help changed; if intended, rerun with UPDATE_SNAPSHOTS=1 and review {path}"
    )


def test_help_imports_neither_torch_nor_matplotlib():
    probe = (
        "import sys\n"
        "from attd_cli.app import main\n"
        "try:\n    main(['compare', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(','.join(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == ""


def test_compare_writes_into_a_folder_it_creates(manager, trained, tmp_path):
    stem = tmp_path / "missing" / "deeper" / "cmp"
    result = invoke(
        manager, "compare", str(trained), "--tta", "fixed:1", *LIMIT, "--output", str(stem)
    )
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in stem.parent.iterdir()) == ["cmp.json", "cmp.md", "cmp.png"]


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("afile/cmp", "--output '{base}/afile/cmp.json': '{base}/afile' is not a folder"),
        (
            "afile/sub/cmp",
            "--output '{base}/afile/sub/cmp.json': cannot write there: Not a directory",
        ),
        ("x" * 300, "--output '{base}/{long}.json': cannot write there: File name too long"),
    ],
)
def test_compare_checks_its_output_before_evaluating(
    manager, trained, tmp_path, captured, relative, reason
):
    (tmp_path / "afile").write_text("")
    stem = tmp_path / relative
    result = invoke(manager, "compare", str(trained), "--tta", "fixed:1", "--output", str(stem))
    assert_user_error(result, reason.format(base=tmp_path, long="x" * 300))
    assert captured == []  # nothing was evaluated


def test_compare_refuses_an_empty_output_stem(manager, trained):
    result = invoke(manager, "compare", str(trained), "--tta", "fixed:1", "--output", "")
    assert_user_error(result, "--output '.': give a file stem")


def test_eval_records_its_result_holding_the_run_folders_lock(manager, run_copy, monkeypatch):
    """Evaluations of one run may go on at once: each records its entry under the folder's
    lock (reading the summary again), so none overwrites another's."""
    from attd_cli.evaluate import evaluate_run

    waiting = threading.Event()
    real = attd_core.lock_folder

    def telling(*args: Any, **kwargs: Any) -> attd_core.FolderLock:
        return real(*args, **{**kwargs, "on_wait": waiting.set})

    monkeypatch.setattr(attd_core, "lock_folder", telling)
    finished: list[Any] = []

    def evaluate() -> None:
        quiet = Console(quiet=True)
        finished.append(
            evaluate_run(
                manager, run_copy, tta="fixed:1", shift=None, overrides=["eval.limit=12"],
                console=quiet, progress_console=quiet,
            )
        )  # fmt: skip

    held = real(run_copy)  # another process recording its evaluation
    thread = threading.Thread(target=evaluate)
    thread.start()
    try:
        assert waiting.wait(timeout=300)
        assert "fixed:1" not in json.loads((run_copy / "summary.json").read_text())["eval"]
        summary = json.loads((run_copy / "summary.json").read_text())
        summary["eval"]["other"] = summary["eval"]["none"]  # what the other one recorded
        (run_copy / "summary.json").write_text(json.dumps(summary))
    finally:
        held.release()
        thread.join(timeout=300)
    assert len(finished) == 1
    assert list(json.loads((run_copy / "summary.json").read_text())["eval"]) == [
        "none",
        "other",
        "fixed:1",
    ]


def test_eval_removes_what_a_killed_writer_left(manager, run_copy):
    (run_copy / ".summary.json.tmp-99999").write_text('{"task": "par')
    result = invoke(manager, "eval", str(run_copy), "--tta", "fixed:1", *LIMIT)
    assert result.exit_code == 0, result.output
    assert not (run_copy / ".summary.json.tmp-99999").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_eval_refuses_a_run_folder_it_cannot_record_in(manager, run_copy, captured):
    run_copy.chmod(0o500)
    try:
        result = invoke(manager, "eval", str(run_copy), "--tta", "fixed:1")
    finally:
        run_copy.chmod(0o700)
    assert_user_error(result, f"{str(run_copy)!r} is not writable")
    assert captured == []


def test_the_figure_draws_each_difference_from_none_with_its_interval(tmp_path):
    from attd_cli.plots import write_compare_png

    paired = {"difference": 0.1, "ci_low": -0.05, "ci_high": 0.2, "confidence": 0.95}
    base = {"accuracy": 0.5, "mean_k": 0.0, "uses_labels": False, "k_histogram": {"0": 4}}
    other = {**base, "mean_k": 1.0, "k_histogram": {"1": 4}}
    heights = {}
    for name, compared in (("with", paired), ("without", None)):
        report = {
            "task": "parity",
            "strategies": ["none", "fixed:1"],
            "shifts": {"clean": {"none": base, "fixed:1": {**other, "paired": compared}}},
        }
        write_compare_png(tmp_path / f"{name}.png", report)
        heights[name] = int.from_bytes((tmp_path / f"{name}.png").read_bytes()[20:24], "big")
    assert heights["with"] > heights["without"]  # the panel of differences


@pytest.fixture(scope="module")
def reseeded(manager, tmp_path_factory) -> Path:
    """The `trained` run's config with another `runtime.seed`, trained too."""
    out = tmp_path_factory.mktemp("reseeded") / "run"
    args = ["run", "--task", "parity", *TINY, "--seed", "5", "--output-dir", str(out)]
    result = invoke(manager, *args)
    assert result.exit_code == 0, result.output
    return out


def test_compare_pools_runs_of_one_config_with_different_seeds(
    manager, trained, reseeded, tmp_path
):
    stem = tmp_path / "seeds"
    args = ["compare", str(trained), str(reseeded), "--tta", "fixed:1", *LIMIT]
    result = invoke(manager, *args, "--output", str(stem))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "seeds.json").read_text())
    assert report["run_dirs"] == [str(trained), str(reseeded)] and report["seeds"] == [0, 5]
    runs = [run["shifts"]["clean"] for run in report["runs"]]
    pooled = report["shifts"]["clean"]["fixed:1"]
    accuracies = [run["fixed:1"]["accuracy"] for run in runs]
    assert pooled["runs"] == 2 and pooled["n"] == 12
    assert pooled["accuracy"] == pytest.approx(sum(accuracies) / 2)
    assert pooled["accuracy_std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / 2**0.5)
    per_run = [run["fixed:1"]["paired"] for run in runs]
    paired = pooled["paired"]
    assert paired["runs"] == 2 and paired["n"] == 12
    differences = [p["difference"] for p in per_run]
    assert paired["difference"] == pytest.approx(sum(differences) / 2)
    assert paired["std"] == pytest.approx(abs(differences[0] - differences[1]) / 2**0.5)
    for key in ("wrong_to_right", "right_to_wrong"):
        assert paired[key] == sum(p[key] for p in per_run)
    assert report["shifts"]["clean"]["none"]["paired"] is None
    md = (tmp_path / "seeds.md").read_text()
    assert "Pooled over the 2 runs" in md and "## Per run" in md and "(seed 5)" in md
    assert "pooled over 2 runs" in md and "±" in result.stdout
    assert (tmp_path / "seeds.png").read_bytes().startswith(PNG_MAGIC)


def _with_config(run: Path, tmp_path: Path, name: str, key: str, value: Any) -> Path:
    """A copy of `run` whose config.yaml has `key` (dotted) set to `value`."""
    copy = Path(shutil.copytree(run, tmp_path / name))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    section, field = key.split(".")
    config[section][field] = value
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (("train.lr", 0.5), ["differs from", "in train.lr", "runtime.seed alone"]),
        (("runtime.seed", 0), ["both have runtime.seed 0"]),
    ],
    ids=["other key", "same seed"],
)
def test_runs_compared_together_must_differ_in_the_seed_alone(
    manager, trained, tmp_path, change, fragments
):
    other = _with_config(trained, tmp_path, "other", *change)
    args = ["compare", str(trained), str(other), "--tta", "fixed:1"]
    assert_user_error(invoke(manager, *args, "--output", str(tmp_path / "x")), *fragments)


def test_several_runs_need_an_output_and_distinct_folders(manager, trained, tmp_path):
    other = _with_config(trained, tmp_path, "other", "runtime.seed", 9)
    result = invoke(manager, "compare", str(trained), str(other), "--tta", "fixed:1")
    assert_user_error(result, "several runs needs --output STEM")
    args = ["compare", str(trained), str(trained), "--tta", "fixed:1", "--output", "x"]
    assert_user_error(invoke(manager, *args), "is given twice")
