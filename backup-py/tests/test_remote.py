"""Repositories in object stores, and copy between any two repositories.

The S3 tests need the moto server that scripts/services.sh starts (it
exports BACKUPKIT_TEST_S3_*); without it they are skipped, unless
BACKUPKIT_REQUIRE_SERVICES=1, which makes them fail.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

import backupkit
from conftest import restored, service_env

S3_VARS = (
    "BACKUPKIT_TEST_S3_ENDPOINT",
    "BACKUPKIT_TEST_S3_BUCKET",
    "BACKUPKIT_TEST_S3_ACCESS_KEY_ID",
    "BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY",
)


@pytest.fixture
def s3_repo() -> backupkit.Repository:
    env = service_env(*S3_VARS)
    location = f"s3://{env['BACKUPKIT_TEST_S3_BUCKET']}/py-{os.getpid()}-{time.time_ns()}"
    repo = backupkit.Repository(
        location,
        options={
            "endpoint": env["BACKUPKIT_TEST_S3_ENDPOINT"],
            "allow_http": "true",
            "region": "us-east-1",
            "access_key_id": env["BACKUPKIT_TEST_S3_ACCESS_KEY_ID"],
            "secret_access_key": env["BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY"],
        },
    )
    repo.init()
    return repo


def test_s3_repository_round_trip_and_copy(
    s3_repo: backupkit.Repository, repo: backupkit.Repository, source: Path, tmp_path: Path
) -> None:
    snap = s3_repo.backup(source, tags=["cloud"])
    assert snap is not None
    assert [s.id for s in s3_repo.snapshots()] == [snap.id]
    assert s3_repo.check(read_data=True).ok
    result = s3_repo.restore(snap.id, tmp_path / "out")
    assert result.files >= 4
    out = restored(tmp_path / "out", source)
    assert (out / "sub" / "data.bin").read_bytes() == (source / "sub" / "data.bin").read_bytes()

    # S3 -> local: copied once, skipped the second time.
    copied = s3_repo.copy(repo)
    assert copied.copied == [snap.id] and copied.skipped == []
    assert copied.bytes > 0
    again = s3_repo.copy(repo, [snap.id[:15]])
    assert again.copied == [] and again.skipped == [snap.id]
    assert [s.id for s in repo.snapshots()] == [snap.id]
    assert repo.check(read_data=True).ok

    # A database snapshot in the same S3 repository, restored from it.
    db = tmp_path / "results.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE runs(id INTEGER PRIMARY KEY, score REAL)")
        conn.executemany("INSERT INTO runs(score) VALUES (?)", [(i / 7,) for i in range(500)])
    conn.close()
    done = s3_repo.backup_database(db)
    assert done.backed_up and done.snapshot is not None
    rows = s3_repo.restore_database(done.snapshot.id, tmp_path / "restored.db")
    assert rows == {"runs": 500}


def test_repr_and_errors_never_show_option_values(tmp_path: Path) -> None:
    repo = backupkit.Repository(
        "s3://backupkit-nowhere/p",
        options={
            "endpoint": "http://127.0.0.1:9",
            "allow_http": "true",
            "region": "us-east-1",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "py-secret-value-42",
            "retry_timeout": "1s",
        },
    )
    assert "py-secret-value-42" not in repr(repo)
    with pytest.raises(backupkit.BackupError) as err:
        repo.snapshots()
    assert "s3://backupkit-nowhere/p" in str(err.value)
    assert "py-secret-value-42" not in str(err.value)
    with pytest.raises(backupkit.InvalidInputError, match="unknown option"):
        backupkit.Repository("s3://b/p", options={"colour": "blue"}).snapshots()


def test_copy_between_local_repositories(
    repo: backupkit.Repository, source: Path, tmp_path: Path
) -> None:
    first = repo.backup(source)
    second = repo.backup(source)
    assert first is not None and second is not None
    mirror = backupkit.Repository(tmp_path / "mirror")
    mirror.init()
    events: list[dict[str, object]] = []
    result = repo.copy(mirror, ["latest"], progress=events.append)
    assert result.copied == [second.id]
    assert any(e["event"] == "finished" for e in events)
    result = repo.copy(mirror)
    assert result.copied == [first.id] and result.skipped == [second.id]
    assert [s.id for s in mirror.snapshots()] == [first.id, second.id]
    with pytest.raises(backupkit.InvalidInputError, match="two repositories"):
        repo.copy(repo)
    with pytest.raises(backupkit.SnapshotNotFoundError):
        repo.copy(mirror, ["nonexistent"])


def test_sftp_and_rclone_repositories(
    repo: backupkit.Repository, source: Path, tmp_path: Path
) -> None:
    env = service_env("BACKUPKIT_TEST_SSH_CONFIG", "BACKUPKIT_TEST_SSH_HOST", "BACKUPKIT_TEST_SFTP_DIR",
                      "BACKUPKIT_TEST_RCLONE_CONFIG", "BACKUPKIT_TEST_RCLONE_SFTP_REMOTE")
    unique = f"py-{os.getpid()}-{time.time_ns()}"
    sftp = backupkit.Repository(
        f"sftp://{env['BACKUPKIT_TEST_SSH_HOST']}{env['BACKUPKIT_TEST_SFTP_DIR']}/{unique}",
        options={"ssh_config": env["BACKUPKIT_TEST_SSH_CONFIG"]},
    )
    sftp.init()
    snap = sftp.backup(source)
    assert snap is not None
    assert sftp.check(read_data=True).ok

    # SFTP -> rclone remote -> local, each verified on the way.
    remote = backupkit.Repository(
        f"rclone:{env['BACKUPKIT_TEST_RCLONE_SFTP_REMOTE']}/{unique}-rclone",
        options={"rclone_config": env["BACKUPKIT_TEST_RCLONE_CONFIG"]},
    )
    remote.init()
    assert sftp.copy(remote).copied == [snap.id]
    assert remote.copy(repo).copied == [snap.id]
    repo.restore(snap.id, tmp_path / "out")
    out = restored(tmp_path / "out", source)
    assert (out / "a.txt").read_text() == "hello backupkit\n"
    assert sftp.forget([snap.id]) == [snap.id]
    assert sftp.snapshots() == []


def mirror_there_and_back(source: Path, dest: str, options: dict[str, str], back: Path) -> None:
    """Mirrors `source` into `dest`, a place that keeps no symlinks (the
    link is skipped, with a note), re-runs it without changes, and pulls
    it back into `back`, verified by content."""
    first = backupkit.mirror(source, dest, options=options, verify="checksum")
    assert first.copied == 4 and first.skipped == 1 and first.complete
    assert [p for p, _ in first.notices] == ["link"]
    again = backupkit.mirror(source, dest, options=options)
    assert (again.copied, again.updated, again.unchanged) == (0, 0, 4)
    pulled = backupkit.mirror(dest, back, source_options=options)
    assert pulled.copied == 4
    assert backupkit.verify_mirror(source, back, mode="checksum").hashed == 4


def test_a_mirror_into_s3_and_back(s3_repo: backupkit.Repository, source: Path, tmp_path: Path) -> None:
    env = os.environ
    options = {
        "endpoint": env["BACKUPKIT_TEST_S3_ENDPOINT"],
        "allow_http": "true",
        "region": "us-east-1",
        "access_key_id": env["BACKUPKIT_TEST_S3_ACCESS_KEY_ID"],
        "secret_access_key": env["BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY"],
    }
    back = tmp_path / "back"
    mirror_there_and_back(source, f"{s3_repo.location}-mirror", options, back)
    assert (back / "a.txt").stat().st_mtime_ns == (source / "a.txt").stat().st_mtime_ns


def test_a_mirror_to_an_ssh_host_and_back_goes_through_rsync(source: Path, tmp_path: Path) -> None:
    env = service_env("BACKUPKIT_TEST_SSH_CONFIG", "BACKUPKIT_TEST_SSH_HOST", "BACKUPKIT_TEST_SFTP_DIR")
    options = {"ssh_config": env["BACKUPKIT_TEST_SSH_CONFIG"], "transport": "rsync"}
    dest = f"sftp://{env['BACKUPKIT_TEST_SSH_HOST']}{env['BACKUPKIT_TEST_SFTP_DIR']}/py-mirror-{os.getpid()}"
    first = backupkit.mirror(source, dest, options=options, verify="checksum")
    assert first.complete and first.copied == 4 and first.links == 1
    assert (first.transport, first.transport_files) == ("rsync", 4)
    again = backupkit.mirror(source, dest, options=options)
    assert (again.copied, again.updated, again.unchanged) == (0, 0, 5)  # the link too
    back = tmp_path / "back"
    pulled = backupkit.mirror(dest, back, source_options=options)
    assert (pulled.copied, pulled.transport) == (4, "rsync")
    assert backupkit.verify_mirror(source, back, mode="checksum").hashed == 4
    assert (back / "sub" / "run.sh").stat().st_mode & 0o777 == 0o750
    assert (back / "link").readlink() == Path("a.txt")
    by_sftp = backupkit.mirror(source, f"{dest}-sftp", options={**options, "transport": "sftp"})
    assert by_sftp.complete and (by_sftp.copied, by_sftp.transport) == (4, None)


def test_an_smb_share_as_repository_and_mirror_without_a_mount(
    repo: backupkit.Repository, source: Path, tmp_path: Path
) -> None:
    env = service_env("BACKUPKIT_TEST_SMB_URL", "BACKUPKIT_TEST_SMB_PASSWORD", "BACKUPKIT_TEST_SMB_DIR")
    unique = f"py-{os.getpid()}-{time.time_ns()}"
    base = f"{env['BACKUPKIT_TEST_SMB_URL']}/{unique}"
    on_server = Path(env["BACKUPKIT_TEST_SMB_DIR"]) / unique
    options = {"password_env": "BACKUPKIT_TEST_SMB_PASSWORD"}

    # A repository on the share: backup, check every byte, copy out, restore.
    smb = backupkit.Repository(f"{base}/repo", options=options)
    smb.init()
    snap = smb.backup(source)
    assert snap is not None
    assert smb.check(read_data=True).ok
    assert smb.copy(repo).copied == [snap.id]
    smb.restore(snap.id, tmp_path / "out")
    out = restored(tmp_path / "out", source)
    assert (out / "a.txt").read_text() == "hello backupkit\n"
    assert not [p for p in on_server.rglob("*") if ".tmp-" in p.name]

    # A mirror into the share and back out of it.
    mirror_there_and_back(source, f"{base}/mirror", options, tmp_path / "back")
    # The mtime is set on the share's file, to its 100 ns.
    ns = (source / "a.txt").stat().st_mtime_ns
    assert (on_server / "mirror" / "a.txt").stat().st_mtime_ns == ns // 100 * 100

    # A wrong password: the logon failure, never the password.
    with pytest.raises(backupkit.BackupError, match="logon failure") as err:
        backupkit.Repository(f"{base}/repo", options={"password_command": "echo wrong-pw-77"}).snapshots()
    assert "wrong-pw-77" not in str(err.value)
