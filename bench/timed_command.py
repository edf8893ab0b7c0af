"""Run one `attd` command as a user types it, timed, and record how (for the bench scripts)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ATTD = Path(sys.executable).with_name("attd")
"""The `attd` of the interpreter running the bench: the one installed beside it."""


def run_timed(arguments: list[str], record: Path, **fields: Any) -> None:
    """`attd ARGUMENTS` offline with no standard input; then `record` holds `fields`, the
    command, its wall time and the 1-minute load average before and after.

    A failed command stops the bench (its output is above) and writes no record.
    """
    command = [str(ATTD), *arguments]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    load_before, start = os.getloadavg()[0], time.perf_counter()
    print(f"{shlex.join(['attd', *arguments])} (load {load_before:.2f})", flush=True)
    if subprocess.run(command, env=env, stdin=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"error: {shlex.join(command)} failed (its output is above)")
    entry = {
        **fields,
        "command": shlex.join(["attd", *arguments]),
        "wall_seconds": time.perf_counter() - start,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    record.write_text(json.dumps(entry, indent=2) + "\n")


def run_cell(arguments: list[str], folder: Path, **fields: Any) -> None:
    """`attd ARGUMENTS` writing run folder `folder`, with its record in `folder/bench.json`;
    a folder that already holds `summary.json` and `bench.json` is kept, and a folder
    left unfinished by an interrupted bench is refused rather than overwritten."""
    if (folder / "summary.json").is_file() and (folder / "bench.json").is_file():
        print(f"{folder}: done before, kept")
        return
    if folder.exists():
        raise SystemExit(f"error: {folder} holds an unfinished cell; remove it to train it again")
    run_timed(arguments, folder / "bench.json", **fields)
