//! Command-line flags: restic's vocabulary where it exists.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// backupkit: verified, restorable backups of files and databases.
#[derive(Debug, Parser)]
#[command(name = "backupkit", version, about, max_term_width = 100)]
pub struct Cli {
    #[arg(
        short = 'r',
        long = "repo",
        help = "Repository location: a directory, s3://BUCKET/PREFIX, az://CONTAINER/PREFIX, gs://BUCKET/PREFIX, sftp://[USER@]HOST[:PORT]/PATH or rclone:REMOTE:PATH",
        env = "BACKUPKIT_REPOSITORY",
        global = true
    )]
    pub repo: Option<String>,

    /// A repository option, KEY=VALUE (repeat): endpoint, region,
    /// credentials, ... (see the README's table).
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", global = true, value_parser = OptionParser)]
    pub options: Vec<(String, String)>,

    /// The config file for `run` and `config` (default: `BACKUPKIT_CONFIG`,
    /// then ./backupkit.yaml or ./backupkit.toml, then the user's config
    /// directory).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Take no lock in read-only commands (restore, check, and copy's
    /// source; ls and snapshots take none anyway), for a repository that
    /// cannot be written: a read-only mount or key. A concurrent forget is
    /// then not held off.
    #[arg(long, global = true)]
    pub no_lock: bool,

    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors (and the final line of an incomplete backup).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more: each file as it is processed.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Create a deduplicated repository: each snapshot is stored as
    /// content-defined chunks, and a chunk another snapshot (of any host or
    /// source) already stored is not stored again. Restorable without
    /// backupkit with the restore.py it holds.
    #[arg(long)]
    pub dedup: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories, or a database (--db), into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    #[command(visible_alias = "list")]
    Snapshots(SnapshotsArgs),
    /// List the entries of a snapshot.
    Ls(LsArgs),
    /// Restore a snapshot into a directory, or a database snapshot into a database.
    Restore(RestoreArgs),
    /// Check the repository; with --read-data, read and verify all data.
    #[command(visible_alias = "verify")]
    Check(CheckArgs),
    /// Delete snapshots by id, or those a --keep-* policy does not keep.
    Forget(ForgetArgs),
    /// Delete data no snapshot uses any more (deduplicated repositories):
    /// mark it, and delete what an earlier prune marked once its grace
    /// period is over and nothing of its time still runs.
    Prune(PruneArgs),
    /// Remove stale locks left by processes that are gone.
    Unlock(UnlockArgs),
    /// Back up a database if its newest dump is older than an interval,
    /// then keep the newest N (for cron and cluster jobs).
    Auto(AutoArgs),
    /// Copy snapshots to another repository (all, or the ids given),
    /// skipping those it already has.
    Copy(CopyArgs),
    /// Write a snapshot as one plain file: a tree as a tar archive, a
    /// database as its dump (compressed by the file's extension).
    Export(ExportArgs),
    /// Make DEST hold the same files as SOURCE, as plain files, copying only
    /// what changed (a verified, incremental mirror).
    #[command(visible_alias = "sync")]
    Mirror(MirrorArgs),
    /// Run the jobs of the config file (all enabled ones, or those named).
    Run(RunArgs),
    /// Pull a device fleet's data once (a job with `pull:`): every device
    /// the job lists or discovers, or those named.
    Pull(PullArgs),
    /// Apply each snapshot destination's retention (its keep_* settings)
    /// for the jobs of the config file; back nothing up.
    Cleanup(RunArgs),
    /// Run the config's scheduled jobs (`schedule:`, `every:`) in the
    /// foreground until SIGTERM or Ctrl-C; SIGHUP reloads the config.
    Serve(ServeArgs),
    /// Show when each scheduled job (`schedule:` or `every:`) runs next, in
    /// the local time zone; or check a crontab expression with --expr.
    Schedule(ScheduleArgs),
    /// Check the config file, or show it as backupkit reads it.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Recording sessions laid out by path templates (the config's
    /// `sessions:`).
    #[command(subcommand)]
    Session(SessionCommand),
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List the sessions found at the source, and where each goes at every
    /// destination.
    List(SessionRangeArgs),
    /// Mirror one session to its place at a destination, then verify it by
    /// count.
    Sync(SessionSyncArgs),
    /// Compare one session with its backup: every file and size, and the
    /// content of a random sample.
    Verify(SessionVerifyArgs),
    /// One session's checks: imported, backed up, verified, and whether it
    /// is safe to delete, with the reason for each.
    Status(SessionArgs),
    /// A table of every session in a date range: Date, Participant, Videos,
    /// Imported, Backup, Verified, Safe.
    StatusRange(SessionTableArgs),
    /// Sync every session in a date range (START [END], YYYYMMDD), skipping
    /// those already backed up and verified.
    Batch(SessionBatchArgs),
    /// Delete one session's local files, only if it is imported, backed up
    /// and verified (checked again right before deleting); type DELETE.
    Delete(SessionDeleteArgs),
    /// Delete every safe session in a date range; type DELETE ALL.
    BulkDelete(SessionBulkDeleteArgs),
}

