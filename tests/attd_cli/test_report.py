"""`attd report` in-process, on one tiny run trained once for the module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import attd_core
import attd_core._plugin as core_plugin
import attd_core.runtime.metrics as runtime_metrics
from attd_cli.app import app
from attd_cli.compare import ORACLE_NOTE
from attd_core.testing import ParityPlugin

STABLE_ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", "TERMINAL_WIDTH": None}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = [
    "--set", "model.backbone.d_model=8",
    "--set", "model.backbone.n_layers=1",
    "--set", "model.backbone.d_state=4",
    "--set", "model.adapter.rank=1",
    "--set", "train.max_steps=4",
    "--set", "train.log_every=1",
    "--set", "eval.limit=8",
]  # fmt: skip
REPORT_FILES = {"report.md", "report_training.png", "report_eval.png"}


class FakeSummaryWriter:
    """Stands in for torch's SummaryWriter (tensorboard is not a dependency)."""

    instances: list[FakeSummaryWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False
        type(self).instances.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def manager() -> attd_core.PluginManager:
    manager = attd_core.PluginManager(autoload=False, environ={})
    manager.add_plugin(core_plugin, name="core", distribution="attd-core")
    manager.add_plugin(ParityPlugin(), name="parity")
    return manager


def invoke(manager: attd_core.PluginManager, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=STABLE_ENV, obj=manager)


@pytest.fixture(scope="module")
def trained(manager, tmp_path_factory) -> tuple[Path, FakeSummaryWriter]:
    """A finished run with `runtime.tensorboard=true`, logged to a fake SummaryWriter;
    tests that change the run work on a copy (see `run_copy`)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    FakeSummaryWriter.instances.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime_metrics, "summary_writer_class", lambda: FakeSummaryWriter)
        result = invoke(
            manager, "run", "--task", "parity", *TINY, "--tta", "fixed:1",
            "--set", "runtime.tensorboard=true", "--output-dir", str(out),
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    (board,) = FakeSummaryWriter.instances
    return out, board


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


def test_a_run_mirrors_its_metrics_to_tensorboard_when_enabled(trained):
    out, board = trained
    assert board.log_dir == str(out / "tensorboard") and board.closed
    losses = [(value, step) for tag, value, step in board.scalars if tag == "train/loss"]
    assert [step for _, step in losses] == [1, 2, 3, 4]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [record for record in records if record["event"] == "train"]
    assert [value for value, _ in losses] == [record["loss"] for record in train]
    tags = {tag for tag, _, _ in board.scalars}
    assert {"train/lr", "eval/none/accuracy", "eval/fixed:1/mean_k", "val/accuracy"} <= tags


def test_report_writes_markdown_and_figures(manager, run_copy):
    before = set(os.listdir(run_copy))
    result = invoke(manager, "report", str(run_copy))
    assert result.exit_code == 0, result.output
    assert set(os.listdir(run_copy)) - before == REPORT_FILES
    assert "report.md" in result.stdout
    for name in ("report_training.png", "report_eval.png"):
        assert_png(run_copy / name)
    assert not [name for name in os.listdir(run_copy) if name.startswith(".")]

    md = (run_copy / "report.md").read_text()
    summary = json.loads((run_copy / "summary.json").read_text())
    assert md.startswith("# attd report: parity\n")
    for fragment in (
        f"- **backbone**: `{summary['backbone']}`",
        f"- **adapter**: `{summary['adapter']}`",
        f"- **seed**: {summary['seed']}",
        f"- **device**: `{summary['device']}`",
        "- **scan backend**: `",
        f"- **training**: 4 steps, {summary['train']['epochs']} epochs, ",
        "## Training",
        "![training curves](report_training.png)",
        "4 logged training records, steps 1 to 4",
        "Validated 2 times while training, on the first 32 examples of split `validation`",
        "| step | epoch | seconds | accuracy | loss |",
        "## Evaluation",
        "split `test` (limit 8), clean data",
        "![evaluation](report_eval.png)",
        "## Config",
        "<details>",
        "```yaml",
        "tensorboard: true",
    ):
        assert fragment in md, fragment
    header = next(line for line in md.splitlines() if line.startswith("| tta |"))
    for column in ("accuracy", "mean k", "p50 k", "p90 k", "s/sample", "n", "uses labels"):
        assert f"| {column} |" in header
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["none", "fixed:1"]
    assert f"| {summary['eval']['fixed:1']['accuracy']:.4f} |" in rows[1]
    assert "| 1.00 | 1 | 1 |" in rows[1]
    assert "| 8 | no |" in rows[0]
    paired = summary["eval"]["fixed:1"]["paired"]
    assert "| vs none [CI] | McNemar p | flips +/- |" in header
    assert f"| +{paired['wrong_to_right']}/-{paired['right_to_wrong']} |" in rows[1]
    assert "| - | - | - |" in rows[0] and "paired bootstrap interval" in md
    for absent in ("Later evaluations", "Comparison", "controller phase", ORACLE_NOTE):
        assert absent not in md


def png_height(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "big")  # in the IHDR chunk


def test_report_draws_the_validation_curve_below_the_loss(manager, run_copy):
    result = invoke(manager, "report", str(run_copy))
    assert result.exit_code == 0, result.output
    md = (run_copy / "report.md").read_text()
    validations = [
        json.loads(line)
        for line in (run_copy / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["event"] == "val"
    ]
    assert [record["step"] for record in validations] == [2, 4]
    for record in validations:
        row = f"| {record['step']} | {record['epoch']} | {record['seconds']:.1f} | "
        assert f"{row}{record['accuracy']:.4f} | {record['loss']:.4f} |" in md
    last = validations[-1]["accuracy"]
    first = validations[0]["accuracy"]
    assert f"Validation accuracy: {first:.4f} at step 2, {last:.4f} at step 4" in md
    with_curve = png_height(run_copy / "report_training.png")

    path = run_copy / "metrics.jsonl"
    kept = [line for line in path.read_text().splitlines() if '"event": "val"' not in line]
    path.write_text("\n".join(kept) + "\n")  # a run from before validation was recorded
    result = invoke(manager, "report", str(run_copy))
    assert result.exit_code == 0, result.output
    assert "Validated" not in (run_copy / "report.md").read_text()
    assert png_height(run_copy / "report_training.png") < with_curve  # one panel fewer


def test_report_includes_compare_and_later_evaluations(manager, run_copy, tmp_path):
    args = ["--set", "eval.limit=8"]
    result = invoke(manager, "compare", str(run_copy), "--tta", "oracle:2", *args)
    assert result.exit_code == 0, result.output
    result = invoke(
        manager, "eval", str(run_copy), "--tta", "fixed:2", "--shift", "token-substitution:5",
        *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    out = tmp_path / "reports" / "parity"
    result = invoke(manager, "report", str(run_copy), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert set(os.listdir(out)) == REPORT_FILES
    assert not (run_copy / "report.md").exists()
    md = (out / "report.md").read_text()
    for fragment in (
        "## Later evaluations (`attd eval`)",
        "| tta | shift | accuracy |",
        "| `fixed:2` | `token-substitution:5` |",
        "## Comparison (`attd compare`)",
        "### clean",
        "`oracle:2` (uses labels)",
        "![attd compare](../../run/compare.png)",
        ORACLE_NOTE,
    ):
        assert fragment in md, fragment
    assert "# attd compare" not in md


def test_report_draws_the_controller_phase(manager, run_copy):
    with (run_copy / "metrics.jsonl").open("a") as metrics:
        for step in (1, 2, 3):
            record = {"event": "controller", "step": step, "loss": 1.0 / step, "mean_k": 2.5}
            metrics.write(json.dumps(record) + "\n")
    summary = json.loads((run_copy / "summary.json").read_text())
    summary["train"]["controller"] = {"steps": 3, "loss": 0.3333, "seconds": 0.5}
    (run_copy / "summary.json").write_text(json.dumps(summary))
    result = invoke(manager, "report", str(run_copy))
    assert result.exit_code == 0, result.output
    md = (run_copy / "report.md").read_text()
    assert "- **controller phase**: 3 steps, 0.5 s, final loss 0.3333" in md
    assert "The controller phase logged 3 records" in md
    assert_png(run_copy / "report_training.png")


def first_shape(summary: dict) -> dict:
    """`summary` as the first `attd run` wrote it: accuracy alone, no regime or adapter."""
    kept = ("task", "backbone", "seed", "device", "output_dir")
    entry_keys = ("accuracy", "mean_k", "seconds", "n")
    return {
        **{key: summary[key] for key in kept},
        "eval": {
            key: {name: entry[name] for name in entry_keys}
            for key, entry in summary["eval"].items()
        },
        "train": {key: summary["train"][key] for key in ("steps", "epochs", "loss", "seconds")},
    }


def test_a_run_from_an_older_version_still_reports(manager, run_copy):
    path = run_copy / "summary.json"
    summary = json.loads(path.read_text())
    path.write_text(json.dumps(first_shape(summary)))
    result = invoke(manager, "report", str(run_copy))
    assert result.exit_code == 0, result.output
    md = (run_copy / "report.md").read_text()
    assert "- **adapter**: -" in md and "- **regime**: `base`" in md
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["none", "fixed:1"]
    accuracy = summary["eval"]["fixed:1"]["accuracy"]
    cells = f"| `fixed:1` | {accuracy:.4f} | - | - | - | 1.00 | - | - | - | 8 | no |"
    assert rows[1].startswith(cells)
    assert "No paired comparison with `none`" in md  # absent, not zero
    assert_png(run_copy / "report_eval.png")


def test_bad_run_folders_are_one_line_errors(manager, tmp_path):
    missing = tmp_path / "missing"
    assert_user_error(invoke(manager, "report", str(missing)), repr(str(missing)), "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(invoke(manager, "report", str(empty)), "has no config.yaml")


def test_an_unfinished_run_is_one_line(manager, run_copy):
    (run_copy / "summary.json").unlink()
    result = invoke(manager, "report", str(run_copy))
    assert_user_error(result, "summary.json", "did not finish")
    assert not REPORT_FILES & set(os.listdir(run_copy))


def test_a_corrupt_metrics_line_names_the_file_and_line(manager, run_copy):
    path = run_copy / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:10]
    path.write_text("\n".join(lines) + "\n")
    result = invoke(manager, "report", str(run_copy))
    assert_user_error(result, f"{path}:3: not a JSON object")
    assert not REPORT_FILES & set(os.listdir(run_copy))


def test_a_corrupt_compare_json_is_one_line(manager, run_copy):
    (run_copy / "compare.json").write_text('{"task": "parity"}')
    assert_user_error(
        invoke(manager, "report", str(run_copy)), "compare.json", "not an attd compare report"
    )


def test_report_imports_no_torch(trained, tmp_path):
    probe = (
        "import sys\n"
        "from rich.console import Console\n"
        "from attd_cli.report import report\n"
        f"report({str(trained[0])!r}, output={str(tmp_path)!r}, console=Console())\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"
    assert set(os.listdir(tmp_path)) == REPORT_FILES


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("afile/sub", "{base}/afile/sub/report.md': cannot write there: Not a directory"),
        ("x" * 300, "{base}/{long}/report.md': cannot write there: File name too long"),
    ],
)
def test_an_output_folder_that_cannot_be_written_is_one_line(
    manager, run_copy, tmp_path, relative, reason
):
    (tmp_path / "afile").write_text("")
    out = tmp_path / relative
    result = invoke(manager, "report", str(run_copy), "--output", str(out))
    assert_user_error(result, reason.format(base=tmp_path, long="x" * 300))
    assert not REPORT_FILES & set(os.listdir(run_copy))


def test_an_output_that_is_a_file_is_one_line(manager, run_copy, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    result = invoke(manager, "report", str(run_copy), "--output", str(afile))
    assert_user_error(result, f"{str(afile)!r} is not a folder")


def test_an_empty_output_folder_name_is_refused(manager, run_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(manager, "report", str(run_copy), "--output", "")
    assert_user_error(result, "--output must name a folder")
    assert not REPORT_FILES & set(os.listdir(tmp_path))
