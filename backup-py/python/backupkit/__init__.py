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

import json as _json
import urllib.error as _urlerror
import urllib.parse as _urlparse
import urllib.request as _request
from typing import Any

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
    pull,
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
    "pull",
    "run",
    "service_status",
    "status_range",
    "sync_session",
    "verify_mirror",
    "verify_session",
]


def service_status(
    url: str = "http://127.0.0.1:8093",
    device: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Read what a running ``backupkit serve`` reports: its ``/status``
    JSON (jobs with state, last success, next run, overdue; devices of pull
    jobs with state, transfer and last error), or with ``device`` that one
    device's (``/status/DEVICE``, by id or name). ``token`` is the bearer
    token the server requires off loopback.

    Raises ``BackupError`` when the server cannot be reached, refuses the
    token, or has no such device."""
    path = "/status" if device is None else "/status/" + _urlparse.quote(device, safe="")
    req = _request.Request(url.rstrip("/") + path, headers={"Accept": "application/json"})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with _request.urlopen(req, timeout=timeout) as answer:
            doc: dict[str, Any] = _json.load(answer)
            return doc
    except _urlerror.HTTPError as e:
        what = {401: "the server wants a valid token", 404: f"no device {device!r}"}
        raise BackupError(f"{url}{path}: HTTP {e.code}: {what.get(e.code, e.reason)}") from None
    except (_urlerror.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise BackupError(f"cannot read {url}{path}: {reason} (is backupkit serve running?)") from None
