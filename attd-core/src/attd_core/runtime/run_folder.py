"""A run's folder: chosen, claimed for one writer, and cleared of what killed writers left.

`attd run` writes into a folder that holds no run (by default a fresh
`runs/TASK-TIMESTAMP`), `--resume` into the unfinished run it finishes. Rank 0 takes the
folder's lock (`run_lock.py`) before the run builds anything, so a folder that cannot
be written fails at once, and checks the folder again under the lock, so two runs
started at once cannot both find it free. Holding the lock, it removes what killed
writers left: checkpoint folders being built and staging files of atomic writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from attd_core.errors import ConfigError
from attd_core.runtime.checkpoint import STAGING_PREFIX
from attd_core.runtime.config import ResolvedConfig
from attd_core.runtime.distributed import Distributed
from attd_core.runtime.files import is_staging_name
from attd_core.runtime.run_lock import FolderLock, lock_folder
from attd_core.runtime.stopped_run import check_unfinished
from attd_core.runtime.summary import SUMMARY_FILE

RUN_MARKERS = ("config.yaml", SUMMARY_FILE)
"""Files whose presence means a folder already holds a run."""


@contextmanager
def claimed_output_dir(
    resolved: ResolvedConfig, resume: bool, distributed: Distributed
) -> Iterator[Path]:
    """The run folder, locked by rank 0 until the run ends; every rank gets its path."""
    config = resolved.config
    lock: FolderLock | None = None
    chosen: tuple[str, str] = ("", "")
    if distributed.is_main:
        try:
            if resume:
                lock = claim_run(Path(str(config.runtime.output_dir)))
            else:
                lock = claim_new_output_dir(config.runtime.output_dir, config.task.name)
            chosen = ("ok", str(lock.folder))
        except ConfigError as exc:
            chosen = ("error", str(exc))
    status, value = distributed.broadcast(chosen)
    if status == "error":
        raise ConfigError(value)
    if lock is None:
        yield Path(value)
        return
    with lock:
        yield lock.folder


def claim_new_output_dir(requested: str | None, task: str) -> FolderLock:
    """The locked folder of a new run: `requested`, which must not hold a run, or a fresh
    timestamped one (created exclusively, so that two runs never pick the same)."""
    if requested is None:
        return _fresh_folder(task)
    lock = lock_folder(requested, what="output dir")
    try:
        for marker in RUN_MARKERS:
            if (lock.folder / marker).exists():
                raise ConfigError(
                    f"output dir {str(lock.folder)!r} already holds a run ({marker}); "
                    "choose another --output-dir"
                )
        _check_writable(lock.folder, "output dir")
        remove_leftovers(lock)
    except BaseException:
        lock.release()
        raise
    return lock


def claim_run(run_dir: Path) -> FolderLock:
    """The locked folder of an unfinished run, for `--resume`; a run that another process
    is finishing, or that finished meanwhile, is refused."""
    lock = lock_folder(run_dir, what="run folder")
    try:
        check_unfinished(run_dir)
        _check_writable(run_dir, "run folder")
        remove_leftovers(lock)
    except BaseException:
        lock.release()
        raise
    return lock


def remove_leftovers(lock: FolderLock) -> list[Path]:
    """Remove what killed writers left in the locked run folder: checkpoint folders being
    built or retired (`.checkpoint-*`) and staging files (`.NAME.tmp-PID`)."""
    return lock.remove_leftovers(
        lambda name: name.startswith(STAGING_PREFIX) or is_staging_name(name)
    )


def _fresh_folder(task: str) -> FolderLock:
    stem = Path("runs") / f"{task}-{datetime.now():%Y%m%d-%H%M%S}"
    path, suffix = stem, 1
    while True:
        try:
            return lock_folder(path, what="output dir", exclusive=True)
        except FileExistsError:
            suffix += 1
            path = stem.with_name(f"{stem.name}-{suffix}")


def _check_writable(folder: Path, what: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {str(folder)!r} is not writable")