#[derive(Debug, Args)]
pub struct SessionBatchArgs {
    /// The first day (YYYYMMDD or YYYY-MM-DD).
    #[arg(value_parser = parse_session_date)]
    pub start: chrono::NaiveDate,
    /// The last day (default: the first).
    #[arg(value_parser = parse_session_date)]
    pub end: Option<chrono::NaiveDate>,
    #[command(flatten)]
    pub at: SessionWhere,
    /// Show what would be synced; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// Which set and destination a session command works on.
#[derive(Debug, Args)]
pub struct SessionWhere {
    /// The session set (default: the config's only one).
    #[arg(long = "set", value_name = "NAME")]
    pub set: Option<String>,
    /// The destination (default: the set's only one).
    #[arg(long = "dest", value_name = "NAME")]
    pub dest: Option<String>,
}

#[derive(Debug, Args)]
pub struct SessionSyncArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Show what would be copied; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SessionDeleteArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Files whose content is read back from the destination and compared
    /// (default 10; 0: all).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub sample: usize,
    /// Run every check and show what would be deleted; delete nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Do not ask (for scripts).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct SessionBulkDeleteArgs {
    #[command(flatten)]
    pub range: SessionRangeArgs,
    /// The destination (default: the set's only one).
    #[arg(long = "dest", value_name = "NAME")]
    pub dest: Option<String>,
    /// Run every check and show what would be deleted; delete nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Files per session whose content is compared (default 10; 0: all).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub sample: usize,
    /// Do not ask (for scripts).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct SessionTableArgs {
    #[command(flatten)]
    pub range: SessionRangeArgs,
    /// The destination (default: the set's only one).
    #[arg(long = "dest", value_name = "NAME")]
    pub dest: Option<String>,
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    /// The session's values in the source layout's order (seed 003's
    /// `PARTICIPANT DATE`).
    #[arg(required = true, value_name = "VALUE")]
    pub values: Vec<String>,
    #[command(flatten)]
    pub at: SessionWhere,
}

#[derive(Debug, Args)]
pub struct SessionVerifyArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Files whose content is compared, picked at random (default 10).
    #[arg(long, value_name = "N", default_value_t = 10, conflicts_with = "full")]
    pub sample: usize,
    /// Compare the content of every file.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
pub struct SessionRangeArgs {
    /// The session set (default: every set in the config).
    #[arg(long = "set", value_name = "NAME")]
    pub set: Option<String>,
    /// Only sessions from this date on: YYYYMMDD or YYYY-MM-DD.
    #[arg(long, value_name = "DATE", value_parser = parse_session_date)]
    pub start_date: Option<chrono::NaiveDate>,
    /// Only sessions up to this date.
    #[arg(long, value_name = "DATE", value_parser = parse_session_date)]
    pub end_date: Option<chrono::NaiveDate>,
}

