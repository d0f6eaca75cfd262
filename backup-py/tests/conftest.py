"""Fixtures: a fresh repository, a small source tree, a large random one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import backupkit

# Python installs its Ctrl-C handler only when SIGINT is not ignored at
# start-up, and a shell's background job starts with SIGINT ignored: then
# `_thread.interrupt_main()` does nothing, and the Ctrl-C tests would test
# nothing. The tests want Python's own handler, wherever they run.
signal.signal(signal.SIGINT, signal.default_int_handler)

# Fixed modification times (with nanoseconds) so a restore can be compared
# exactly.
MTIME_NS = 1_700_000_000_123_456_789



def service_env(*names: str) -> os._Environ[str]:
    """The environment, once every variable in `names` is set (by
    scripts/services.sh); otherwise the test is skipped, or fails under
    BACKUPKIT_REQUIRE_SERVICES=1."""
    missing = [v for v in names if not os.environ.get(v)]
    if missing:
        if os.environ.get("BACKUPKIT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{missing[0]} is not set and BACKUPKIT_REQUIRE_SERVICES=1")
        pytest.skip(f"{missing[0]} is not set (run the tests through scripts/services.sh)")
    return os.environ

@pytest.fixture
def repo(tmp_path: Path) -> backupkit.Repository:
    r = backupkit.Repository(tmp_path / "repo")
    r.init()
    return r


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small tree: text, binary, an executable, a symlink, a log file."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello backupkit\n")
    (src / "sub" / "data.bin").write_bytes(os.urandom(200_000))
    script = src / "sub" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o750)
    (src / "skip.log").write_text("noise\n")
    (src / "link").symlink_to("a.txt")
    for i, p in enumerate(["a.txt", "sub/data.bin", "sub/run.sh", "skip.log"]):
        os.utime(src / p, ns=(MTIME_NS, MTIME_NS + i * 1_000_000_001))
    return src


def restored(target: Path, original: Path) -> Path:
    """Where a restore into `target` puts `original` (its absolute path below
    the target)."""
    return target / os.path.abspath(original).lstrip("/")


@pytest.fixture(scope="session")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 150 MB of random data in six files (incompressible: slow to
    back up with gzip)."""
    src = tmp_path_factory.mktemp("big")
    for i in range(6):
        with open(src / f"random{i}.bin", "wb") as f:
            for _ in range(25):
                f.write(os.urandom(1 << 20))
    return src
