"""A small typed program using the public API: checked with `mypy --strict`
and run by test_cli_and_typing.py."""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path
from typing import Any

import backupkit


def report(event: dict[str, Any]) -> None:
    if event["event"] == "finished":
        print(f"finished: {event['files']} files")


def run(workdir: Path) -> list[str]:
    source = workdir / "data"
    source.mkdir(parents=True, exist_ok=True)
    (source / "note.txt").write_text("typed\n")

    repo = backupkit.Repository(workdir / "repo")
    repo.init()
    snap: backupkit.Snapshot | None = repo.backup(
        [source], tags=["typed"], compression="zstd", level=3, progress=report
    )
    assert snap is not None
    when: datetime.datetime = snap.time
    size: int = snap.size
    tags: list[str] = snap.tags
    meta: dict[str, Any] = snap.to_dict()
    entries: list[dict[str, Any]] = repo.ls(snap.id)
    restored: backupkit.RestoreResult = repo.restore(snap.id, workdir / "out", overwrite=False)
    target: Path = restored.target
    try:
        check: backupkit.CheckResult = repo.check(read_data=True)
        problems: list[tuple[str, str]] = check.problems
    except backupkit.IntegrityError as e:
        failed = e.result
        problems = failed.problems if failed is not None else []
    mirrored: backupkit.MirrorResult = backupkit.mirror(
        source, workdir / "mirror", delete=True, verify="checksum", exclude=["*.tmp"]
    )
    copied: int = mirrored.copied
    failed_files: list[tuple[str, str]] = mirrored.failed
    try:
        verified: backupkit.VerifyResult = backupkit.verify_mirror(
            [source], workdir / "mirror", mode="sample:10"
        )
        missing: list[str] = verified.missing
    except backupkit.MirrorMismatchError as e:
        missing = e.report.missing if e.report is not None else []
    print(copied, failed_files, missing)
    config_file = workdir / "backupkit.yaml"
    config_file.write_text(
        f"jobs:\n  lab:\n    sources: [{source}]\n    destinations:\n"
        f"      nas: {{mirror: {workdir / 'job-mirror'}}}\n"
    )
    try:
        config: backupkit.Config = backupkit.load_config(config_file)
    except backupkit.ConfigError as e:
        lines: list[int] = [p["line"] for p in e.problems]
        raise SystemExit(f"config problems on lines {lines}") from e
    results: list[backupkit.DestinationResult] = backupkit.run(
        config, only=["nas"], progress=lambda ev: None
    )
    ok: bool = all(r.ok for r in results)
    if os.environ.get("BACKUPKIT_TYPED_PULL"):
        pulled: list[backupkit.DestinationResult] = backupkit.pull(
            "fleet", devices=["004"], kinds=["results"], config=config_file
        )
        state: dict[str, Any] = backupkit.service_status(
            "http://127.0.0.1:8093", device="004", token=None
        )
        print(len(pulled), state.get("state"))
    shown: dict[str, object] = config.show()
    print(ok, config.jobs, len(shown), [r.error for r in results])
    removed: list[str] = repo.forget([snap.id])
    unlocked: int = repo.unlock(remove_all=False)
    print(when.isoformat(), size, tags, len(meta), len(entries), target.name, problems, unlocked)
    return removed


if __name__ == "__main__":
    print(",".join(run(Path(sys.argv[1]))))
