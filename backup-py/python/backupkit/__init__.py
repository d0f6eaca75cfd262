"""backupkit: verified, restorable backups of files and databases, from Python.

>>> import backupkit
>>> repo = backupkit.Repository("/srv/backups")
>>> repo.init()
>>> snap = repo.backup(["/etc", "/home"], tags=["nightly"])
>>> repo.restore(snap.id, "/tmp/restored")
>>> repo.backup_database("outputs/results.db", min_interval=3600, keep_last=10)
>>> backupkit.mirror("/data/recordings", "/mnt/share/recordings", verify="sample:10")
>>> for r in backupkit.run("backupkit.yaml"):     # the config file's jobs
...     print(r.job, r.destination, r.result)

Every engine call runs in native code with the GIL released; Ctrl-C stops it
cleanly and raises KeyboardInterrupt. Errors are subclasses of BackupError.
"""

from backupkit._backupkit import (
    BackupError,
    CheckResult,
    Config,
    ConfigError,
    CopyResult,
    DatabaseBackupResult,
    DestinationResult,
    IntegrityError,
    InvalidInputError,
    LockedError,
    MirrorMismatchError,
    MirrorResult,
    RefusedError,
    Repository,
    RepositoryExistsError,
    RepositoryNotFoundError,
    RestoreResult,
    SessionStatus,
    Snapshot,
    SnapshotNotFoundError,
    VerifyResult,
    WouldOverwriteError,
    __version__,
    delete_session,
    load_config,
    mirror,
    run,
    status_range,
    sync_session,
    verify_mirror,
    verify_session,
)

__all__ = [
    "BackupError",
    "CheckResult",
    "Config",
    "ConfigError",
    "CopyResult",
    "DatabaseBackupResult",
    "DestinationResult",
    "IntegrityError",
    "InvalidInputError",
    "LockedError",
    "MirrorMismatchError",
    "MirrorResult",
    "RefusedError",
    "Repository",
    "RepositoryExistsError",
    "RepositoryNotFoundError",
    "RestoreResult",
    "SessionStatus",
    "Snapshot",
    "SnapshotNotFoundError",
    "VerifyResult",
    "WouldOverwriteError",
    "__version__",
    "delete_session",
    "load_config",
    "mirror",
    "run",
    "status_range",
    "sync_session",
    "verify_mirror",
    "verify_session",
]