fn parse_session_date(s: &str) -> Result<chrono::NaiveDate, String> {
    backup_core::sessions::layout::parse_date(s)
        .ok_or_else(|| format!("{s:?} is not a date (YYYYMMDD or YYYY-MM-DD)"))
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file (every problem at once, with its line); run nothing.
    Check,
    /// Print the effective config, defaults filled in and secrets redacted.
    Show,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Jobs to run (default: every enabled job).
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,
    /// Only this destination (repeat); a group name (`smb`) selects its
    /// parts (`smb.csvs`).
    #[arg(long, value_name = "DEST")]
    pub only: Vec<String>,
    /// Show what each destination would do (the mirror plan, the snapshot,
    /// what retention would remove); write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Append events to this file (default: the config's `log_file`); a
    /// `{date}` in the name becomes YYYYMMDD.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The pull job.
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Only these devices: an id, a name, or the number a name ends with
    /// (`004` for `ETHOSCOPE_004`); comma-separated or repeated.
    #[arg(short = 'e', long, value_delimiter = ',', value_name = "DEVICE")]
    pub device: Vec<String>,
    /// Only these data kinds (`results`, `videos`); comma-separated or
    /// repeated.
    #[arg(long, value_delimiter = ',', value_name = "KIND")]
    pub kind: Vec<String>,
    /// Show what would be pulled; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Append events to this file (default: the config's `log_file`).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// On SIGTERM or Ctrl-C, how long running jobs have to stop cleanly.
    #[arg(long, default_value = "30s", value_name = "DURATION",
          value_parser = parse_duration_arg)]
    pub stop_timeout: std::time::Duration,
    /// The run history (default: under `$XDG_STATE_HOME/backupkit`, one per
    /// config file).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Append events to this file (default: the config's `log_file`).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Where the status page, `/status`, `/metrics` and `POST
    /// /jobs/NAME/run` listen (default: the config's `http.listen`, else
    /// 127.0.0.1:8093); `off` for none. Off loopback a token is required.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    backup_core::jobs::model::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Jobs to show (default: every job).
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,
    /// How many run times to show for each.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub count: usize,
    /// Count from this time instead of now (`2026-03-29 01:30`, local).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// A crontab expression to check instead of the config's jobs.
    #[arg(long, value_name = "CRON", conflicts_with = "jobs")]
    pub expr: Option<String>,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// One or more sources, then the destination. One source directory's
    /// contents become DEST's; a file, or each of several sources, becomes
    /// DEST/NAME.
    #[arg(required = true, num_args = 2.., value_name = "SOURCE... DEST")]
    pub paths: Vec<String>,
    /// Exclude paths matching a glob (`*.tmp`, `cache/`, `/abs/path`);
    /// excluded destination files are never deleted.
    #[arg(short = 'e', long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read exclude globs from a file, one per line.
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Delete destination files that are not in the sources (after every
    /// copy, and never from an empty source).
    #[arg(long)]
    pub delete: bool,
    /// Delete nothing if the plan deletes more than N entries, or N% of the
    /// destination's.
    #[arg(long, value_name = "N|N%", requires = "delete")]
    pub max_delete: Option<String>,
    /// Never overwrite a destination file that is newer than the source's.
    #[arg(short = 'u', long)]
    pub update: bool,
    /// Compare content (BLAKE3 of both sides) instead of size and mtime.
    #[arg(short = 'c', long)]
    pub checksum: bool,
    /// mtimes this close are equal (default: the coarser precision of the
    /// two sides): 2s, 500ms, 0.
    #[arg(long, value_name = "DURATION", value_parser = parse_window)]
    pub modify_window: Option<std::time::Duration>,
    /// Move replaced and deleted files to this directory (relative to DEST)
    /// instead of destroying them.
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<String>,
    /// Show the plan (what would be copied, updated, deleted and why);
    /// write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Parallel copies (default: the destination's own).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub transfers: Option<u16>,
    /// Give up on an SSH host that stops answering, or a mount that does not
    /// answer, after this long (default 300s over SSH, 10s for a mount):
    /// the run fails instead of hanging.
    #[arg(long, value_name = "DURATION", value_parser = parse_window)]
    pub timeout: Option<std::time::Duration>,
    /// At most this many bytes per second, for all copies together: 500K,
    /// 10M, 1G (a bare number is KiB/s, as in rsync and rclone).
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
    /// Ask the destination for each file's own metadata instead of trusting
    /// its listing and backupkit's record (one request per file on object
    /// stores).
    #[arg(long)]
    pub full_scan: bool,
    /// Check the mirror afterwards: count, size, checksum or sample:N.
    #[arg(long, value_name = "MODE")]
    pub verify: Option<String>,
    /// Only check DEST against the sources (with --verify's MODE, size by
    /// default); copy nothing.
    #[arg(long, conflicts_with_all = ["dry_run", "update", "checksum", "backup_dir", "max_delete"])]
    pub verify_only: bool,
    /// Copy what symlinks in a local source point to, instead of the links
    /// (a link loop is walked once).
    #[arg(short = 'L', long)]
    pub copy_links: bool,
    /// An option of the sources, KEY=VALUE (repeat); -o applies to DEST.
    #[arg(long = "source-option", value_name = "KEY=VALUE", value_parser = OptionParser)]
    pub source_options: Vec<(String, String)>,
}

