"""Stubs of the native module; the public names are re-exported by `backupkit`."""

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, final

__all__ = [
    "__version__",
    "Repository",
    "Snapshot",
    "RestoreResult",
    "CheckResult",
    "DatabaseBackupResult",
    "CopyResult",
    "BackupError",
    "RepositoryNotFoundError",
    "RepositoryExistsError",
    "SnapshotNotFoundError",
    "LockedError",
    "IntegrityError",
    "WouldOverwriteError",
    "InvalidInputError",
    "RefusedError",
    "MirrorMismatchError",
    "MirrorResult",
    "VerifyResult",
    "mirror",
    "pull",
    "verify_mirror",
    "ConfigError",
    "Config",
    "DestinationResult",
    "load_config",
    "run",
    "SessionStatus",
    "status_range",
    "sync_session",
    "verify_session",
    "delete_session",
    "main",
]

__version__: str

class BackupError(Exception):
    """Base class of every error raised by backupkit."""

class RepositoryNotFoundError(BackupError): ...
class RepositoryExistsError(BackupError): ...
class SnapshotNotFoundError(BackupError): ...
class LockedError(BackupError): ...

class IntegrityError(BackupError):
    result: CheckResult | None
    """The failed check's result when raised by `Repository.check`."""

class WouldOverwriteError(BackupError): ...
class InvalidInputError(BackupError): ...

class MirrorMismatchError(IntegrityError):
    """A mirror's destination does not hold what its source holds."""

    report: VerifyResult | None
    """What differs."""
    mirror: MirrorResult | None
    """The mirror's result, when raised by `mirror` (with ``verify``)."""

class ConfigError(BackupError):
    """A config file with problems; nothing ran."""

    problems: list[dict[str, Any]]
    """Every problem: ``file``, ``line``, ``column``, ``key``, ``message``."""

class RefusedError(BackupError):
    """A safety guard refused a destructive step (a mirror that would delete
    from an empty source); nothing was deleted."""

