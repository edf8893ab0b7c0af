"""One writer per folder: an exclusive lock, held for as long as a process writes there.

Two `attd run`s into one folder used to interleave their `metrics.jsonl` and overwrite
each other's config and checkpoint. Now a run folder, a sweep folder and a data-cache
folder each have one writer at a time: it holds `flock` on the folder itself from
before it writes anything until it is done. The kernel drops the lock when the process
ends, however it ends, so a folder left by a killed run never blocks the `--resume`
that finishes it, while a live writer is told apart from a dead one. Locking the folder
rather than a file in it adds nothing to the folder.

Taken without waiting, a held lock is a `ConfigError` that names the folder; taken with
`wait`, it blocks until the holder is done (the data cache: a second process reuses the
split the first one generated).

Since only the holder writes, it may remove what dead writers left behind
(`FolderLock.remove_leftovers`). A folder the lock created and that is still empty when
the lock is released is removed again, so a run refused before it wrote anything
leaves no empty folder behind.

`fcntl` is POSIX: where it is missing (Windows, which attd does not support), and on
file systems that cannot lock a folder, the folder is created but not locked.
Imports only the standard library.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from attd_core.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: folders are not locked (see above)
    fcntl = None  # type: ignore[assignment]


class FolderLock:
    """This process's exclusive lock on `folder` (see the module docstring).

    `lock_folder` takes one; `release` it, or use it as a context manager.
    """

    def __init__(self, folder: Path, fd: int | None, created: list[Path]) -> None:
        self.folder = folder
        self._fd = fd
        self._created = created

    def remove_leftovers(self, is_leftover: Callable[[str], bool]) -> list[Path]:
        """Delete the folder's entries whose names `is_leftover` accepts; returns them.

        Safe only because this process holds the lock: a temporary file or folder there
        then belongs to no live writer, so a killed one left it.
        """
        removed = []
        for entry in sorted(self.folder.iterdir()):
            if not is_leftover(entry.name):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        return removed

    def release(self) -> None:
        """Let the next writer in; remove the folder again if this lock created it and
        nothing was written there."""
        try:
            for folder in reversed(self._created):
                try:
                    folder.rmdir()  # only an empty folder goes
                except OSError:
                    break
        finally:
            self._created = []
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor drops the flock
                self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def lock_folder(
    folder: str | Path,
    *,
    what: str = "folder",
    wait: bool = False,
    on_wait: Callable[[], None] | None = None,
    exclusive: bool = False,
) -> FolderLock:
    """Create `folder` (and missing parents) if need be, and take its lock.

    Without `wait`, a lock held by another process is a `ConfigError` naming `what` and
    `folder`; with it, `on_wait` is called and the call blocks until the lock is free.
    A folder that cannot be created or opened is a `ConfigError` naming it, with the
    system's reason. With `exclusive` the folder must be new: one that exists raises
    `FileExistsError`, for the caller to pick another name.
    """
    folder = Path(folder)
    shown = f"{what} {str(folder)!r}"
    while True:
        created = _make_folder(folder, shown, exclusive)
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise ConfigError(f"{shown}: cannot open it: {exc.strerror}") from None
        try:
            if not _try_lock(fd):
                if not wait:
                    raise ConfigError(
                        f"{shown} is in use by another attd process; one process writes "
                        "a folder at a time: wait for it to finish or choose another folder"
                    )
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _is_current(fd, folder):
                return FolderLock(folder, fd, created)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed the folder it had created: start again


def _make_folder(folder: Path, shown: str, exclusive: bool) -> list[Path]:
    """Create `folder` and its missing parents; returns those created, outermost first."""
    try:
        missing = [path for path in (folder, *folder.parents) if not path.exists()]
        folder.mkdir(parents=True, exist_ok=not exclusive)
    except FileExistsError:
        if exclusive:
            raise
        raise ConfigError(f"{shown} exists and is not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot create it: {exc.strerror}") from None
    return list(reversed(missing))


def _try_lock(fd: int) -> bool:
    """Take the lock if it is free; True also where folders cannot be locked."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock on folders (some network mounts)
        return True
    return True


def _is_current(fd: int, folder: Path) -> bool:
    """Whether the locked folder is still the one at `folder` (a releasing holder may
    have removed the empty folder it had created, and another taken its place)."""
    try:
        now = os.stat(folder)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
