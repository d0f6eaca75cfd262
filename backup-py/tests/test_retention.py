"""Retention from Python: restic's policies as keyword arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import backupkit


def _set_time(repo: backupkit.Repository, snapshot_id: str, when: str) -> None:
    """Moves a snapshot's recorded time (policies work on it)."""
    meta_path = Path(repo.location) / "snapshots" / snapshot_id / "snapshot.json"
    meta = json.loads(meta_path.read_text())
    meta["timestamp"] = when
    meta_path.write_text(json.dumps(meta))


def _nightly(repo: backupkit.Repository, source: Path, days: list[str]) -> list[str]:
    """One snapshot per day given, at noon UTC (the same date in any zone)."""
    ids = []
    for i, day in enumerate(days):
        snap = repo.backup(source)
        assert snap is not None
        _set_time(repo, snap.id, f"{day}T12:00:0{i % 10}Z")
        ids.append(snap.id)
    return ids


def test_grandfather_father_son_in_one_call(repo: backupkit.Repository, source: Path) -> None:
    # 20-21 Nov are ISO week 47, 23-24 Nov week 48; October is another month.
    days = ["2026-10-30", "2026-11-20", "2026-11-21", "2026-11-23", "2026-11-24"]
    ids = _nightly(repo, source, days)
    would = repo.forget(keep_daily=2, keep_weekly=4, keep_monthly=12, dry_run=True)
    assert would == [ids[1]], "20 Nov: neither among the 2 newest days nor the newest of its week or month"
    assert len(repo.snapshots()) == 5, "a dry run deleted something"
    removed = repo.forget(keep_daily=2, keep_weekly=4, keep_monthly=12)
    assert removed == [ids[1]]
    assert sorted(s.id for s in repo.snapshots()) == sorted(ids[:1] + ids[2:])
    assert not (Path(repo.location) / "snapshots" / ids[1]).exists()


def test_keep_last_unlimited_and_tags(repo: backupkit.Repository, source: Path) -> None:
    ids = _nightly(repo, source, ["2026-11-20", "2026-11-21", "2026-11-22"])
    assert repo.forget(keep_last=-1, dry_run=True) == []
    tagged = repo.backup(source, tags=["paper", "final"])
    assert tagged is not None
    _set_time(repo, tagged.id, "2026-11-01T12:00:00Z")
    removed = repo.forget(keep_last=1, keep_tags=["paper,final"])
    assert sorted(removed) == sorted(ids[:2])
    assert sorted(s.id for s in repo.snapshots()) == sorted([ids[2], tagged.id])


def test_bad_policies_raise_invalid_input(repo: backupkit.Repository, source: Path) -> None:
    snap = repo.backup(source)
    assert snap is not None
    with pytest.raises(backupkit.InvalidInputError, match="not both"):
        repo.forget([snap.id], keep_last=1)
    with pytest.raises(backupkit.InvalidInputError, match="policy"):
        repo.forget()
    with pytest.raises(backupkit.InvalidInputError, match="keep_daily"):
        repo.forget(keep_daily=-5)
    with pytest.raises(backupkit.InvalidInputError, match="duration"):
        repo.forget(keep_within="3 weeks")
    assert [s.id for s in repo.snapshots()] == [snap.id]