/// A duration for `--modify-window`: a number of seconds, or with a unit
/// (ns, us, ms, s).
fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, scale) = [("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(u, f)| t.strip_suffix(u).map(|n| (n, *f)))
        .unwrap_or((t, 1.0));
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1e9 => {
            Ok(std::time::Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!("{s:?} is not a duration such as 2s, 500ms or 0")),
    }
}

/// An option given without `=`: it may be a mistyped `KEY=SECRET`, so no
/// part of it is shown.
const NOT_KEY_VALUE: &str = "option is not KEY=VALUE (the value is not shown)";
/// `=VALUE`.
const NO_KEY: &str = "an option without a key: expected KEY=VALUE (the value is not shown)";
/// A key that is no key (`secret_access_key:abc=...`): nothing is shown.
const BAD_KEY: &str = "option is not KEY=VALUE: a key has only letters, digits, '_', '-' and \
                       '.' (the option is not shown)";

/// `KEY=VALUE`, for `-o`. Its errors never show the value, nor any part of
/// an argument that is not `KEY=VALUE` (it may be a secret).
fn parse_option(s: &str) -> Result<(String, String), &'static str> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(NOT_KEY_VALUE);
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(NO_KEY);
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(BAD_KEY);
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// clap's parser for `-o`, `--from-option` and `--to-option`: clap's own
/// errors quote the rejected argument, which may be a secret; this one's
/// say what is wrong without it.
#[derive(Debug, Clone, Copy)]
struct OptionParser;

impl clap::builder::TypedValueParser for OptionParser {
    type Value = (String, String);

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let flag = arg.map_or_else(
            || "-o".to_owned(),
            |a| match (a.get_short(), a.get_long()) {
                (Some(s), Some(l)) => format!("-{s}/--{l}"),
                (None, Some(l)) => format!("--{l}"),
                (Some(s), None) => format!("-{s}"),
                (None, None) => a.get_id().to_string(),
            },
        );
        let parsed = value
            .to_str()
            .ok_or("option is not valid UTF-8 (the value is not shown)")
            .and_then(parse_option);
        parsed.map_err(|why| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{flag}: {why}"),
            )
            .format(&mut cmd.clone())
        })
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The snapshot: an id, a unique prefix, or `latest`.
    pub snapshot: String,
    /// The file to write (`-` for stdout); `.zst` or `.gz` at its end
    /// compresses it. An existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub to: String,
    /// none, gzip or zstd (default: from the file's extension; none for
    /// stdout).
    #[arg(long)]
    pub compression: Option<String>,
    /// Compression level.
    #[arg(long)]
    pub level: Option<i32>,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshots to copy: ids, unique prefixes or `latest` (all if none).
    pub snapshots: Vec<String>,
    /// A snapshot to copy, as seed 002 names it (`upload --backup-id ID`).
    #[arg(long = "backup-id", value_name = "ID")]
    pub backup_ids: Vec<String>,
    /// The repository to copy from (default: -r/--repo).
    #[arg(long, value_name = "LOCATION")]
    pub from_repo: Option<String>,
    /// The repository to copy to (default: -r/--repo).
    #[arg(long, value_name = "LOCATION")]
    pub to_repo: Option<String>,
    /// An option of the source repository, KEY=VALUE (repeat); -o applies
    /// to -r/--repo.
    #[arg(long = "from-option", value_name = "KEY=VALUE", value_parser = OptionParser)]
    pub from_options: Vec<(String, String)>,
    /// An option of the destination repository, KEY=VALUE (repeat).
    #[arg(long = "to-option", value_name = "KEY=VALUE", value_parser = OptionParser)]
    pub to_options: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(required_unless_present = "db", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Back up a database instead: a URL (`sqlite:///abs/file.db`) or the
    /// path of an SQLite file.
    #[arg(long, visible_alias = "db-path", value_name = "URL|PATH", conflicts_with_all = ["paths", "excludes", "exclude_files", "dry_run"])]
    pub db: Option<String>,
    /// Accepted for seed 001's `backup --force`: `backup` always backs up
    /// (the interval check is `auto`'s).
    #[arg(long, hide = true)]
    pub force: bool,
    /// In a deduplicated repository, read every file, even large ones the
    /// stat cache knows unchanged.
    #[arg(long)]
    pub no_cache: bool,
    /// Tag the snapshot (repeat, or separate with commas).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Exclude paths matching a glob (`*.tmp`, `cache/`, `/abs/path`).
    #[arg(short = 'e', long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read exclude globs from a file, one per line.
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Compression of the archive.
    #[arg(long, value_name = "gzip|zstd|none", default_value = "gzip")]
    pub compression: String,
    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,
    /// Show what would be backed up; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only snapshots with this tag (repeat for any of several).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only snapshots that include this path.
    #[arg(long = "path")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Directory to restore files into (created if missing); for a
    /// database snapshot, the database: an SQLite file path or a URL.
    #[arg(short, long, value_name = "DIR|DB")]
    pub target: PathBuf,
    /// Restore only paths matching a glob, and what is below them.
    #[arg(short, long = "include", value_name = "GLOB")]
    pub includes: Vec<String>,
    /// Replace files that already exist in the target.
    #[arg(long)]
    pub overwrite: bool,
    /// For a database snapshot: replace an existing database at the target.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct AutoArgs {
    /// The database: a URL or the path of an SQLite file.
    #[arg(long, visible_alias = "db-path", value_name = "URL|PATH")]
    pub db: String,
    /// Back up only if the newest dump is older than this (3600, 90s, 30m, 1h, 1d).
    #[arg(long, value_name = "INTERVAL", default_value = "1h", value_parser = parse_interval)]
    pub min_interval: u64,
    /// Keep this many newest dumps of the database (0 keeps all).
    #[arg(
        long,
        visible_alias = "keep-last",
        value_name = "N",
        default_value_t = 10
    )]
    pub keep: u32,
    /// Tag the snapshot (repeat, or separate with commas).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Compression of the dump.
    #[arg(long, value_name = "gzip|zstd|none", default_value = "gzip")]
    pub compression: String,
    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,
}

