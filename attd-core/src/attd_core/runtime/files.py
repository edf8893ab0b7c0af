"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A file is written under a hidden staging name beside it (`.NAME.tmp-PID`) and renamed
over it when complete. A killed process leaves its staging file behind; the next writer
of the folder, holding its lock, removes it (`is_staging_name`, see `run_lock.py`).
Every destination is checked with `check_destination` before the work that fills it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from attd_core.errors import ConfigError

_STAGING = re.compile(r"\..+\.tmp-\d+")


def fsync_file(path: Path) -> None:
    """Push a file's bytes to disk so that a rename after it cannot expose a torn file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_umask(path: Path) -> None:
    """Give `path` the permissions a plain `open`/`mkdir` would have: `mkdtemp` and
    safetensors create private (0700/0600) entries, which would hide a run from its team."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def staging_path(path: Path) -> Path:
    """The hidden sibling that this process writes `path` into before renaming it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_staging_name(name: str) -> bool:
    """Whether `name` is a staging file's (`staging_path`): an unfinished write."""
    return _STAGING.fullmatch(name) is not None


def check_destination(path: str | Path, what: str) -> Path:
    """`path`, once it is known that a file can be written there, before any work.

    Missing folders on the way are created; a staging file is created and removed
    again, so that an unwritable folder, a file where a folder belongs or a name too
    long fails now, as a `ConfigError` naming `what` and `path`, not after the work.
    """
    path = Path(path)
    shown = f"{what} {str(path)!r}"
    try:
        if not path.name or path.is_dir():
            raise ConfigError(f"{shown} is a folder; give a file path")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_path(path)
        os.close(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        staging.unlink()
    except FileExistsError as exc:
        raise ConfigError(f"{shown}: {str(exc.filename)!r} is not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot write there: {exc.strerror}") from None
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write into a hidden sibling, sync it, then rename it over `path`."""
    path = Path(path)
    staging = staging_path(path)
    try:
        staging.write_text(text, encoding="utf-8")
        fsync_file(staging)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
