"""Wall time of `attd list-plugins`, next to starting Python and importing torch.

    python bench/cli_startup.py [--runs 10] [--budget 0.5] [--json]

Each command runs once to warm the page cache, then `--runs` times as a subprocess;
the report gives median, min and max wall time and the ratio of each median to two
baselines measured in the same process: `python -c pass` (interpreter start-up) and
`python -c "import torch"` (what the CLI must not pay to list plugins). It also lists
the five slowest imports of one more `python -m attd_cli list-plugins`, run under
`-X importtime`, by cumulative time (an import's own time plus that of the imports it
triggered), to show where the time goes. Exits 1 when the median of either form of
`attd list-plugins` exceeds `--budget` seconds.
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
IMPORTTIME = [PYTHON, "-X", "importtime", "-m", "attd_cli", "list-plugins"]
SLOWEST = 5


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


def slowest_imports(count: int = SLOWEST) -> list[dict[str, object]]:
    """The `count` imports of one `python -m attd_cli list-plugins` with the largest
    cumulative time, from `-X importtime` (its lines: `import time: SELF | CUMULATIVE |
    MODULE`, in microseconds). Nested imports count in their importers too, so the list
    can be a chain (`attd_cli.app`, then `attd_core`, ...): the self time says which
    link spends it."""
    run = subprocess.run(
        IMPORTTIME, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    imports = []
    for line in run.stderr.splitlines():
        if not line.startswith("import time:"):  # a warning the command printed
            continue
        self_us, cumulative_us, module = line.removeprefix("import time:").split("|")
        if not self_us.strip().isdigit():  # the header line
            continue
        imports.append(
            {
                "module": module.strip(),
                "cumulative_s": int(cumulative_us) / 1e6,
                "self_s": int(self_us) / 1e6,
            }
        )
    return sorted(imports, key=lambda item: item["cumulative_s"], reverse=True)[:count]


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


def imports_table(imports: list[dict[str, object]]) -> Table:
    view = Table(title="Slowest imports of `python -X importtime -m attd_cli list-plugins`")
    view.add_column("module", no_wrap=True)
    view.add_column("cumulative ms", justify="right")
    view.add_column("self ms", justify="right")
    for item in imports:
        view.add_row(
            str(item["module"]),
            f"{float(item['cumulative_s']) * 1e3:.1f}",
            f"{float(item['self_s']) * 1e3:.1f}",
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
    imports = slowest_imports()
    over = [name for name in BUDGETED if results[name]["median_s"] > args.budget]
    if args.json:
        report = {"machine": machine(), "runs": args.runs, "budget_s": args.budget}
        report |= {"results": results, "slowest_imports": imports, "over_budget": over}
        print(json.dumps(report, indent=2))
    else:
        console = Console()
        console.print(table(results, args.runs, args.budget))
        console.print(imports_table(imports))
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
