"""Backups, listings and restores through the Python API."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import backupkit
from conftest import restored


def test_round_trip_with_pathlib(repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    assert repo.snapshots() == []
    snap = repo.backup(source, tags=["nightly", "py"])
    assert isinstance(snap, backupkit.Snapshot)
    assert snap.status == "success" and not snap.incomplete
    assert snap.kind == "files"
    assert snap.paths == [str(source.resolve())]
    assert snap.tags == ["nightly", "py"]
    assert snap.file_count == 4  # a.txt, data.bin, run.sh, skip.log
    assert snap.dir_count == 2
    assert snap.source_size == sum(
        (source / p).stat().st_size for p in ["a.txt", "sub/data.bin", "sub/run.sh", "skip.log"]
    )
    assert snap.size > 200_000  # random data does not compress
    assert snap.compression == "gzip" and snap.level == 6
    assert snap.checksum.startswith("sha256:")
    assert snap.warnings == []
    assert snap.duration >= 0.0

    # time is an aware UTC datetime equal to snapshot.json's timestamp.
    assert isinstance(snap.time, datetime.datetime)
    assert snap.time.tzinfo is datetime.timezone.utc
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - snap.time).total_seconds()) < 60
    meta = snap.to_dict()
    assert meta["id"] == snap.id
    assert meta["timestamp"].startswith(snap.time.strftime("%Y-%m-%dT%H:%M:%S.%f"))
    assert meta["size_bytes"] == snap.size and meta["files_included"] == ["files.tar.gz"]
    assert snap.id in repr(snap)

    listed = repo.snapshots()
    assert [s.id for s in listed] == [snap.id]
    assert repo.snapshot(snap.id).id == snap.id
    assert repo.snapshot(snap.id[:20]).id == snap.id
    assert repo.snapshot("latest").id == snap.id

    target = tmp_path / "out"
    result = repo.restore(snap.id, target)
    assert isinstance(result, backupkit.RestoreResult)
    assert result.snapshot_id == snap.id
    assert isinstance(result.target, Path) and result.target == target
    assert (result.files, result.links, result.skipped) == (4, 1, 0)
    assert result.bytes == snap.source_size

    for rel in ["a.txt", "sub/data.bin", "sub/run.sh", "skip.log"]:
        orig, back = source / rel, restored(target, source / rel)
        assert back.read_bytes() == orig.read_bytes(), rel
        so, sb = orig.stat(), back.stat()
        assert stat.S_IMODE(sb.st_mode) == stat.S_IMODE(so.st_mode), rel
        assert sb.st_mtime_ns == so.st_mtime_ns, rel
    assert stat.S_IMODE(restored(target, source / "sub/run.sh").stat().st_mode) == 0o750
    link = restored(target, source / "link")
    assert link.is_symlink() and os.readlink(link) == "a.txt"

    check = repo.check(read_data=True)
    assert check.ok and check.problems == [] and check.unfinished == []
    assert (check.snapshots_checked, check.snapshots_read) == (1, 1)


def test_str_paths_and_sequences(repo: backupkit.Repository, source: Path) -> None:
    one = repo.backup(str(source / "a.txt"))
    assert one is not None and one.file_count == 1
    two = repo.backup([source / "a.txt", str(source / "sub")])
    assert two is not None and two.file_count == 3
    assert sorted(two.paths) == sorted([str(source / "a.txt"), str(source / "sub")])
    assert [s.id for s in repo.snapshots()] == [one.id, two.id]  # oldest first
    repo_by_str = backupkit.Repository(repo.location)
    assert isinstance(repo.location, str)
    assert [s.id for s in repo_by_str.snapshots()] == [one.id, two.id]


def test_tags_and_exclude(repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    snap = repo.backup([source], tags=["t1"], exclude=["*.log"])
    assert snap is not None
    assert snap.tags == ["t1"] and snap.file_count == 3
    assert snap.to_dict()["excludes"] == ["*.log"]
    entries = repo.ls(snap.id)
    paths = {e["path"] for e in entries}
    assert any(p.endswith("/a.txt") for p in paths)
    assert not any(p.endswith("skip.log") for p in paths)
    by_name = {e["path"].rsplit("/", 1)[-1]: e for e in entries}
    assert by_name["a.txt"]["kind"] == "file" and by_name["a.txt"]["size"] == 16
    assert by_name["link"]["kind"] == "symlink" and by_name["link"]["link"] == "a.txt"
    assert by_name["run.sh"]["mode"] == 0o750
    assert by_name["sub"]["kind"] == "dir"

    target = tmp_path / "out"
    repo.restore(snap.id, target)
    assert restored(target, source / "a.txt").exists()
    assert not restored(target, source / "skip.log").exists()


def test_restore_include(repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    snap = repo.backup(source)
    assert snap is not None
    target = tmp_path / "only-sub"
    result = repo.restore(snap.id, target, include=[str(source.resolve() / "sub")])
    assert result.files == 2 and result.skipped > 0
    assert restored(target, source / "sub/data.bin").exists()
    assert not restored(target, source / "a.txt").exists()


@pytest.mark.parametrize(("compression", "name"), [("zstd", "files.tar.zst"), ("none", "files.tar")])
def test_other_compressions(
    repo: backupkit.Repository, source: Path, tmp_path: Path, compression: str, name: str
) -> None:
    snap = repo.backup(source, compression=compression)
    assert snap is not None and snap.compression == compression
    assert snap.to_dict()["files_included"] == [name]
    assert (Path(repo.location) / "snapshots" / snap.id / name).is_file()
    repo.restore(snap.id, tmp_path / "out")
    back = restored(tmp_path / "out", source / "sub/data.bin")
    assert back.read_bytes() == (source / "sub/data.bin").read_bytes()
    assert repo.check(read_data=True).ok


def test_level(repo: backupkit.Repository, source: Path) -> None:
    snap = repo.backup(source, compression="zstd", level=19)
    assert snap is not None and snap.level == 19
    for compression, level in [("zstd", 20), ("zstd", 0), ("gzip", 10), ("gzip", -1)]:
        with pytest.raises(backupkit.InvalidInputError, match="level"):
            repo.backup(source, compression=compression, level=level)
    with pytest.raises(backupkit.InvalidInputError, match="compression"):
        repo.backup(source, compression="lzma")
    assert len(repo.snapshots()) == 1


def test_dry_run_writes_nothing(repo: backupkit.Repository, source: Path) -> None:
    events: list[dict[str, Any]] = []
    assert repo.backup(source, dry_run=True, progress=events.append) is None
    assert repo.snapshots() == []
    assert any(e["event"] == "file" and e["path"].endswith("a.txt") for e in events)


def test_progress_events(repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    import threading

    events: list[dict[str, Any]] = []
    threads: set[int] = set()

    def progress(event: dict[str, Any]) -> None:
        threads.add(threading.get_ident())
        events.append(event)

    snap = repo.backup(source, progress=progress)
    assert snap is not None
    assert threads == {threading.get_ident()}  # delivered on the calling thread
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert events[0] == {"event": "started", "operation": "backup", "snapshot": snap.id}
    files = {e["path"]: e["bytes"] for e in events if e["event"] == "file"}
    base = str(source.resolve()).lstrip("/")
    assert files[f"{base}/a.txt"] == 16
    assert files[f"{base}/sub/data.bin"] == 200_000
    assert f"{base}/link" in files
    assert sorted(p[len(base) :] for p in files) == [
        "", "/a.txt", "/link", "/skip.log", "/sub", "/sub/data.bin", "/sub/run.sh"
    ]
    finished = events[-1]
    assert finished["operation"] == "backup" and finished["files"] == 4
    assert finished["bytes"] == snap.source_size

    events.clear()
    repo.restore(snap.id, tmp_path / "out", progress=progress)
    assert events[0]["event"] == "started" and events[0]["operation"] == "restore"
    assert events[-1]["event"] == "finished"
    assert any(e["event"] == "file" and e["path"] == f"{base}/sub/data.bin" for e in events)


def test_progress_none_is_accepted(repo: backupkit.Repository, source: Path) -> None:
    assert repo.backup(source, progress=None) is not None


def test_forget_and_unlock(repo: backupkit.Repository, source: Path) -> None:
    a = repo.backup(source)
    b = repo.backup(source)
    assert a is not None and b is not None
    assert repo.forget([a.id]) == [a.id]
    assert [s.id for s in repo.snapshots()] == [b.id]
    assert not (Path(repo.location) / "snapshots" / a.id).exists()
    assert repo.unlock() == 0
    assert repo.unlock(remove_all=True) == 0


def test_repository_does_not_touch_disk(tmp_path: Path) -> None:
    where = tmp_path / "not" / "yet"
    r = backupkit.Repository(where)
    assert r.location == str(where)
    assert not where.exists() and not where.parent.exists()
    assert "Repository(" in repr(r)