@final
class Snapshot:
    @property
    def id(self) -> str: ...
    @property
    def time(self) -> datetime: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def incomplete(self) -> bool: ...
    @property
    def paths(self) -> list[str]: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def host(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def source_size(self) -> int: ...
    @property
    def file_count(self) -> int: ...
    @property
    def dir_count(self) -> int: ...
    @property
    def compression(self) -> str: ...
    @property
    def level(self) -> int | None: ...
    @property
    def checksum(self) -> str: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def duration(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class RestoreResult:
    @property
    def snapshot_id(self) -> str: ...
    @property
    def target(self) -> Path: ...
    @property
    def files(self) -> int: ...
    @property
    def dirs(self) -> int: ...
    @property
    def links(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def tables(self) -> dict[str, int] | None:
        """Rows per table of a restored database (verified); None for files."""

@final
class CheckResult:
    @property
    def snapshots_checked(self) -> int: ...
    @property
    def snapshots_read(self) -> int: ...
    @property
    def problems(self) -> list[tuple[str, str]]: ...
    @property
    def unfinished(self) -> list[str]: ...
    @property
    def ok(self) -> bool: ...

@final
class DatabaseBackupResult:
    @property
    def action(self) -> str: ...
    @property
    def backed_up(self) -> bool: ...
    @property
    def snapshot(self) -> Snapshot | None: ...
    @property
    def pruned(self) -> list[str]: ...

@final
class CopyResult:
    @property
    def copied(self) -> list[str]: ...
    @property
    def skipped(self) -> list[str]: ...
    @property
    def bytes(self) -> int: ...

@final
class Repository:
    def __new__(
        cls,
        location: str | os.PathLike[str],
        *,
        options: Mapping[str, str] | None = None,
        no_lock: bool = False,
    ) -> Repository:
        """A repository at a directory or URL. With ``no_lock``, read-only
        methods (snapshots, ls, restore, check, copy's source) take no lock,
        for a repository that cannot be written."""
    @property
    def location(self) -> str: ...
    def init(self, *, dedup: bool = False) -> None:
        """Create the repository; with ``dedup``, a deduplicated one."""
        ...
    def is_dedup(self) -> bool:
        """Whether the repository is deduplicated."""
        ...
    def backup(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        tags: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        compression: str = "gzip",
        level: int | None = None,
        dry_run: bool = False,
        no_cache: bool = False,
        progress: Callable[[dict[str, Any]], object] | None = None,
    ) -> Snapshot | None: ...
    def snapshots(self) -> list[Snapshot]: ...
    def snapshot(self, snapshot_id: str) -> Snapshot: ...
    def ls(self, snapshot_id: str) -> list[dict[str, Any]]: ...
    def restore(
        self,
        snapshot_id: str,
        target: str | os.PathLike[str],
        *,
        include: Sequence[str] | None = None,
        overwrite: bool = False,
        progress: Callable[[dict[str, Any]], object] | None = None,
    ) -> RestoreResult:
        """Restore a snapshot: files into a directory, a database snapshot
        into a database (an SQLite file path or a URL; ``overwrite=True``
        replaces an existing one)."""
    def check(
        self, read_data: bool = False, *, read_data_subset: str | None = None
    ) -> CheckResult: ...
    def backup_database(
        self,
        database: str | os.PathLike[str],
        *,
        min_interval: float | None = None,
        keep_last: int | None = None,
        tags: Sequence[str] | None = None,
        compression: str = "gzip",
        level: int | None = None,
        progress: Callable[[dict[str, Any]], object] | None = None,
    ) -> DatabaseBackupResult:
        """Back up a database: an SQLite file path or a URL.

        With ``min_interval`` (seconds) only if this host's newest dump of it
        is older; with ``keep_last`` (at least 1), then keep only that many
        newest dumps of this database from this host; without it, every dump
        is kept.
        """
    def restore_database(
        self,
        snapshot_id: str,
        target: str | os.PathLike[str],
        *,
        force: bool = False,
    ) -> dict[str, int]:
        """Restore a database snapshot, verified; returns rows per table."""
    def forget(
        self,
        snapshot_ids: Sequence[str] | None = None,
        *,
        keep_last: int | None = None,
        keep_hourly: int | None = None,
        keep_daily: int | None = None,
        keep_weekly: int | None = None,
        keep_monthly: int | None = None,
        keep_yearly: int | None = None,
        keep_within: str | None = None,
        keep_tags: Sequence[str] | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Delete snapshots by id, or those a retention policy does not keep.

        The policy has restic's semantics and is applied per host and paths:
        ``repo.forget(keep_daily=7, keep_weekly=4, keep_monthly=12)`` is the
        grandfather-father-son rotation. Counts of -1 mean unlimited;
        ``keep_within`` is a duration like ``"1y5m7d2h"``; each ``keep_tags``
        entry is a comma-separated list of tags a snapshot must all have.
        Returns the deleted ids (with ``dry_run``, those that would be).
        """
    def prune(
        self,
        *,
        grace: float = 3600.0,
        repack_unused: int = 10,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete what no snapshot of a deduplicated repository uses.

        Marks the packs no snapshot needs (copying the used chunks out of
        packs at least ``repack_unused`` percent unused first), and deletes
        the packs of earlier marks once they are ``grace`` seconds old and
        nothing that ran when they were marked still holds a lock: a backup
        running meanwhile never loses a chunk. ``grace=0`` deletes at once
        when nothing else was running. Returns the report (``marked_packs``,
        ``swept``, ``waiting``, ...); an archive repository has nothing to
        prune.
        """
    def copy(
        self,
        to: Repository,
        ids: Sequence[str] | None = None,
        *,
        progress: Callable[[dict[str, Any]], object] | None = None,
    ) -> CopyResult: ...
    def export(
        self,
        snapshot: str,
        to: str | os.PathLike[str],
        *,
        compression: str | None = None,
        level: int | None = None,
        progress: Callable[[dict[str, Any]], object] | None = None,
    ) -> int:
        """Write a snapshot as one new plain file (a tar archive, or a
        database's dump), compressed by the name's ending; returns the bytes
        before compression."""
        ...
    def unlock(self, *, remove_all: bool = False) -> int: ...

def main(argv: Sequence[str]) -> int: ...

_Location = str | os.PathLike[str]

@final
class VerifyResult:
    """What `verify_mirror` (or `mirror(verify=...)`) found."""
    @property
    def destination(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def hashed(self) -> int:
        """Files read on both sides and compared by content."""
    @property
    def missing(self) -> list[str]: ...
    @property
    def extra(self) -> list[str]: ...
    @property
    def different(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of files that differ."""
    @property
    def unreadable(self) -> list[tuple[str, str]]: ...
    @property
    def ok(self) -> bool: ...

@final
class MirrorResult:
    """What `mirror` did (with ``dry_run``, would do)."""
    @property
    def destination(self) -> str: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def copied(self) -> int: ...
    @property
    def updated(self) -> int: ...
    @property
    def deleted(self) -> int: ...
    @property
    def unchanged(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def extraneous(self) -> int:
        """Destination files not in the source, kept (no ``delete``)."""
    @property
    def dirs_created(self) -> int: ...
    @property
    def links(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def cleaned(self) -> int:
        """Leftovers of interrupted runs removed."""
    @property
    def transport(self) -> str | None:
        """The bulk transport that moved the files (``"rsync"`` for SSH
        hosts), or ``None`` when they were copied one by one."""
    @property
    def transport_files(self) -> int:
        """Files the bulk transport moved."""
    @property
    def failed(self) -> list[tuple[str, str]]:
        """``(path, message)`` of files not mirrored; the next run retries."""
    @property
    def notices(self) -> list[tuple[str, str]]: ...
    @property
    def refused(self) -> str | None:
        """Why deletions were refused; then nothing was deleted."""
    @property
    def verify(self) -> VerifyResult | None: ...
    @property
    def seconds(self) -> float: ...
    @property
    def complete(self) -> bool:
        """No file failed, no deletion was refused, verification passed."""

def mirror(
    source: _Location | Sequence[_Location],
    dest: _Location,
    *,
    delete: bool = False,
    update: bool = False,
    checksum: bool = False,
    verify: str | None = None,
    exclude: Sequence[str] | None = None,
    dry_run: bool = False,
    max_delete: str | None = None,
    backup_dir: str | None = None,
    modify_window: float | None = None,
    transfers: int | None = None,
    bwlimit: str | None = None,
    full_scan: bool = False,
    copy_links: bool = False,
    progress: Callable[[dict[str, Any]], object] | None = None,
    options: Mapping[str, str] | None = None,
    source_options: Mapping[str, str] | None = None,
) -> MirrorResult:
    """Make ``dest`` hold the same files as ``source``, copying only what
    changed. One source directory's contents become ``dest``'s; a file, or
    each of several sources, becomes ``dest/NAME``. ``verify`` is
    ``"count"``, ``"size"``, ``"checksum"`` or ``"sample:N"``;
    ``max_delete`` a count or a percentage (``"10%"``); ``modify_window``
    seconds; ``bwlimit`` a rate such as ``"10M"`` (per second). Raises MirrorMismatchError (with ``.report`` and ``.mirror``)
    when the verification fails, RefusedError when ``delete`` meets an empty
    source."""

def verify_mirror(
    source: _Location | Sequence[_Location],
    dest: _Location,
    *,
    mode: str = "size",
    exact: bool = False,
    exclude: Sequence[str] | None = None,
    progress: Callable[[dict[str, Any]], object] | None = None,
    options: Mapping[str, str] | None = None,
    source_options: Mapping[str, str] | None = None,
) -> VerifyResult:
    """Check that ``dest`` holds every file of ``source``; with ``exact``
    extra files count too. Raises MirrorMismatchError (with ``.report``) on
    a mismatch."""

@final
class Config:
    """A validated config file (`load_config`)."""
    @property
    def path(self) -> Path: ...
    @property
    def jobs(self) -> list[str]:
        """The job names, in file order."""
    @property
    def destinations(self) -> list[tuple[str, list[str]]]:
        """Each job's destination names."""
    def show(self) -> dict[str, Any]:
        """The effective config, secrets shown only as where they come from."""

@final
class DestinationResult:
    """One destination's result in a `run` (or a job that stopped before
    its destinations, with an empty ``destination``)."""
    @property
    def job(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def kind(self) -> str:
        """``"mirror"``, ``"snapshots"`` or ``"pull"``."""
    @property
    def location(self) -> str: ...
    @property
    def result(self) -> str:
        """``"ok"``, ``"skipped"``, ``"incomplete"`` or ``"failed"``."""
    @property
    def ok(self) -> bool: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def error(self) -> str | None: ...
    @property
    def snapshots(self) -> list[str]:
        """Snapshots taken."""
    @property
    def forgotten(self) -> list[str]:
        """Snapshots removed by retention (in a dry run: that would be)."""
    @property
    def details(self) -> list[str]: ...

def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file (``None``: ``BACKUPKIT_CONFIG``, then
    ``./backupkit.yaml`` or ``.toml``, then the user's config directory).
    Raises ConfigError with every problem in ``.problems``."""

def run(
    config: Config | str | os.PathLike[str] | None = None,
    jobs: Sequence[str] | None = None,
    only: Sequence[str] | None = None,
    dry_run: bool = False,
    progress: Callable[[dict[str, Any]], object] | None = None,
) -> list[DestinationResult]:
    """Run the config's jobs (all enabled ones, or ``jobs``), only the
    destinations in ``only`` if given; one result per destination. A
    destination that fails does not stop the others: check ``.ok``."""

def pull(
    job: str,
    devices: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    config: Config | str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    progress: Callable[[dict[str, Any]], object] | None = None,
) -> list[DestinationResult]:
    """Pull a device fleet once (a job with ``pull:``): every device the job
    lists or discovers, or those in ``devices`` (an id, a name, or the
    number a name ends with: ``"004"``), every kind or those in ``kinds``.
    One result per device and kind, named ``DEVICE.KIND`` (kind
    ``"pull"``); a device that is off is a failed result, not an
    exception."""

_Config = Config | str | os.PathLike[str] | None

@final
class SessionStatus:
    """One session's status at one destination (`status_range`)."""
    @property
    def set(self) -> str: ...
    @property
    def variables(self) -> dict[str, str]: ...
    @property
    def date(self) -> str | None:
        """``YYYYMMDD``, when the session has a date."""
    @property
    def source(self) -> str: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def videos(self) -> int: ...
    @property
    def destination(self) -> str: ...
    @property
    def place(self) -> str:
        """The session's place at the destination."""
    @property
    def backup_files(self) -> int: ...
    @property
    def backup_bytes(self) -> int: ...
    @property
    def imported(self) -> bool | None:
        """``None`` when the set has no import check."""
    @property
    def backup(self) -> bool: ...
    @property
    def verified(self) -> bool: ...
    @property
    def safe(self) -> bool: ...
    @property
    def checks(self) -> list[tuple[str, bool, str]]:
        """``(name, ok, reason)`` of each check."""

def status_range(
    config: _Config = None,
    *,
    set: str | None = None,
    dest: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
) -> list[SessionStatus]:
    """The status of every session in a date range (``YYYYMMDD`` or
    ``YYYY-MM-DD``) at one destination."""

def sync_session(
    values: Sequence[str],
    config: _Config = None,
    *,
    set: str | None = None,
    dest: str | None = None,
    dry_run: bool = False,
) -> MirrorResult:
    """Mirror one session (named by its values in the source layout's
    order) to its place at the destination, verified by count."""

def verify_session(
    values: Sequence[str],
    config: _Config = None,
    *,
    set: str | None = None,
    dest: str | None = None,
    sample: int = 10,
    full: bool = False,
) -> VerifyResult:
    """Compare one session with its backup; ``.ok`` says whether it
    matches (no exception on a mismatch)."""

def delete_session(
    values: Sequence[str],
    config: _Config = None,
    *,
    set: str | None = None,
    dest: str | None = None,
    sample: int = 10,
    confirm: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Delete one session's local files after checking from scratch that
    it is imported, backed up and verified. Needs ``confirm=True`` (or
    ``dry_run=True``); raises RefusedError with the reasons when it is not
    safe."""
