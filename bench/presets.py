"""Each task's CPU preset trained for its whole budget, as a user runs it, and the table
of what it reached: task, preset, seed, wall time, load, test accuracy, steps.

    python bench/presets.py run [--cells listops:cpu,listops:cpu-long,pathfinder:cpu]
                                [--seeds 0,1,2] [--runs bench/runs]
    python bench/presets.py table [--runs bench/runs] [--readme bench/README.md]

`run` trains one cell (task, preset, seed) at a time (parallel torch jobs on 2 cores
slow each other many times over): `attd run --task T --preset P --set runtime.seed=S
--output-dir RUNS/T-P-sS`, the command a user types, in a subprocess. Beside the run
folder's own files it writes `bench.json`: the cell, that command, the wall time of the
subprocess (data generation and the test evaluation included) and the 1-minute load
average before and after. A cell whose folder already holds both `summary.json` and
`bench.json` is kept, so an interrupted `run` goes on with the cells it had not
finished; the folder of the cell it stopped in must be removed first (it says which).

`table` reads only run folders: test accuracy is `summary.json`'s `none`, steps and
training seconds its `train` record (validation excluded), and the learning curves are
the `val` records of `metrics.jsonl`. It prints the Markdown and, with `--readme`,
replaces the part of that file between the `<!-- presets:begin -->` and
`<!-- presets:end -->` markers with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from timed_command import run_cell

BEGIN, END = "<!-- presets:begin -->", "<!-- presets:end -->"
CELLS = ("listops:cpu", "listops:cpu-long", "pathfinder:cpu")
"""The task presets trained by default: each CPU preset the LRA tasks offer."""


def cell_dir(runs: Path, task: str, preset: str, seed: int) -> Path:
    return runs / f"{task}-{preset}-s{seed}"


def train_preset(runs: Path, task: str, preset: str, seed: int) -> None:
    """Train and evaluate one cell unless its folder is already complete."""
    folder = cell_dir(runs, task, preset, seed)
    arguments = ["run", "--task", task, "--preset", preset,
                 "--set", f"runtime.seed={seed}", "--output-dir", str(folder)]  # fmt: skip
    run_cell(arguments, folder, task=task, preset=preset, seed=seed)


def read_cell(folder: Path) -> dict:
    """What one run folder says: its bench record, summary and validation curve."""
    bench = json.loads((folder / "bench.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {
        **bench,
        "accuracy": summary["eval"]["none"]["accuracy"],
        "steps": summary["train"]["steps"],
        "train_seconds": summary["train"]["seconds"],
        "curve": [(r["step"], r["seconds"], r["accuracy"]) for r in records if r["event"] == "val"],
    }


def markdown(cells: dict[str, dict]) -> str:
    """The results table, each preset's mean and std, the commands, and a table of the
    validation curves per task and preset (one column per seed)."""
    lines = [
        "| task | preset | seed | wall s | train s | load before / after | test accuracy | steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[str, list[str]] = {}
    for name, cell in cells.items():
        groups.setdefault(f"{cell['task']} --preset {cell['preset']}", []).append(name)
        lines.append(
            f"| {cell['task']} | {cell['preset']} | {cell['seed']} | {cell['wall_seconds']:.0f} | "
            f"{cell['train_seconds']:.0f} | {cell['load_before']:.2f} / {cell['load_after']:.2f} | "
            f"{cell['accuracy']:.4f} | {cell['steps']} |"
        )
    lines.append("")
    for group, names in groups.items():
        accuracies = [cells[name]["accuracy"] for name in names]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        walls = [cells[name]["wall_seconds"] for name in names]
        lines.append(
            f"- `{group}`: test accuracy {statistics.mean(accuracies):.4f} ± {spread:.4f} "
            f"(mean ± std over {len(names)} seeds), wall {min(walls):.0f}-{max(walls):.0f} s"
        )
    lines += ["", "Commands:", ""]
    lines += [f"- `{cell['command']}`" for cell in cells.values()]
    for group, names in groups.items():
        lines += ["", f"`{group}`, validation accuracy (training seconds) after each step:", ""]
        lines.append("| step | " + " | ".join(f"seed {cells[n]['seed']}" for n in names) + " |")
        lines.append("|---|" + "---|" * len(names))
        curves = [{step: (sec, acc) for step, sec, acc in cells[n]["curve"]} for n in names]
        for step in sorted({step for curve in curves for step in curve}):
            row = [f"{c[step][1]:.3f} ({c[step][0]:.0f} s)" if step in c else "" for c in curves]
            lines.append(f"| {step} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_section(readme: Path, text: str) -> None:
    """Replace what lies between the markers; refuse a README without them."""
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"error: {readme} lacks the markers {BEGIN} and {END}")
    head, rest = content.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "table"))
    parser.add_argument("--cells", default=",".join(CELLS), help="TASK:PRESET,...")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", type=Path, default=Path("bench/runs"))
    parser.add_argument("--readme", type=Path, help="write the table into this file")
    args = parser.parse_args(argv)
    if args.action == "run":
        for cell in args.cells.split(","):
            task, preset = cell.split(":")
            for seed in (int(seed) for seed in args.seeds.split(",")):
                train_preset(args.runs, task, preset, seed)
        return 0
    folders = sorted(p for p in args.runs.glob("*-s*") if (p / "bench.json").is_file())
    if not folders:
        raise SystemExit(f"error: no finished cells under {args.runs}")
    text = markdown({folder.name: read_cell(folder) for folder in folders})
    print(text)
    if args.readme:
        write_section(args.readme, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
