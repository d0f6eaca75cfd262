"""backupkit: verified, restorable backups of files, from Python.

>>> import backupkit
>>> repo = backupkit.Repository("/srv/backups")
>>> repo.init()
>>> snap = repo.backup(["/etc", "/home"], tags=["nightly"])
>>> repo.restore(snap.id, "/tmp/restored")

Every engine call runs in native code with the GIL released; Ctrl-C stops it
cleanly and raises KeyboardInterrupt. Errors are subclasses of BackupError.
"""

from backupkit._backupkit import (
    BackupError,
    CheckResult,
    IntegrityError,
    InvalidInputError,
    LockedError,
    Repository,
    RepositoryExistsError,
    RepositoryNotFoundError,
    RestoreResult,
    Snapshot,
    SnapshotNotFoundError,
    WouldOverwriteError,
    __version__,
)

__all__ = [
    "BackupError",
    "CheckResult",
    "IntegrityError",
    "InvalidInputError",
    "LockedError",
    "Repository",
    "RepositoryExistsError",
    "RepositoryNotFoundError",
    "RestoreResult",
    "Snapshot",
    "SnapshotNotFoundError",
    "WouldOverwriteError",
    "__version__",
]
