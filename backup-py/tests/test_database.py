"""Databases from Python: seed 001's call at the end of an analysis run."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

import backupkit


def _results_db(path: Path, rows: int) -> None:
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE runs(id INTEGER PRIMARY KEY, score REAL)")
        c.executemany("INSERT INTO runs(score) VALUES (?)", [(i * 0.5,) for i in range(rows)])


def _count(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT count(*) FROM runs").fetchone()[0])


def test_backup_database_skips_recent_and_keeps_the_newest(repo: backupkit.Repository, tmp_path: Path) -> None:
    db = tmp_path / "outputs" / "results.db"
    db.parent.mkdir()
    _results_db(db, 2000)
    first = repo.backup_database(db, min_interval=3600, keep_last=10)
    assert first.backed_up and first.action == "backed_up"
    assert first.snapshot is not None and first.snapshot.kind == "database"
    assert first.pruned == []
    again = repo.backup_database(str(db), min_interval=3600, keep_last=10)
    assert again.action == "skipped"
    assert again.snapshot is not None and again.snapshot.id == first.snapshot.id
    made = [repo.backup_database(db, keep_last=2) for _ in range(3)]
    assert all(r.backed_up for r in made)
    assert sum(len(r.pruned) for r in made) == 2
    assert len(repo.snapshots()) == 2
    assert first.snapshot.id not in {s.id for s in repo.snapshots()}


def test_restore_database_is_verified_and_never_overwrites_silently(
    repo: backupkit.Repository, tmp_path: Path
) -> None:
    db = tmp_path / "results.db"
    _results_db(db, 1234)
    snap = repo.backup_database(db).snapshot
    assert snap is not None
    target = tmp_path / "test_db.db"
    assert repo.restore_database(snap.id, target) == {"runs": 1234}
    assert _count(target) == 1234
    with pytest.raises(backupkit.WouldOverwriteError, match=r"already exists \(pass force=True") as e:
        repo.restore_database(snap.id, target)
    assert "--force" not in str(e.value)
    assert repo.restore_database(snap.id, target, force=True) == {"runs": 1234}
    # restore() takes a database snapshot too, as the CLI's restore does.
    other = tmp_path / "via_restore.db"
    r = repo.restore(snap.id, other)
    assert r.tables == {"runs": 1234} and _count(other) == 1234
    with pytest.raises(backupkit.WouldOverwriteError, match="overwrite=True"):
        repo.restore(snap.id, other)
    assert repo.restore(snap.id, other, overwrite=True).tables == {"runs": 1234}
    with pytest.raises(backupkit.InvalidInputError, match="include"):
        repo.restore(snap.id, tmp_path / "x.db", include=["*"])


def test_a_writer_keeps_writing_and_the_dump_is_consistent(repo: backupkit.Repository, tmp_path: Path) -> None:
    """Two tables updated together in each transaction: the restored copy
    must have equal totals, whatever moment the dump caught."""
    db = tmp_path / "live.db"
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE a(v INTEGER)")
        c.execute("CREATE TABLE b(v INTEGER)")
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with sqlite3.connect(db, timeout=30) as w:
            while not stop.is_set():
                with w:
                    w.execute("INSERT INTO a VALUES (?)", (written[0],))
                    w.execute("INSERT INTO b VALUES (?)", (written[0],))
                written[0] += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        results = []
        during = []
        for _ in range(3):
            before = written[0]
            results.append(repo.backup_database(db))
            during.append(written[0] - before)
        # The writer committed while dumps ran (the GIL is released and the
        # online copy does not block writers).
        assert any(n > 0 for n in during), during
    finally:
        stop.set()
        t.join()
    for i, r in enumerate(results):
        assert r.snapshot is not None
        copy = tmp_path / f"copy{i}.db"
        tables = repo.restore_database(r.snapshot.id, copy)
        assert tables["a"] == tables["b"]
        with sqlite3.connect(copy) as c:
            sa = c.execute("SELECT count(*), coalesce(sum(v), 0) FROM a").fetchone()
            sb = c.execute("SELECT count(*), coalesce(sum(v), 0) FROM b").fetchone()
        assert sa == sb


def test_database_errors_are_typed(repo: backupkit.Repository, tmp_path: Path) -> None:
    with pytest.raises(backupkit.BackupError, match="missing.db"):
        repo.backup_database(tmp_path / "missing.db")
    (tmp_path / "notes.txt").write_text("not a database\n" * 50)
    with pytest.raises(backupkit.BackupError, match="notes.txt"):
        repo.backup_database(tmp_path / "notes.txt")
    with pytest.raises(backupkit.InvalidInputError, match="min_interval"):
        repo.backup_database(tmp_path / "x.db", min_interval=-1)
    assert repo.snapshots() == []