/// Seconds from `3600`, `90s`, `30m`, `1h` or `1d`.
fn parse_interval(s: &str) -> Result<u64, String> {
    let (digits, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not an interval (like 3600, 90s, 30m, 1h, 1d)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    Ok(n * scale)
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read all data and verify it against checksums and manifests.
    #[arg(long)]
    pub read_data: bool,
    /// Read a subset of the data: `n/t` or `p%`.
    #[arg(long, value_name = "n/t|p%", conflicts_with = "read_data")]
    pub read_data_subset: Option<String>,
    /// Check only these snapshots.
    #[arg(value_name = "ID")]
    pub snapshots: Vec<String>,
    /// A snapshot to check, as seed 002 names it (`verify --backup-id ID`).
    #[arg(long = "backup-id", value_name = "ID")]
    pub backup_ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to delete (ids or unique prefixes); or give a policy.
    #[arg(value_name = "ID")]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Only consider snapshots of this host (with a policy).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only consider snapshots with this tag (with a policy).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Only consider snapshots of this path (with a policy).
    #[arg(long = "path")]
    pub paths: Vec<PathBuf>,
    /// Delete without asking (no short form: `-y` is --keep-yearly).
    #[arg(long)]
    pub yes: bool,
    /// Show what would be kept and deleted; delete nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Then prune: in a deduplicated repository, delete the data no
    /// snapshot uses (see `prune`); an archive snapshot's data is deleted
    /// with it anyway.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_flags: PruneFlags,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub flags: PruneFlags,
    /// Show what would be marked and which marks are due; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PruneFlags {
    /// Delete marked data only once its mark is this old (0 deletes at once
    /// when nothing else was running at the mark).
    #[arg(long, value_name = "INTERVAL", default_value = "1h", value_parser = parse_interval)]
    pub grace: u64,
    /// Copy the used chunks out of packs at least this many percent unused,
    /// so those packs can go (100: never repack).
    #[arg(long, value_name = "PERCENT", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub repack_unused: u8,
}

impl PruneFlags {
    pub fn options(&self, dry_run: bool) -> backup_core::PruneOptions {
        backup_core::PruneOptions {
            grace: std::time::Duration::from_secs(self.grace),
            dry_run,
            repack_unused_percent: self.repack_unused,
        }
    }
}

/// restic's `--keep-*` flags. Counts accept `unlimited`.
#[derive(Debug, Args, Default)]
#[allow(clippy::struct_field_names)] // the names are the flags users know
pub struct PolicyArgs {
    /// Keep the last N snapshots.
    #[arg(short = 'l', long, value_name = "N", value_parser = parse_count)]
    pub keep_last: Option<u32>,
    /// Keep the last N hourly snapshots.
    #[arg(short = 'H', long, value_name = "N", value_parser = parse_count)]
    pub keep_hourly: Option<u32>,
    /// Keep the last N daily snapshots.
    #[arg(short = 'd', long, value_name = "N", value_parser = parse_count)]
    pub keep_daily: Option<u32>,
    /// Keep the last N weekly snapshots.
    #[arg(short = 'w', long, value_name = "N", value_parser = parse_count)]
    pub keep_weekly: Option<u32>,
    /// Keep the last N monthly snapshots.
    #[arg(short = 'm', long, value_name = "N", value_parser = parse_count)]
    pub keep_monthly: Option<u32>,
    /// Keep the last N yearly snapshots.
    #[arg(short = 'y', long, value_name = "N", value_parser = parse_count)]
    pub keep_yearly: Option<u32>,
    /// Keep snapshots newer than DURATION (like 1y5m7d2h) before the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep one snapshot per hour within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// Keep one snapshot per day within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// Keep one snapshot per week within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// Keep one snapshot per month within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// Keep one snapshot per year within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with all of these tags (repeat for alternatives).
    #[arg(long = "keep-tag", value_name = "TAG[,TAG...]")]
    pub keep_tags: Vec<String>,
}

fn parse_count(s: &str) -> Result<u32, String> {
    if s == "unlimited" {
        return Ok(backup_core::retention::UNLIMITED);
    }
    s.parse::<u32>()
        .map_err(|_| format!("{s:?} is not a count (a whole number or `unlimited`)"))
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove all locks, also those of running processes.
    #[arg(long)]
    pub remove_all: bool,
    /// With --remove-all: do not ask.
    #[arg(long)]
    pub yes: bool,
}

impl PolicyArgs {
    /// The policy these flags describe (empty when none is given).
    pub fn to_policy(&self) -> backup_core::Result<backup_core::KeepPolicy> {
        let dur = |d: &Option<String>| d.as_deref().map(str::parse).transpose();
        Ok(backup_core::KeepPolicy {
            last: self.keep_last.unwrap_or(0),
            hourly: self.keep_hourly.unwrap_or(0),
            daily: self.keep_daily.unwrap_or(0),
            weekly: self.keep_weekly.unwrap_or(0),
            monthly: self.keep_monthly.unwrap_or(0),
            yearly: self.keep_yearly.unwrap_or(0),
            within: dur(&self.keep_within)?,
            within_hourly: dur(&self.keep_within_hourly)?,
            within_daily: dur(&self.keep_within_daily)?,
            within_weekly: dur(&self.keep_within_weekly)?,
            within_monthly: dur(&self.keep_within_monthly)?,
            within_yearly: dur(&self.keep_within_yearly)?,
            tags: backup_core::retention::tag_lists(&self.keep_tags),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::Parser;

    use super::*;

    fn error_of(args: &[&str]) -> String {
        Cli::try_parse_from(args).unwrap_err().to_string()
    }

    #[test]
    fn well_formed_options_parse() {
        for (arg, key, value) in [
            ("region=us-east-1", "region", "us-east-1"),
            (" endpoint = http://x ", "endpoint", " http://x "),
            ("access_key=YWJjZA==", "access_key", "YWJjZA=="),
            ("k=", "k", ""),
            ("aws.x-y_z=a=b", "aws.x-y_z", "a=b"),
        ] {
            assert_eq!(
                parse_option(arg),
                Ok((key.to_owned(), value.to_owned())),
                "{arg}"
            );
        }
    }

    #[test]
    fn malformed_options_never_show_their_value() {
        for (arg, want) in [
            ("secret_access_key:SECRET", NOT_KEY_VALUE),
            ("SECRET", NOT_KEY_VALUE),
            ("", NOT_KEY_VALUE),
            ("=SECRET", NO_KEY),
            ("  =SECRET", NO_KEY),
            ("access_key:SECRET==", BAD_KEY),
            ("secret key SECRET=x", BAD_KEY),
        ] {
            assert_eq!(parse_option(arg), Err(want), "{arg}");
            let long = format!("--option={arg}");
            for args in [
                vec!["backupkit", "-o", arg, "snapshots"],
                vec!["backupkit", &long, "snapshots"],
                vec!["backupkit", "copy", "--from-option", arg],
                vec!["backupkit", "copy", "--to-option", arg],
            ] {
                let text = error_of(&args);
                assert!(!text.contains("SECRET"), "{args:?}: {text}");
                assert!(text.contains(want), "{args:?}: {text}");
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_non_utf8_option_is_refused_without_showing_it() {
        use std::os::unix::ffi::OsStringExt;
        let args = [
            OsString::from("backupkit"),
            OsString::from("-o"),
            OsString::from_vec(b"key=SECRET\xff".to_vec()),
            OsString::from("snapshots"),
        ];
        let text = Cli::try_parse_from(args).unwrap_err().to_string();
        assert!(text.contains("not valid UTF-8"), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
    }

    /// What the generated arguments are made of: the secret must never
    /// come back in a message.
    const PIECES: &[&str] = &[
        "", "=", "==", ":", "/", "@", "[", "]", "%", "?", "#", " ", "\t", "\n", "-", "_", ".", "a",
        "Z", "0", "é", "😀", "\u{0}", "\u{202e}", "key", "endpoint", "http://", "SECRET",
    ];

    /// Generated arguments: never a panic; a parsed option is the argument
    /// split at its first `=`; an error is one of the fixed texts, which
    /// hold no part of the argument.
    #[test]
    fn option_parsing_never_panics_and_never_echoes() {
        let mut g = backup_core::testgen::Gen::new(7);
        for i in 0..20_000 {
            let arg = g.string_of(8, PIECES);
            match parse_option(&arg) {
                Ok((key, value)) => {
                    let (k, v) = arg.split_once('=').unwrap();
                    assert_eq!((key.as_str(), value.as_str()), (k.trim(), v));
                }
                Err(why) => assert!([NOT_KEY_VALUE, NO_KEY, BAD_KEY].contains(&why), "{why}"),
            }
            if i % 10 == 0 {
                let long = format!("--option={arg}");
                if let Err(e) = Cli::try_parse_from(["backupkit", &long, "snapshots"]) {
                    let text = e.to_string();
                    assert!(!text.contains("SECRET"), "{arg:?}: {text}");
                }
            }
        }
    }
}
