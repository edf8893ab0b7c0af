"""Wall time of `attd list-plugins`, next to starting Python and importing torch.

    python bench/cli_startup.py [--runs 10] [--budget 0.5] [--json]

Each command runs once to warm the page cache, then `--runs` times as a subprocess;
the report gives median, min and max wall time and the ratio of each median to two
baselines measured in the same process: `python -c pass` (interpreter start-up) and
`python -c "import torch"` (what the CLI must not pay to list plugins). Exits 1 when
the median of either form of `attd list-plugins` exceeds `--budget` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

PYTHON = sys.executable
ATTD = str(Path(PYTHON).parent / "attd")
COMMANDS = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "python -c 'import torch'": [PYTHON, "-c", "import torch"],
    "attd list-plugins": [ATTD, "list-plugins"],
    "python -m attd_cli list-plugins": [PYTHON, "-m", "attd_cli", "list-plugins"],
}
BASELINE, TORCH = "python -c pass", "python -c 'import torch'"
BUDGETED = ("attd list-plugins", "python -m attd_cli list-plugins")


def wall_times(command: list[str], runs: int) -> list[float]:
    def once() -> float:
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start

    once()
    return [once() for _ in range(runs)]


def measure(runs: int) -> dict[str, dict[str, float]]:
    results = {}
    for name, command in COMMANDS.items():
        times = wall_times(command, runs)
        results[name] = {
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
        }
    for result in results.values():
        result["vs_python"] = result["median_s"] / results[BASELINE]["median_s"]
        result["vs_torch"] = result["median_s"] / results[TORCH]["median_s"]
    return results


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def table(results: dict[str, dict[str, float]], runs: int, budget: float) -> Table:
    view = Table(title=f"CLI start-up: wall seconds, {runs} runs each, budget {budget:.2f} s")
    view.add_column("command", no_wrap=True)
    for column in ("median", "min", "max", "x pass", "x torch"):
        view.add_column(column, justify="right")
    for name, result in results.items():
        over = name in BUDGETED and result["median_s"] > budget
        view.add_row(
            f"[red]{name}[/red]" if over else name,
            *(f"{result[key]:.3f}" for key in ("median_s", "min_s", "max_s")),
            f"{result['vs_python']:.2f}",
            f"{result['vs_torch']:.2f}",
        )
    return view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds, median")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not Path(ATTD).exists():
        parser.error(f"{ATTD} not found: install attd-cli into this Python's environment")
    results = measure(args.runs)
    over = [name for name in BUDGETED if results[name]["median_s"] > args.budget]
    if args.json:
        report = {"machine": machine(), "runs": args.runs, "budget_s": args.budget}
        print(json.dumps(report | {"results": results, "over_budget": over}, indent=2))
    else:
        console = Console()
        console.print(table(results, args.runs, args.budget))
        info = machine()
        console.print(
            f"Python {info['python']} on {info['platform']} ({info['processor']}), "
            f"{info['cpus']} CPUs"
        )
        for name in over:
            console.print(f"[red]over budget:[/red] {name}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
