"""Deduplicated repositories through the Python API."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import backupkit
from conftest import restored


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stat cache of dedup repositories goes to the test's directory."""
    monkeypatch.setenv("BACKUPKIT_CACHE_DIR", str(tmp_path / "cache"))


def test_dedup_repository_round_trip_rerun_copy_and_export(source: Path, tmp_path: Path) -> None:
    repo = backupkit.Repository(tmp_path / "dedup")
    repo.init(dedup=True)
    assert repo.is_dedup()
    assert (tmp_path / "dedup" / "restore.py").is_file()
    first = repo.backup(source)
    meta = first.to_dict()
    assert meta["files_included"] == ["chunks"] and meta["format"] == 4
    assert meta["dedup"]["new_chunks"] == meta["dedup"]["chunks"] > 0
    again = repo.backup(source, no_cache=True)
    assert again.to_dict()["dedup"]["new_chunks"] == 0
    assert again.size == 0

    target = tmp_path / "out"
    result = repo.restore(again.id, target)
    assert result.files == 4
    assert (restored(target, source) / "sub" / "data.bin").read_bytes() == (
        source / "sub" / "data.bin"
    ).read_bytes()
    report = repo.check(read_data=True)
    assert report.ok

    plain = backupkit.Repository(tmp_path / "plain")
    plain.init()
    assert not plain.is_dedup()
    copied = repo.copy(plain)
    assert copied.copied == [first.id, again.id]
    assert plain.snapshot(first.id).to_dict()["files_included"] == ["files.tar.zst"]
    assert plain.check(read_data=True).ok

    archive = tmp_path / "first.tar.gz"
    size = repo.export(first.id, archive)
    assert size > 200_000
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith("sub/data.bin") for n in names)
    with pytest.raises(backupkit.BackupError, match="exists"):
        repo.export(first.id, archive)


def test_restore_py_needs_nothing_but_python(source: Path, tmp_path: Path) -> None:
    pytest.importorskip("zstandard")
    repo = backupkit.Repository(tmp_path / "dedup")
    repo.init(dedup=True)
    snap = repo.backup(source)
    out = tmp_path / "out"
    out.mkdir()
    stream = subprocess.run(
        [sys.executable, str(tmp_path / "dedup" / "restore.py"), snap.id, str(tmp_path / "dedup")],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=stream, check=True)
    assert (restored(out, source) / "a.txt").read_text() == "hello backupkit\n"


def _pack_count(repo_dir: Path) -> int:
    return sum(1 for p in (repo_dir / "packs").rglob("*") if p.is_file())


def test_prune_marks_then_deletes_what_no_snapshot_uses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "old.bin").write_bytes(bytes(range(256)) * 4096 + b"old" * 100_000)
    repo = backupkit.Repository(tmp_path / "dedup")
    repo.init(dedup=True)
    old = repo.backup(data)
    (data / "old.bin").unlink()
    (data / "new.bin").write_bytes(b"new-" * 400_000)
    kept = repo.backup(data)
    repo.forget([old.id])
    before = _pack_count(tmp_path / "dedup")

    waiting = repo.prune()  # the default grace period: marked only
    assert waiting["marked_packs"] >= 1
    assert len(waiting["waiting"]) == 1 and "grace" in waiting["waiting"][0]["reason"]
    assert _pack_count(tmp_path / "dedup") >= before

    report = repo.prune(grace=0)
    assert report["marks_swept"] == 1 and report["swept"]["packs_deleted"] >= 1
    assert _pack_count(tmp_path / "dedup") < before + waiting["repacked_packs"] + 1
    assert repo.check(read_data=True).ok
    target = tmp_path / "out"
    repo.restore(kept.id, target)
    assert (restored(target, data) / "new.bin").read_bytes() == b"new-" * 400_000

    with pytest.raises(backupkit.InvalidInputError):
        repo.prune(grace=-1)
