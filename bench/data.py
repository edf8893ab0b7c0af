"""Pathfinder generation throughput: images per second of attd_tasks_lra's generator.

    python bench/data.py [--images 2000] [--repeats 3] [--quick] [--json]

Every case calls `generate(config, indices, workers)` end to end, as a data pipeline would:
with workers = 2 that includes starting a spawned process pool and each worker building its
geometry tables. Images are contour_length 14 (LRA's hard difficulty):

- 32x32 (LRA's Pathfinder), `--images` images, workers 1 and 2: the target is >= 500
  images/s on this 2-core machine (with either worker count);
- 64x64 and 128x128 (Path-X), a 40th and a 20th of `--images`, for information (`--quick`
  skips them): long contours are rare with these resolutions' parameters, so most attempts
  at the two target contours fail (about 2000 per image at 64x64, 150 at 128x128).

The cases of a resolution run round-robin, `--repeats` times each after one untimed warm-up
of the tables, so that a change of load hits them alike; the table shows the median. `x 1
worker` divides by the same resolution's one-worker median. `images/CPU-s` (one worker
only: pool workers are forked by a forkserver, not by this process, so their CPU time is not
visible here) divides by this process's CPU time: it moves much less with the machine's load
than wall time, and twice it estimates what two idle cores give. The load average (start and
end) is printed with the results: the machine is shared, and two workers only help when two
cores are free.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from attd_tasks_lra.pathfinder.config import PathfinderGeneratorConfig
from attd_tasks_lra.pathfinder.generator import generate

TARGET = 500.0
"""Images per second required at 32x32, contour length 14."""
CONTOUR_LENGTH = 14
WORKERS = (1, 2)


def time_cases(resolution: int, images: int, repeats: int, log: Console) -> list[dict]:
    """Median seconds of generate() for each worker count, timed round-robin."""
    config = PathfinderGeneratorConfig(resolution=resolution, contour_length=CONTOUR_LENGTH)
    generate(config, range(2))  # builds this process's tables
    seconds: dict[int, list[float]] = {workers: [] for workers in WORKERS}
    cpu_seconds: dict[int, list[float]] = {workers: [] for workers in WORKERS}  # 1 is exact
    for repeat in range(repeats):
        for workers in WORKERS:
            log.log(f"{resolution}x{resolution}, {workers} worker(s), repeat {repeat + 1}")
            cpu, start = time.process_time(), time.perf_counter()
            generate(config, range(images), workers=workers)
            seconds[workers].append(time.perf_counter() - start)
            cpu_seconds[workers].append(time.process_time() - cpu)
    cpu = cpu_seconds[1]
    return [
        {
            "resolution": resolution,
            "contour_length": CONTOUR_LENGTH,
            "workers": workers,
            "images": images,
            "seconds": statistics.median(seconds[workers]),
            "images_per_s": images / statistics.median(seconds[workers]),
            "images_per_cpu_s": images / statistics.median(cpu) if workers == 1 else None,
        }
        for workers in WORKERS
    ]


def run(args: argparse.Namespace, log: Console) -> dict:
    load_start = os.getloadavg()
    sizes = {32: args.images}
    if not args.quick:
        sizes |= {64: max(1, args.images // 40), 128: max(1, args.images // 20)}
    cases = [
        case
        for resolution, images in sizes.items()
        for case in time_cases(resolution, images, args.repeats, log)
    ]
    load_end = os.getloadavg()
    best_32 = max(c["images_per_s"] for c in cases if c["resolution"] == 32)
    return {
        "cases": cases,
        "target_images_per_s": TARGET,
        "best_32_images_per_s": best_32,
        "target_met": best_32 >= TARGET,
        "load_avg": {"start": load_start[0], "end": load_end[0]},
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def table(result: dict) -> Table:
    view = Table(
        title=f"Pathfinder generation, contour length {CONTOUR_LENGTH}: median of "
        f"{result['repeats']} runs",
        caption=f"{result['cpus']} CPUs; target {TARGET:.0f} images/s at 32x32",
    )
    columns = ("resolution", "workers", "images", "seconds", "images/s", "x 1 worker")
    for column in (*columns, "images/CPU-s"):
        view.add_column(column, justify="right")
    single = {c["resolution"]: c["images_per_s"] for c in result["cases"] if c["workers"] == 1}
    for case in result["cases"]:
        resolution = case["resolution"]
        view.add_row(
            f"{resolution}x{resolution}",
            str(case["workers"]),
            str(case["images"]),
            f"{case['seconds']:.2f}",
            f"{case['images_per_s']:.0f}",
            f"{case['images_per_s'] / single[resolution]:.2f}",
            "-" if case["images_per_cpu_s"] is None else f"{case['images_per_cpu_s']:.0f}",
            end_section=case["workers"] == WORKERS[-1],
        )
    return view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images per 32x32 run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case")
    parser.add_argument("--quick", action="store_true", help="32x32 only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args, Console(stderr=True))
    if args.json:
        print(json.dumps(result))
        return 0
    console = Console()
    if not console.is_terminal:
        console.width = 120
    console.print(table(result))
    verdict = "met" if result["target_met"] else "NOT met"
    load = result["load_avg"]
    console.print(
        f"32x32 target (>= {TARGET:.0f} images/s): {verdict}, best "
        f"{result['best_32_images_per_s']:.0f} images/s; load average {load['start']:.2f} -> "
        f"{load['end']:.2f}; Python {result['python']}, numpy {result['numpy']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
