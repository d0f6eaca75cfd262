"""backupkit.mirror and backupkit.verify_mirror from Python: plain copies,
only what changed, guarded deletes, verification, cancellation."""

from __future__ import annotations

import _thread
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import backupkit

from conftest import MTIME_NS


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and ".backupkit-mirror" not in p.parts
    }


def test_a_mirror_is_plain_files_and_a_rerun_copies_nothing(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    result = backupkit.mirror(source, dest)
    assert isinstance(result, backupkit.MirrorResult)
    assert (result.copied, result.updated, result.deleted, result.links) == (4, 0, 0, 1)
    assert result.complete and result.failed == [] and not result.dry_run
    assert _files(dest) == _files(source)
    assert (dest / "link").readlink() == Path("a.txt")
    assert (dest / "a.txt").stat().st_mtime_ns == MTIME_NS
    assert (dest / "sub" / "run.sh").stat().st_mode & 0o777 == 0o750

    again = backupkit.mirror(str(source), str(dest))
    assert (again.copied, again.updated, again.unchanged, again.bytes) == (0, 0, 5, 0)
    assert "copied=0" in repr(again)


def test_changes_excludes_dry_run_and_delete(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    backupkit.mirror(source, dest, exclude=["*.log"])
    assert not (dest / "skip.log").exists()
    (source / "a.txt").write_text("changed\n")
    (source / "sub" / "data.bin").unlink()
    planned: list[dict[str, Any]] = []
    dry = backupkit.mirror(
        source, dest, delete=True, dry_run=True, exclude=["*.log"], progress=planned.append
    )
    assert dry.dry_run and (dry.updated, dry.deleted) == (1, 1)
    actions = sorted((e["action"], e["path"]) for e in planned if e["event"] == "planned")
    assert actions == [("delete", "sub/data.bin"), ("update", "a.txt")]
    assert (dest / "sub" / "data.bin").exists(), "a dry run deletes nothing"
    done = backupkit.mirror(source, dest, delete=True, exclude=["*.log"], verify="checksum")
    assert (done.updated, done.deleted) == (1, 1)
    assert done.verify is not None and done.verify.ok and done.verify.hashed == 2
    assert (dest / "a.txt").read_text() == "changed\n"


def test_deleting_is_guarded(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    backupkit.mirror(source, dest)
    empty = tmp_path / "unmounted"
    empty.mkdir()
    with pytest.raises(backupkit.RefusedError, match="empty"):
        backupkit.mirror(empty, dest, delete=True)
    with pytest.raises(backupkit.BackupError, match="mirror source not found"):
        backupkit.mirror(tmp_path / "nowhere", dest, delete=True)
    (source / "a.txt").unlink()
    (source / "skip.log").unlink()
    capped = backupkit.mirror(source, dest, delete=True, max_delete="1")
    assert capped.deleted == 0 and not capped.complete
    assert capped.refused is not None and "deletes 2" in capped.refused
    assert (dest / "a.txt").exists()
    kept = backupkit.mirror(source, dest, delete=True, backup_dir="_old")
    assert kept.deleted == 2 and kept.complete
    assert (dest / "_old" / "a.txt").read_text() == "hello backupkit\n"
    with pytest.raises(backupkit.InvalidInputError):
        backupkit.mirror(source, dest, delete=True, max_delete="many")
    with pytest.raises(backupkit.InvalidInputError):
        backupkit.mirror(source, dest, verify="everything")


def test_verify_mirror_finds_bit_rot_and_names_it(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    backupkit.mirror(source, dest)
    ok = backupkit.verify_mirror(source, dest, mode="checksum", exact=True)
    assert ok.ok and ok.hashed == 4 and ok.files == 4
    victim = dest / "sub" / "data.bin"
    st = victim.stat()
    body = bytearray(victim.read_bytes())
    body[1000] ^= 0xFF
    victim.write_bytes(bytes(body))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert backupkit.verify_mirror(source, dest, mode="size").ok
    with pytest.raises(backupkit.MirrorMismatchError, match="sub/data.bin") as e:
        backupkit.verify_mirror(source, dest, mode="checksum")
    report = e.value.report
    assert isinstance(report, backupkit.VerifyResult) and not report.ok
    assert [p for p, _ in report.different] == ["sub/data.bin"]
    with pytest.raises(backupkit.IntegrityError) as e2:  # a subclass of it
        backupkit.mirror(source, dest, verify="sample:100")
    assert isinstance(e2.value, backupkit.MirrorMismatchError)
    assert isinstance(e2.value.mirror, backupkit.MirrorResult)
    repaired = backupkit.mirror(source, dest, checksum=True, verify="checksum")
    assert repaired.updated == 1 and repaired.complete


def test_several_sources_go_to_their_names(source: Path, tmp_path: Path) -> None:
    other = tmp_path / "videos"
    other.mkdir()
    (other / "v.mp4").write_bytes(b"v")
    dest = tmp_path / "mirror"
    result = backupkit.mirror([source, other], dest)
    assert result.copied == 5
    assert (dest / "src" / "a.txt").exists() and (dest / "videos" / "v.mp4").exists()


def test_ctrl_c_and_failing_callbacks_cancel_cleanly(big_source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"

    def ctrl_c_after_the_first_file(event: dict[str, Any]) -> None:
        # Ctrl-C as the second of six files is being copied.
        if event["event"] == "file":
            _thread.interrupt_main()
            time.sleep(1)

    with pytest.raises(KeyboardInterrupt):
        backupkit.mirror(big_source, dest, transfers=1, progress=ctrl_c_after_the_first_file)
    src_files = _files(big_source)
    for name, body in _files(dest).items():
        assert ".tmp-" not in name, f"temporary file left: {name}"
        assert body == src_files[name], f"partial file at a final name: {name}"
    assert len(_files(dest)) < len(src_files), "cancelled before the end"

    def stop(event: dict[str, Any]) -> None:
        if event["event"] == "file":
            raise RuntimeError("enough")

    with pytest.raises(RuntimeError, match="enough"):
        backupkit.mirror(big_source, tmp_path / "other", progress=stop)
    done = backupkit.mirror(big_source, dest, verify="checksum")
    assert done.complete and _files(dest) == src_files


# Runs in a fresh interpreter, so that its peak RSS is the mirror's alone.
MEMORY_SCRIPT = """
import resource, sys
import backupkit
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = backupkit.mirror(sys.argv[1], sys.argv[2], verify="checksum")
assert r.complete and r.bytes == int(sys.argv[3]), r
print(baseline, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_a_1_gib_file_is_mirrored_with_flat_memory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 1 << 30
    with open(src / "recording.bin", "wb") as f:
        f.truncate(size)  # sparse: cheap to make, 1 GiB to read and write
    dest = tmp_path / "dest"
    p = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(src), str(dest), str(size)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    baseline, peak = (int(x) for x in p.stdout.split())
    assert (dest / "recording.bin").stat().st_size == size
    grown = peak - baseline
    assert grown < 64 * 1024, f"peak RSS grew by {grown} KiB"


def test_copy_links_copies_the_target_of_a_symlink(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    result = backupkit.mirror(source, dest, copy_links=True)
    assert result.links == 0 and result.copied == 5
    assert not (dest / "link").is_symlink()
    assert (dest / "link").read_text() == "hello backupkit\n"
