"""The GIL is released while the engine works; Ctrl-C and failing progress
callbacks cancel cleanly."""

from __future__ import annotations

import _thread
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import backupkit


def _leftovers(repo: backupkit.Repository) -> list[str]:
    root = Path(repo.location)
    found = []
    for sub in ("snapshots", "locks"):
        if (root / sub).exists():
            found += [f"{sub}/{p.name}" for p in (root / sub).iterdir()]
    return found


def test_gil_released_during_backup(repo: backupkit.Repository, big_source: Path) -> None:
    counter = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1
            time.sleep(0.005)

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.05)
        before = counter
        started = time.monotonic()
        snap = repo.backup(big_source)
        elapsed = time.monotonic() - started
        during = counter - before
    finally:
        stop.set()
        spinner.join()
    assert snap is not None and snap.file_count == 6
    assert elapsed > 0.3, "backup too fast to tell whether the GIL was released"
    # With the GIL held for the whole call the spinner could not run at all.
    assert during > 20, (during, elapsed)
    assert during > (elapsed / 0.005) * 0.1, (during, elapsed)


def test_ctrl_c_cancels_cleanly(repo: backupkit.Repository, big_source: Path, source: Path) -> None:
    first = repo.backup(source)
    assert first is not None
    before = [s.id for s in repo.snapshots()]

    timer = threading.Timer(0.3, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            repo.backup(big_source)
    finally:
        timer.cancel()
        timer.join()
    elapsed = time.monotonic() - started
    assert elapsed < 10

    assert [s.id for s in repo.snapshots()] == before
    # The cancelled backup removed its directory and released its lock.
    assert sorted(_leftovers(repo)) == [f"snapshots/{first.id}"]

    snap = repo.backup(big_source)
    assert snap is not None and snap.file_count == 6
    result = repo.check(read_data=True)
    assert result.ok and result.snapshots_read == 2


def test_failing_progress_callback_cancels(repo: backupkit.Repository, big_source: Path) -> None:
    seen: list[dict[str, Any]] = []

    def progress(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["event"] == "file" and event["bytes"] > 0:
            raise RuntimeError("stop right there")

    with pytest.raises(RuntimeError, match="stop right there"):
        repo.backup(big_source, progress=progress)
    assert [e["event"] for e in seen if e["event"] == "file" and e["bytes"] > 0] == ["file"]
    assert repo.snapshots() == []
    assert _leftovers(repo) == []
    assert repo.check().ok


def test_threads_share_a_repository(repo: backupkit.Repository, source: Path) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []
    # Each backup waits at its first file for all the others: they provably
    # run at once (a backup that waited for another would break the barrier).
    barrier = threading.Barrier(4, timeout=60)

    def work() -> None:
        first = threading.Event()

        def progress(event: dict[str, Any]) -> None:
            if event["event"] == "file" and not first.is_set():
                first.set()
                barrier.wait()

        try:
            snap = repo.backup(source, progress=progress)
            assert snap is not None
            ids.append(snap.id)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(ids) == sorted(s.id for s in repo.snapshots())
    assert len(set(ids)) == 4
