"""Core errors arrive as the documented exception classes."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
from pathlib import Path

import pytest

import backupkit

ALL_ERRORS = [
    backupkit.RepositoryNotFoundError,
    backupkit.RepositoryExistsError,
    backupkit.SnapshotNotFoundError,
    backupkit.LockedError,
    backupkit.IntegrityError,
    backupkit.WouldOverwriteError,
    backupkit.InvalidInputError,
]


def test_hierarchy() -> None:
    assert issubclass(backupkit.BackupError, Exception)
    for cls in ALL_ERRORS:
        assert issubclass(cls, backupkit.BackupError), cls
        assert cls is not backupkit.BackupError
        assert cls.__module__ == "backupkit"
    assert len(set(ALL_ERRORS)) == len(ALL_ERRORS)


def test_snapshot_not_found(repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    with pytest.raises(backupkit.SnapshotNotFoundError, match="latest"):
        repo.snapshot("latest")
    repo.backup(source)
    repo.backup(source)
    with pytest.raises(backupkit.SnapshotNotFoundError) as info:
        repo.snapshot("20991231_000000_000_files_abcdef")
    assert "\n" not in str(info.value) and "20991231" in str(info.value)
    # Both ids start with the year: the prefix is ambiguous.
    with pytest.raises(backupkit.SnapshotNotFoundError, match="ambiguous"):
        repo.snapshot("2")
    with pytest.raises(backupkit.SnapshotNotFoundError):
        repo.ls("nope")
    with pytest.raises(backupkit.SnapshotNotFoundError):
        repo.restore("nope", tmp_path / "out")
    with pytest.raises(backupkit.SnapshotNotFoundError):
        repo.forget(["nope"])
    assert len(repo.snapshots()) == 2


def test_repository_not_found(tmp_path: Path, source: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = backupkit.Repository(empty)
    with pytest.raises(backupkit.RepositoryNotFoundError, match="no backupkit repository"):
        r.snapshots()
    with pytest.raises(backupkit.RepositoryNotFoundError):
        r.backup(source)
    with pytest.raises(backupkit.RepositoryNotFoundError):
        r.check()
    assert list(empty.iterdir()) == []


def test_repository_exists(repo: backupkit.Repository, tmp_path: Path) -> None:
    with pytest.raises(backupkit.RepositoryExistsError, match="already exists"):
        repo.init()
    with pytest.raises(backupkit.RepositoryExistsError):
        backupkit.Repository(Path(repo.location)).init()
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(backupkit.InvalidInputError, match="not empty"):
        backupkit.Repository(full).init()


def test_integrity_error(repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    snap = repo.backup(source)
    assert snap is not None
    assert repo.check(read_data=True).ok
    data = Path(repo.location) / "snapshots" / snap.id / "files.tar.gz"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))

    with pytest.raises(backupkit.IntegrityError) as info:
        repo.check(read_data=True)
    message = str(info.value)
    assert snap.id in message and "\n" not in message
    result = info.value.result
    assert isinstance(result, backupkit.CheckResult)
    assert not result.ok and result.snapshots_checked == 1
    assert [p[0] for p in result.problems] == [snap.id]
    assert backupkit.IntegrityError("other").result is None

    with pytest.raises(backupkit.IntegrityError):
        repo.restore(snap.id, tmp_path / "out")


def _write_lock(repo: backupkit.Repository, pid: int) -> Path:
    locks = Path(repo.location) / "locks"
    locks.mkdir(exist_ok=True)
    lock = locks / "x.json"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lock.write_text(
        json.dumps(
            {"exclusive": True, "host": socket.gethostname(), "pid": pid, "time": now, "snapshot": None}
        )
    )
    return lock


def test_locked(repo: backupkit.Repository, source: Path) -> None:
    snap = repo.backup(source)
    assert snap is not None
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        lock = _write_lock(repo, sleeper.pid)
        with pytest.raises(backupkit.LockedError, match=f"pid {sleeper.pid}"):
            repo.forget([snap.id])
        with pytest.raises(backupkit.LockedError):
            repo.backup(source)
        assert [s.id for s in repo.snapshots()] == [snap.id]
        assert repo.unlock() == 0  # the holder is alive: not stale
        assert lock.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The holder is gone: its lock is stale, blocks nothing, and unlock removes it.
    assert repo.unlock() == 1
    assert not lock.exists()
    assert repo.forget([snap.id]) == [snap.id]


def test_no_lock_reads_without_taking_a_lock(repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    snap = repo.backup(source)
    assert snap is not None
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        lock = _write_lock(repo, sleeper.pid)
        with pytest.raises(backupkit.LockedError):
            repo.check(read_data=True)
        reader = backupkit.Repository(repo.location, no_lock=True)
        assert reader.check(read_data=True).ok
        assert reader.restore(snap.id, tmp_path / "out").files == 4
        # It took no lock of its own: only the one written above is there.
        assert sorted(p.name for p in lock.parent.iterdir()) == [lock.name]
        # Writing still locks.
        with pytest.raises(backupkit.LockedError):
            reader.forget([snap.id])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_unlock_remove_all(repo: backupkit.Repository) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        _write_lock(repo, sleeper.pid)
        assert repo.unlock() == 0
        assert repo.unlock(remove_all=True) == 1
    finally:
        sleeper.kill()
        sleeper.wait()


def test_would_overwrite(repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    from conftest import restored

    snap = repo.backup(source)
    assert snap is not None
    target = tmp_path / "out"
    repo.restore(snap.id, target)
    changed = restored(target, source / "a.txt")
    changed.write_text("changed")
    with pytest.raises(backupkit.WouldOverwriteError, match=r"already exist.*overwrite=True") as e:
        repo.restore(snap.id, target)
    assert "--overwrite" not in str(e.value), "a CLI flag named in a Python error"
    assert changed.read_text() == "changed"
    result = repo.restore(snap.id, target, overwrite=True)
    assert result.files == 4
    assert changed.read_text() == "hello backupkit\n"


def test_invalid_input(repo: backupkit.Repository, source: Path) -> None:
    with pytest.raises(backupkit.InvalidInputError, match="tag"):
        repo.backup(source, tags=["a,b"])
    with pytest.raises(backupkit.InvalidInputError, match="read-data-subset"):
        repo.check(read_data_subset="7/3")
    with pytest.raises(TypeError):
        repo.backup(source, tags="not-a-list")
    with pytest.raises(TypeError, match="paths"):
        repo.backup(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="progress"):
        repo.backup(source, progress="print")  # type: ignore[arg-type]
    assert repo.snapshots() == []


def test_empty_ids_and_keep_last_zero_are_refused(repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    snap = repo.backup(source)
    assert snap is not None
    # An empty id would be a prefix of every snapshot.
    for empty in ("", " "):
        with pytest.raises(backupkit.InvalidInputError, match="empty snapshot id"):
            repo.forget([empty])
        with pytest.raises(backupkit.InvalidInputError, match="empty snapshot id"):
            repo.restore(empty, tmp_path / "out")
        with pytest.raises(backupkit.InvalidInputError, match="empty snapshot id"):
            repo.snapshot(empty)
    assert [s.id for s in repo.snapshots()] == [snap.id]
    assert not (tmp_path / "out").exists()
    db = tmp_path / "r.db"
    import sqlite3

    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(backupkit.InvalidInputError, match="keep_last"):
        repo.backup_database(db, keep_last=0)
    assert [s.id for s in repo.snapshots()] == [snap.id]


def test_an_unreadable_lock_is_named_and_unlock_removes_it(repo: backupkit.Repository, source: Path) -> None:
    locks = Path(repo.location) / "locks"
    locks.mkdir()
    (locks / "broken.json").write_text("")
    with pytest.raises(backupkit.LockedError, match="unreadable lock object"):
        repo.backup(source)
    assert repo.unlock() == 1
    assert repo.backup(source) is not None


def test_missing_source_is_backup_error(repo: backupkit.Repository, tmp_path: Path) -> None:
    with pytest.raises(backupkit.BackupError) as info:
        repo.backup(tmp_path / "does-not-exist")
    assert "does-not-exist" in str(info.value)
    assert repo.snapshots() == []
