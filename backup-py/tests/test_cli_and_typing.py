"""`python -m backupkit`, the stubs (stubtest), and typed use (mypy --strict)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import backupkit

HERE = Path(__file__).resolve().parent


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


def test_module_help() -> None:
    p = _run("-m", "backupkit", "--help")
    assert p.returncode == 0, p.stderr
    assert "Usage: backupkit" in p.stdout
    for command in ("init", "backup", "snapshots", "restore", "check", "forget", "unlock"):
        assert command in p.stdout


def test_module_cli_shares_the_repository(repo: backupkit.Repository, source: Path) -> None:
    snap = repo.backup(source)
    assert snap is not None
    p = _run("-m", "backupkit", "-r", repo.location, "backup", "--tag", "cli", str(source / "sub"))
    assert p.returncode == 0, p.stderr
    p = _run("-m", "backupkit", "-r", repo.location, "snapshots", "--json")
    assert p.returncode == 0, p.stderr
    listed = json.loads(p.stdout)
    ids = [s["id"] for s in listed]
    assert ids == [s.id for s in repo.snapshots()]
    assert len(ids) == 2 and ids[0] == snap.id
    assert listed[1]["tags"] == ["cli"]


def test_module_exit_codes(tmp_path: Path) -> None:
    p = _run("-m", "backupkit", "-r", str(tmp_path), "snapshots")
    assert p.returncode == 10
    assert "no backupkit repository" in p.stderr
    p = _run("-m", "backupkit", "no-such-command")
    assert p.returncode == 2


def test_module_ctrl_c_exits_130(repo: backupkit.Repository, big_source: Path) -> None:
    """Ctrl-C reaches the CLI's handler in the Python host: a clean stop."""
    cmd = [sys.executable, "-m", "backupkit", "-r", repo.location, "backup", str(big_source)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The backup's lock shows it runs (the CLI's handler is installed before).
    locks = Path(repo.location) / "locks"
    deadline = time.monotonic() + 30
    while not (locks.exists() and any(locks.iterdir())) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert repo.snapshots() == []


def _require_mypy() -> None:
    """mypy is installed by scripts/test.sh: under BACKUPKIT_REQUIRE_SERVICES=1
    its absence fails the test instead of skipping it."""
    try:
        import mypy  # noqa: F401
    except ImportError:
        if os.environ.get("BACKUPKIT_REQUIRE_SERVICES") == "1":
            pytest.fail("mypy is not installed and BACKUPKIT_REQUIRE_SERVICES=1")
        pytest.skip("mypy is not installed")


def test_stubtest(tmp_path: Path) -> None:
    _require_mypy()
    # The package and its native module (stubtest checks submodules too).
    p = _run("-m", "mypy.stubtest", "backupkit", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Success" in p.stdout


def _mypy(tmp_path: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return _run(
        "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(target),
        cwd=tmp_path,
    )


def test_typed_usage_passes_mypy_strict_and_runs(tmp_path: Path) -> None:
    _require_mypy()
    p = _mypy(tmp_path, HERE / "typed_usage.py")
    assert p.returncode == 0, p.stdout + p.stderr
    run = _run(str(HERE / "typed_usage.py"), str(tmp_path / "work"))
    assert run.returncode == 0, run.stderr
    assert "finished: 1 files" in run.stdout
    # The last line is the forgotten snapshot's id.
    assert re.fullmatch(r"\d{8}_\d{6}_\d{3}_files_[0-9a-f]{6}", run.stdout.strip().splitlines()[-1])


def test_mypy_rejects_misuse(tmp_path: Path) -> None:
    """The stubs carry real types: wrong uses are errors, not Any."""
    _require_mypy()
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import backupkit\n"
        "repo = backupkit.Repository('r')\n"
        "n: int = repo.location\n"
        "repo.backup('x', level='9')\n"
        "repo.check(True, 'subset')\n"
        "s = repo.snapshot('latest')\n"
        "s.id = 'other'\n"
    )
    p = _mypy(tmp_path, bad)
    assert p.returncode == 1
    out = p.stdout
    assert 'bad.py:3: error: Incompatible types in assignment' in out
    assert "bad.py:4: error:" in out
    assert "bad.py:5: error: Too many positional arguments" in out
    assert "bad.py:7: error:" in out
