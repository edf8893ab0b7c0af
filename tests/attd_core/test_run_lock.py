"""One writer per folder (`lock_folder`) and destinations checked before work
(`check_destination`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from attd_core import ConfigError, check_destination, is_staging_name, lock_folder
from attd_core.runtime import run_lock

needs_non_root = pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into folders without write permission"
)


def test_a_held_folder_is_refused_naming_it_then_free_once_released(tmp_path):
    folder = tmp_path / "run"
    with lock_folder(folder, what="output dir"):
        with pytest.raises(ConfigError) as caught:
            lock_folder(folder, what="output dir")
        assert f"output dir {str(folder)!r} is in use by another attd process" in str(caught.value)
    with lock_folder(folder):
        pass


def test_a_waiting_lock_is_taken_when_the_holder_releases(tmp_path):
    held = lock_folder(tmp_path)
    waiting = threading.Event()
    taken: list[run_lock.FolderLock] = []
    thread = threading.Thread(
        target=lambda: taken.append(lock_folder(tmp_path, wait=True, on_wait=waiting.set))
    )
    thread.start()
    assert waiting.wait(timeout=60)
    assert not taken  # still blocked: the holder has not released
    held.release()
    thread.join(timeout=60)
    assert len(taken) == 1
    taken[0].release()


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    """flock dies with its process: a kill -9 never leaves a folder locked."""
    script = (
        "import sys, time; from attd_core import lock_folder; "
        f"lock = lock_folder({str(tmp_path)!r}); print('locked', flush=True); time.sleep(600)"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="in use"):
            lock_folder(tmp_path)
    finally:
        child.kill()
        child.wait()
    with lock_folder(tmp_path):
        pass


def test_a_folder_the_lock_created_goes_again_if_nothing_was_written(tmp_path):
    folder = tmp_path / "a" / "b"
    with lock_folder(folder):
        assert folder.is_dir()
    assert list(tmp_path.iterdir()) == []  # its missing parent too

    with lock_folder(folder):
        (folder / "config.yaml").write_text("x")
    assert (folder / "config.yaml").is_file()

    existing = tmp_path / "existing"
    existing.mkdir()
    with lock_folder(existing):
        pass
    assert existing.is_dir()


def test_an_exclusive_lock_needs_a_new_folder(tmp_path):
    with pytest.raises(FileExistsError):
        lock_folder(tmp_path, exclusive=True)
    with lock_folder(tmp_path / "new", exclusive=True) as lock:
        assert lock.folder.is_dir()


def test_remove_leftovers_removes_what_it_is_told_and_nothing_else(tmp_path):
    (tmp_path / ".checkpoint-x1").mkdir()
    (tmp_path / ".checkpoint-x1" / "model.safetensors").write_bytes(b"")
    (tmp_path / ".summary.json.tmp-123").write_text("")
    (tmp_path / "summary.json").write_text("{}")
    with lock_folder(tmp_path) as lock:
        removed = lock.remove_leftovers(
            lambda name: name.startswith(".checkpoint-") or is_staging_name(name)
        )
    assert sorted(path.name for path in removed) == [".checkpoint-x1", ".summary.json.tmp-123"]
    assert [path.name for path in tmp_path.iterdir()] == ["summary.json"]


@pytest.mark.parametrize(
    ("name", "staging"),
    [
        (".summary.json.tmp-123", True),
        (".sweep.md.tmp-7", True),
        ("summary.json", False),
        (".summary.json.tmp-", False),
        (".x.tmp-12a", False),
    ],
)
def test_staging_names(name, staging):
    assert is_staging_name(name) is staging


def test_without_fcntl_folders_are_created_but_not_locked(tmp_path, monkeypatch):
    """Windows has no fcntl: attd does not support it, but the runtime must not crash."""
    monkeypatch.setattr(run_lock, "fcntl", None)
    with lock_folder(tmp_path / "run"), lock_folder(tmp_path / "run"):
        assert (tmp_path / "run").is_dir()


def test_a_lock_where_no_folder_can_be_made_is_one_error_naming_it(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ConfigError, match=r"output dir '.*afile' exists and is not a folder"):
        lock_folder(afile, what="output dir")
    with pytest.raises(ConfigError, match=r"'.*afile/sub': cannot create it: Not a directory"):
        lock_folder(afile / "sub")
    with pytest.raises(ConfigError, match="cannot create it: File name too long"):
        lock_folder(tmp_path / ("x" * 300))


@needs_non_root
def test_a_lock_in_an_unwritable_folder_is_one_error_naming_it(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"'.*run': cannot create it: Permission denied"):
            lock_folder(tmp_path / "run")
    finally:
        tmp_path.chmod(0o700)


# -- check_destination -------------------------------------------------------------------


def test_a_destination_gets_its_missing_folders_and_no_file(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    assert check_destination(path, "--out") == path
    assert path.parent.is_dir() and list(path.parent.iterdir()) == []  # the probe is gone


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("afile/out.json", "--out '{path}': '{base}/afile' is not a folder"),
        ("afile/sub/out.json", "--out '{path}': cannot write there: Not a directory"),
        ("x" * 300 + ".json", "--out '{path}': cannot write there: File name too long"),
        ("folder", "--out '{path}' is a folder; give a file path"),
    ],
)
def test_a_destination_that_cannot_be_written_is_refused_naming_it(tmp_path, relative, message):
    (tmp_path / "afile").write_text("")
    (tmp_path / "folder").mkdir()
    path = tmp_path / relative
    with pytest.raises(ConfigError) as caught:
        check_destination(path, "--out")
    assert str(caught.value) == message.format(path=path, base=tmp_path)


@needs_non_root
def test_a_destination_in_an_unwritable_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="cannot write there: Permission denied"):
        check_destination(folder / "out.json", "--out")
    assert not Path(folder / "out.json").exists()
