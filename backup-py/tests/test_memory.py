"""Memory stays flat: a multi-GB file is backed up, checked and restored
through bounded buffers, whatever its size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Runs in a fresh interpreter, so that its peak RSS is this work's alone.
SCRIPT = """
import resource, sys
import backupkit
repo = backupkit.Repository(sys.argv[1])
repo.init()
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[2] != "-":
    snap = repo.backup(sys.argv[2])
    assert snap is not None and snap.source_size == int(sys.argv[4]), snap
    assert repo.check(read_data=True).ok
    result = repo.restore(snap.id, sys.argv[3])
    assert result.bytes == int(sys.argv[4]), result
print(baseline, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

SIZE = 2 << 30  # 2 GiB
BOUND_KIB = 96 * 1024  # what the work may add to the interpreter's peak


def _peak(*args: str) -> tuple[int, int]:
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert p.returncode == 0, p.stderr
    baseline, peak = p.stdout.split()
    return int(baseline), int(peak)


def test_peak_memory_of_a_2_gib_backup_check_and_restore_is_bounded(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = src / "recording.bin"
    with open(big, "wb") as f:
        f.truncate(SIZE)  # sparse: cheap to make, 2 GiB to read
    out = tmp_path / "out"
    baseline, peak = _peak(str(tmp_path / "repo"), str(src), str(out), str(SIZE))
    restored = out / str(big.resolve()).lstrip("/")
    assert restored.stat().st_size == SIZE
    grown = peak - baseline
    # Reading the file whole would add 2 GiB; bounded buffers add little.
    assert grown < BOUND_KIB, f"peak RSS grew by {grown} KiB (baseline {baseline} KiB)"
