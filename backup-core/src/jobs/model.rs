//! The config model (jobs, sources, destinations, hooks) and its
//! validator, which reads a [`doc`](crate::jobs::doc) tree and reports every
//! problem at once, each with its file, line, column and key path.
//!
//! ```yaml
//! log_file: logs/backup_{date}.log
//! jobs:
//!   lab:
//!     sources:
//!       - data/csvs                          # a file tree
//!       - path: outputs/results
//!         name: results                      # its directory in mirrors
//!       - database: postgres://lab@localhost/lab
//!         password_env: LAB_DB_PASSWORD
//!     exclude: ["*.tmp"]
//!     destinations:
//!       nas:
//!         mirror: /mnt/nas/lab               # plain files
//!         update: true
//!       cloud:
//!         repository: s3://lab-backups/lab   # snapshots
//!         compression: zstd
//!         keep_daily: 7
//!         options: { region: eu-west-1, secret_access_key_env: LAB_S3_SECRET }
//!     hooks:
//!       before: make check-disk
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::archive::Compression;
use crate::jobs::doc::{self, Format, Key, Node, Pos, Problem, Value, join};
use crate::jobs::notify::{Security, When};
use crate::jobs::secret::{self, Secret};
use crate::mirror::{MaxDelete, VerifyMode};
use crate::retention::{KeepDuration, KeepPolicy};
use crate::{Error, Registry, Result};

/// A validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Where events are appended (`{date}` becomes `YYYYMMDD`).
    pub log_file: Option<PathBuf>,
    /// How many destinations of one job run at once.
    pub parallel: usize,
    /// Jobs in file order.
    pub jobs: Vec<Job>,
    /// Session sets (`sessions:`), in file order.
    pub sessions: Vec<crate::sessions::config::SessionSet>,
    /// Which dialect the file was written in (`backupkit`, or a seed's
    /// section it was read from).
    pub dialect: &'static str,
    /// `serve`'s status server (`http:`).
    pub http: HttpSettings,
}

/// `http:`: where `serve`'s status server listens, and its token.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpSettings {
    /// `127.0.0.1:8093` when not given.
    pub listen: Option<String>,
    /// The bearer token clients must send (required off loopback).
    pub token: Option<Secret>,
}

/// A named job: sources, destinations, hooks.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    pub enabled: bool,
    pub sources: Vec<Source>,
    pub excludes: Vec<String>,
    pub exclude_files: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub destinations: Vec<Destination>,
    pub hooks: Hooks,
    pub notify: Option<Notify>,
    /// When `serve` runs it: `schedule:` (crontab) or `every:`.
    pub schedule: Option<crate::schedule::Schedule>,
    /// Run once at start-up for a time missed while the service was down.
    pub catch_up: bool,
    /// A pull job's devices and kinds (then it has no sources or
    /// destinations of its own).
    pub pull: Option<crate::fleet::Pull>,
    /// A maintenance task over other jobs' repositories (then it has no
    /// sources or destinations of its own).
    pub task: Option<Task>,
}

/// A job that maintains other jobs' repositories on a schedule (seed 002's
/// weekly cleanup and daily verification).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub kind: TaskKind,
    /// The jobs whose snapshot destinations it works on; empty for every
    /// job that has one.
    pub jobs: Vec<String>,
    /// Where `jobs:` is, for problems found once every job is known.
    pub at: Pos,
}

/// What a task does.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskKind {
    /// Each job's retention (`keep_*`) on its repositories, as
    /// `backupkit cleanup`.
    Cleanup,
    /// `backupkit check` of each repository; with `read_data`, all data
    /// (`true`) or a subset (`10%`, `1/7`) read and verified.
    Check {
        read_data: bool,
        read_data_subset: Option<String>,
    },
}

/// What a job backs up.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A file tree (or a single file), under `name` in mirrors.
    Files { path: PathBuf, name: String },
    /// A database by URL (`postgres://`, `mysql://`, `sqlite://`) or an
    /// SQLite file, with its password from a secret source.
    Database {
        url: String,
        password: Option<Secret>,
        name: String,
    },
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Source::Files { name, .. } | Source::Database { name, .. } => name,
        }
    }
}

/// A destination's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Plain files, kept in step by the mirror engine.
    Mirror(MirrorSettings),
    /// A snapshot repository.
    Snapshots(SnapshotSettings),
}

/// A mirror destination's settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MirrorSettings {
    pub delete: bool,
    pub max_delete: Option<MaxDelete>,
    pub update: bool,
    pub checksum: bool,
    pub verify: Option<VerifyMode>,
    pub backup_dir: Option<String>,
    pub transfers: Option<usize>,
    pub bwlimit: Option<u64>,
}

/// A snapshot repository destination's settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotSettings {
    pub compression: Compression,
    pub level: Option<i32>,
    /// Create the repository on the first run if there is none.
    pub init: bool,
    pub retention: KeepPolicy,
}

/// Where a job's data goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub name: String,
    pub enabled: bool,
    pub location: String,
    pub kind: Kind,
    /// Names of the job's sources it takes; empty for all.
    pub sources: Vec<String>,
    /// A mirror of one file tree: its contents go straight into the
    /// destination (as `backupkit mirror SRC DEST`) instead of into a
    /// directory of the source's name.
    pub flat: bool,
    /// Backend options (`-o` in the CLI); secrets resolved when run.
    pub options: BTreeMap<String, OptionValue>,
}

impl Destination {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Mirror(_) => "mirror",
            Kind::Snapshots(_) => "snapshots",
        }
    }
}

/// A backend option's value.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    Plain(String),
    Secret(Secret),
}

/// What a job reports when it ends, and the heartbeat pings around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    /// When the email and the webhook are sent (pings always are).
    pub on: When,
    pub email: Option<EmailSettings>,
    pub webhook: Option<WebhookSettings>,
    /// A healthchecks.io-style URL: `URL/start` when the job starts, `URL`
    /// when it succeeds, `URL/fail` when it fails.
    pub ping: Option<String>,
}

/// Email through an SMTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// A JSON POST of the job's result.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    pub url: String,
    /// Header values, secret ones from secret sources.
    pub headers: BTreeMap<String, OptionValue>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// Commands run around a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Hooks {
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub on_failure: Vec<String>,
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            before: Vec::new(),
            after: Vec::new(),
            on_failure: Vec::new(),
            timeout: Duration::from_secs(DEFAULT_HOOK_TIMEOUT),
        }
    }
}

/// Seconds a hook may run before it is killed.
pub const DEFAULT_HOOK_TIMEOUT: u64 = 3600;

/// Every problem found in a config, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl From<ConfigErrors> for Error {
    fn from(e: ConfigErrors) -> Self {
        Error::Config { problems: e.0 }
    }
}

/// Reads and validates the config at `path`.
///
/// # Errors
///
/// [`Error::Config`] with every problem, or the error reading the file.
pub fn load(path: &Path, registry: &Registry) -> Result<Config> {
    let format = Format::of(path).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{}: a config file must end in .yaml, .yml or .toml",
            path.display()
        ))
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io("read", path.display().to_string(), e))?;
    let owner_only = crate::jobs::find::owner_only(path)?;
    Ok(parse(path, &text, format, owner_only, registry)?)
}

/// Validates a config's text; `owner_only` says whether the file may hold
/// inline secrets.
///
/// # Errors
///
/// Every problem found.
pub fn parse(
    path: &Path,
    text: &str,
    format: Format,
    owner_only: bool,
    registry: &Registry,
) -> std::result::Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let root = doc::parse(&file, text, format).map_err(ConfigErrors)?;
    let mut v = Validator {
        file,
        owner_only,
        registry,
        problems: Vec::new(),
        default_notify: None,
        base: std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let config = match &root.value {
        Value::Map(entries)
            if entries
                .iter()
                .any(|(k, _)| k.name == "jobs" || k.name == "sessions") =>
        {
            v.native(path, &root)
        }
        Value::Map(entries) if entries.iter().any(|(k, _)| k.name == "backups") => {
            crate::jobs::seeds::seed000(&mut v, path, &root)
        }
        Value::Map(entries) if entries.iter().any(|(k, _)| k.name == "backup") => {
            if crate::jobs::seeds::is_seed003(&root) {
                crate::jobs::seeds::seed003(&mut v, path, &root)
            } else {
                crate::jobs::seeds::seed002(&mut v, path, &root)
            }
        }
        Value::Map(_) | Value::Null => {
            v.problem(
                root.at,
                "",
                "no `jobs:` section (nor a `backups:` or `backup:` section of the scripts \
                 backupkit replaces): add `jobs:` with at least one job",
            );
            None
        }
        other => {
            v.problem(
                root.at,
                "",
                format!("expected a mapping with `jobs:`, found {}", other.kind()),
            );
            None
        }
    };
    let mut problems = v.problems;
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => {
            problems.sort_by_key(|p| p.at);
            Err(ConfigErrors(problems))
        }
    }
}

/// The validator's state: the problems found so far.
pub(crate) struct Validator<'r> {
    pub(crate) file: String,
    owner_only: bool,
    registry: &'r Registry,
    pub(crate) problems: Vec<Problem>,
    /// Relative paths are relative to this.
    pub(crate) base: PathBuf,
    /// The top-level `notify:`, for jobs without their own.
    pub(crate) default_notify: Option<Notify>,
}

/// A mapping's entries, checked against the keys it may have.
pub(crate) struct Fields<'n> {
    pub(crate) entries: &'n [(Key, Node)],
    pub(crate) path: String,
    pub(crate) at: Pos,
}

impl<'n> Fields<'n> {
    pub(crate) fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, n)| n)
    }

    pub(crate) fn key(&self, name: &str) -> String {
        join(&self.path, name)
    }
}

impl Validator<'_> {
    pub(crate) fn problem(&mut self, at: Pos, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            at,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// A mapping whose keys are the user's names (jobs, destinations).
    pub(crate) fn entries<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Value::Map(e) => Some(e),
            other => {
                self.problem(
                    node.at,
                    path,
                    format!("expected a mapping of names, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// Whether this build can open the location (as a mirror tree or a
    /// repository); the reason if not.
    pub(crate) fn registry_check(
        &self,
        location: &str,
        tree: bool,
    ) -> std::result::Result<(), String> {
        self.registry
            .check_location(location, tree)
            .map_err(|e| plain(&e))
    }

    /// [`Self::registry_check`], then the backend's own check of
    /// `location` given no options (nothing is opened, run or connected;
    /// an rclone remote's check would run rclone, so it is left out).
    pub(crate) fn registry_check_bare(
        &self,
        location: &str,
        tree: bool,
    ) -> std::result::Result<(), String> {
        self.registry_check(location, tree)?;
        if location.starts_with("rclone:") {
            return Ok(());
        }
        self.registry
            .check_options(location, &crate::TargetOptions::new(), tree)
            .map_err(|e| plain(&e))
    }

    /// The node as a mapping whose keys are all in `known` (unknown ones
    /// are problems, with the nearest known name).
    pub(crate) fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
    ) -> Option<Fields<'n>> {
        let entries: &'n [(Key, Node)] = match &node.value {
            Value::Map(e) => e,
            Value::Null => &[],
            other => {
                self.problem(
                    node.at,
                    path,
                    format!("expected a mapping, found {}", other.kind()),
                );
                return None;
            }
        };
        for (k, _) in entries {
            if !known.contains(&k.name.as_str()) {
                let hint = match nearest(&k.name, known) {
                    Some(n) => format!("; did you mean `{n}`?"),
                    None => format!(" (known: {})", known.join(", ")),
                };
                self.problem(k.at, &join(path, &k.name), format!("unknown key{hint}"));
            }
        }
        Some(Fields {
            entries,
            path: path.to_owned(),
            at: node.at,
        })
    }

    pub(crate) fn string(&mut self, f: &Fields, name: &str) -> Option<String> {
        let node = f.get(name)?;
        match &node.value {
            Value::Str(s) if !s.is_empty() => Some(s.clone()),
            Value::Str(_) => {
                self.problem(node.at, &f.key(name), "must not be empty");
                None
            }
            other => {
                self.problem(
                    node.at,
                    &f.key(name),
                    format!("expected a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A scalar as text (strings, numbers, booleans): for backend options.
    fn scalar(&mut self, node: &Node, key: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(x) => Some(x.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.problem(
                    node.at,
                    key,
                    format!("expected a string or number, found {}", other.kind()),
                );
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, f: &Fields, name: &str, default: bool) -> bool {
        let Some(node) = f.get(name) else {
            return default;
        };
        match node.value {
            Value::Bool(b) => b,
            ref other => {
                self.problem(
                    node.at,
                    &f.key(name),
                    format!("expected true or false, found {}", other.kind()),
                );
                default
            }
        }
    }

    pub(crate) fn count(&mut self, f: &Fields, name: &str) -> Option<u32> {
        let node = f.get(name)?;
        match node.value {
            Value::Int(i) if (0..=i64::from(u32::MAX)).contains(&i) => {
                Some(u32::try_from(i).unwrap_or(u32::MAX))
            }
            ref other => {
                self.problem(
                    node.at,
                    &f.key(name),
                    format!("expected a whole number >= 0, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A string or a list of strings.
    pub(crate) fn strings(&mut self, f: &Fields, name: &str) -> Vec<String> {
        let Some(node) = f.get(name) else {
            return Vec::new();
        };
        let key = f.key(name);
        match &node.value {
            Value::Str(s) => vec![s.clone()],
            Value::List(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| match &n.value {
                    Value::Str(s) => Some(s.clone()),
                    other => {
                        self.problem(
                            n.at,
                            &format!("{key}[{i}]"),
                            format!("expected a string, found {}", other.kind()),
                        );
                        None
                    }
                })
                .collect(),
            other => {
                self.problem(
                    node.at,
                    &key,
                    format!(
                        "expected a string or a list of strings, found {}",
                        other.kind()
                    ),
                );
                Vec::new()
            }
        }
    }

    /// A value parsed by `parse`, its error as the problem.
    fn parsed<T>(
        &mut self,
        f: &Fields,
        name: &str,
        parse: impl Fn(&str) -> Result<T>,
    ) -> Option<T> {
        let node = f.get(name)?;
        let text = self.scalar(node, &f.key(name))?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(node.at, &f.key(name), plain(&e));
                None
            }
        }
    }

    /// A path, relative to the config's base directory.
    pub(crate) fn path(&self, given: &str) -> PathBuf {
        let p = Path::new(given);
        if p.is_absolute() {
            p.to_path_buf()
        } else if let Some(rest) = given.strip_prefix("~/")
            && let Some(home) = std::env::var_os("HOME")
        {
            PathBuf::from(home).join(rest)
        } else {
            self.base.join(p)
        }
    }

    /// A secret written as `name`, `name_env`, `name_file` or
    /// `name_command` (at most one of them).
    pub(crate) fn secret(&mut self, f: &Fields, name: &str) -> Option<Secret> {
        let mut found: Option<(Secret, Pos, String)> = None;
        for suffix in std::iter::once("").chain(secret::SOURCES) {
            let key = format!("{name}{suffix}");
            let Some(node) = f.get(&key) else { continue };
            let Some(value) = self.scalar(node, &f.key(&key)) else {
                continue;
            };
            if let Some((_, _, first)) = &found {
                self.problem(
                    node.at,
                    &f.key(&key),
                    format!("{first} is given too; keep one source for this secret"),
                );
                continue;
            }
            let s = Secret::from_suffix(suffix, value)?;
            let s = match s {
                Secret::File(p) => Secret::File(self.path(&p.to_string_lossy())),
                other => other,
            };
            found = Some((s, node.at, key));
        }
        let (s, at, key) = found?;
        self.checked_secret(s, at, &f.key(&key))
    }

    /// Refuses an inline secret in a file others can read; checks that an
    /// environment variable or file source can be found.
    fn checked_secret(&mut self, s: Secret, at: Pos, key: &str) -> Option<Secret> {
        if matches!(s, Secret::Inline(_)) && !self.owner_only {
            let name = key.rsplit('.').next().unwrap_or(key);
            self.problem(
                at,
                key,
                format!(
                    "a secret written in a file that others can read: run `chmod 600 {}`, or \
                     move it to `{name}_env: VARIABLE`, `{name}_file: PATH` or \
                     `{name}_command: COMMAND`",
                    self.file
                ),
            );
            return None;
        }
        if let Err(e) = s.check() {
            self.problem(at, key, plain(&e));
            return None;
        }
        Some(s)
    }

    /// `options:`: backend options, secret ones from secret sources.
    pub(crate) fn options(&mut self, f: &Fields) -> BTreeMap<String, OptionValue> {
        self.secret_map(f, "options", false)
    }

    /// A mapping of names to values where `NAME_env`, `NAME_file` and
    /// `NAME_command` give a secret `NAME` (backend options, HTTP
    /// headers); with `all_indirect`, for any name, otherwise for names
    /// that look like secrets.
    fn secret_map(
        &mut self,
        f: &Fields,
        field: &str,
        all_indirect: bool,
    ) -> BTreeMap<String, OptionValue> {
        let mut out = BTreeMap::new();
        let Some(node) = f.get(field) else {
            return out;
        };
        let key = f.key(field);
        let entries = match &node.value {
            Value::Map(e) => e,
            other => {
                self.problem(
                    node.at,
                    &key,
                    format!(
                        "expected a mapping of backend options, found {}",
                        other.kind()
                    ),
                );
                return out;
            }
        };
        for (k, n) in entries {
            let okey = join(&key, &k.name);
            let Some(value) = self.scalar(n, &okey) else {
                continue;
            };
            let indirect = secret::SOURCES.iter().find_map(|suffix| {
                let base = k.name.strip_suffix(suffix)?;
                ((all_indirect || secret::is_secret_name(base))
                    && !PATH_OPTIONS.contains(&k.name.as_str()))
                .then_some((base, *suffix))
            });
            let (name, value) = match indirect {
                Some((base, suffix)) => {
                    let s = Secret::from_suffix(suffix, value).expect("a known suffix");
                    let s = match s {
                        Secret::File(p) => Secret::File(self.path(&p.to_string_lossy())),
                        other => other,
                    };
                    // A refused secret still stands for its option, so that
                    // the backend's check does not report it missing too.
                    let s = self
                        .checked_secret(s, n.at, &okey)
                        .unwrap_or(Secret::Inline(String::new()));
                    (base.to_owned(), OptionValue::Secret(s))
                }
                None if secret::is_secret_name(&k.name)
                    || (all_indirect && k.name.eq_ignore_ascii_case("authorization")) =>
                {
                    let s = self
                        .checked_secret(Secret::Inline(value), n.at, &okey)
                        .unwrap_or(Secret::Inline(String::new()));
                    (k.name.clone(), OptionValue::Secret(s))
                }
                None => (k.name.clone(), OptionValue::Plain(value)),
            };
            if out.insert(name.clone(), value).is_some() {
                self.problem(
                    n.at,
                    &okey,
                    format!("the option `{name}` is given twice; keep one"),
                );
            }
        }
        out
    }

    /// The native format: `log_file`, `base_dir`, `parallel`, `jobs`.
    fn native(&mut self, path: &Path, root: &Node) -> Option<Config> {
        let f = self.fields(
            root,
            "",
            &[
                "jobs", "sessions", "log_file", "base_dir", "parallel", "notify", "http",
            ],
        )?;
        if let Some(b) = self.string(&f, "base_dir") {
            self.base = self.path(&b);
        }
        let log_file = self.string(&f, "log_file").map(|p| self.path(&p));
        let parallel = self.count(&f, "parallel").map_or(DEFAULT_PARALLEL, |n| {
            usize::try_from(n.max(1)).unwrap_or(DEFAULT_PARALLEL)
        });
        if let Some(n) = f.get("notify") {
            self.default_notify = self.notify(n, "notify");
        }
        let sessions = f
            .get("sessions")
            .map(|n| self.session_sets(n))
            .unwrap_or_default();
        let jobs = match f.get("jobs") {
            None => Vec::new(),
            Some(jobs_node) => self.jobs(jobs_node),
        };
        let http = f
            .get("http")
            .and_then(|n| {
                let h = self.fields(
                    n,
                    "http",
                    &[
                        "listen",
                        "token",
                        "token_env",
                        "token_file",
                        "token_command",
                    ],
                )?;
                Some(HttpSettings {
                    listen: self.string(&h, "listen"),
                    token: self.secret(&h, "token"),
                })
            })
            .unwrap_or_default();
        Some(Config {
            file: path.to_path_buf(),
            log_file,
            parallel,
            jobs,
            sessions,
            dialect: "backupkit",
            http,
        })
    }

    fn jobs(&mut self, jobs_node: &Node) -> Vec<Job> {
        match &jobs_node.value {
            Value::Map(entries) if !entries.is_empty() => {
                let jobs: Vec<Job> = entries
                    .iter()
                    .filter_map(|(k, n)| self.job(&k.name, n, &join("jobs", &k.name)))
                    .collect();
                self.task_references(&jobs);
                jobs
            }
            Value::Map(_) | Value::Null => {
                self.problem(jobs_node.at, "jobs", "no jobs: add at least one");
                Vec::new()
            }
            other => {
                self.problem(
                    jobs_node.at,
                    "jobs",
                    format!(
                        "expected a mapping of job names to jobs, found {}",
                        other.kind()
                    ),
                );
                Vec::new()
            }
        }
    }

    fn job(&mut self, name: &str, node: &Node, path: &str) -> Option<Job> {
        self.check_name(name, node.at, path);
        let f = self.fields(
            node,
            path,
            &[
                "enabled",
                "sources",
                "exclude",
                "exclude_file",
                "tags",
                "destinations",
                "hooks",
                "notify",
                "schedule",
                "every",
                "catch_up",
                "pull",
                "task",
                "jobs",
                "read_data",
            ],
        )?;
        let enabled = self.boolean(&f, "enabled", true);
        let (mut schedule, catch_up) = self.schedule(&f);
        let pull = self.pull_job(&f, &mut schedule);
        let task = self.task(&f);
        let own_data = f.get("pull").is_none() && f.get("task").is_none();
        let sources = if own_data {
            self.sources(&f)
        } else {
            Vec::new()
        };
        let excludes = self.strings(&f, "exclude");
        let exclude_files = self
            .strings(&f, "exclude_file")
            .iter()
            .map(|p| self.path(p))
            .collect();
        let tags = self.strings(&f, "tags");
        let hooks = match f.get("hooks") {
            Some(n) => self.hooks(n, &f.key("hooks")),
            None => Hooks::default(),
        };
        let notify = match f.get("notify") {
            Some(n) => self.notify(n, &f.key("notify")),
            None => self.default_notify.clone(),
        };
        let destinations = self.job_destinations(&f, path, &sources, own_data);
        Some(Job {
            name: name.to_owned(),
            enabled,
            sources,
            excludes,
            exclude_files,
            tags,
            destinations,
            hooks,
            notify,
            schedule,
            catch_up,
            pull,
            task,
        })
    }

    /// A task's `jobs:` must name jobs with repositories.
    fn task_references(&mut self, jobs: &[Job]) {
        for j in jobs {
            let Some(t) = &j.task else { continue };
            for name in &t.jobs {
                let target = jobs.iter().find(|o| &o.name == name);
                let why = match target {
                    None => Some(format!("no job named {name:?}")),
                    Some(o) if o.task.is_some() || o.pull.is_some() => {
                        Some(format!("{name:?} is not a backup job"))
                    }
                    Some(o) if !o.destinations.iter().any(|d| d.kind_name() == "snapshots") => {
                        Some(format!("the job {name:?} has no repository destination"))
                    }
                    Some(_) => None,
                };
                if let Some(why) = why {
                    self.problem(t.at, &join(&join("jobs", &j.name), "jobs"), why);
                }
            }
        }
    }

    /// `task: cleanup|check` with `jobs:` and `read_data:`.
    fn task(&mut self, f: &Fields) -> Option<Task> {
        let Some(node) = f.get("task") else {
            for key in ["jobs", "read_data"] {
                if let Some(n) = f.get(key) {
                    self.problem(n.at, &f.key(key), "only a job with `task:` takes this key");
                }
            }
            return None;
        };
        for key in ["sources", "destinations", "pull"] {
            if let Some(n) = f.get(key) {
                self.problem(
                    n.at,
                    &f.key(key),
                    "a task works on other jobs' repositories (`jobs:`); it has no sources or \
                     destinations of its own",
                );
            }
        }
        let read_data = f.get("read_data").map(|n| match &n.value {
            Value::Bool(b) => (*b, None),
            Value::Str(s) => (false, Some(s.clone())),
            other => {
                self.problem(
                    n.at,
                    &f.key("read_data"),
                    format!(
                        "expected true or a subset such as 10% or 1/7, found {}",
                        other.kind()
                    ),
                );
                (false, None)
            }
        });
        let kind = match self.string(f, "task").as_deref() {
            Some("cleanup") => {
                if let Some(n) = f.get("read_data") {
                    self.problem(n.at, &f.key("read_data"), "only `task: check` reads data");
                }
                TaskKind::Cleanup
            }
            Some("check") => {
                let (read_data, read_data_subset) = read_data.unwrap_or((false, None));
                TaskKind::Check {
                    read_data,
                    read_data_subset,
                }
            }
            Some(other) => {
                self.problem(
                    node.at,
                    &f.key("task"),
                    format!(
                        "{other:?}: expected cleanup (apply the jobs' retention) or check \
                         (check their repositories)"
                    ),
                );
                return None;
            }
            None => return None,
        };
        Some(Task {
            kind,
            jobs: self.strings(f, "jobs"),
            at: f.get("jobs").map_or(node.at, |n| n.at),
        })
    }

    /// A job's `destinations:` (none for a pull job or a task).
    fn job_destinations(
        &mut self,
        f: &Fields,
        path: &str,
        sources: &[Source],
        own_data: bool,
    ) -> Vec<Destination> {
        let mut destinations = Vec::new();
        match f.get("destinations") {
            None if !own_data => {}
            None => self.problem(
                f.at,
                path,
                "no `destinations:`: add at least one (`mirror: PATH` or `repository: LOCATION`)",
            ),
            Some(n) => match &n.value {
                Value::Map(entries) if !entries.is_empty() => {
                    for (k, d) in entries {
                        let dpath = join(&f.key("destinations"), &k.name);
                        let Some(d) = self.destination(&k.name, d, &dpath, sources) else {
                            continue;
                        };
                        if let Some(other) = destinations
                            .iter()
                            .find(|o: &&Destination| o.location == d.location)
                        {
                            self.problem(
                                k.at,
                                &dpath,
                                format!(
                                    "the same place as the destination `{}`: two runs would \
                                     write into one location",
                                    other.name
                                ),
                            );
                        }
                        destinations.push(d);
                    }
                }
                other => self.problem(
                    n.at,
                    &f.key("destinations"),
                    format!(
                        "expected a mapping of destination names to destinations, found {}",
                        other.kind()
                    ),
                ),
            },
        }
        destinations
    }

    /// A job's `pull:`, which takes the place of `sources:` and
    /// `destinations:`; without a schedule the job is pulled as often as
    /// its devices are discovered.
    fn pull_job(
        &mut self,
        f: &Fields,
        schedule: &mut Option<crate::schedule::Schedule>,
    ) -> Option<crate::fleet::Pull> {
        let node = f.get("pull")?;
        let pull = self.pull(node, &f.key("pull"));
        for key in ["sources", "destinations"] {
            if let Some(n) = f.get(key) {
                self.problem(
                    n.at,
                    &f.key(key),
                    "a pull job takes its data from `pull.devices` into `pull.kinds`; remove \
                     this key or make it a job of its own",
                );
            }
        }
        if schedule.is_none()
            && f.get("schedule").is_none()
            && f.get("every").is_none()
            && let Some(p) = &pull
        {
            *schedule = Some(crate::schedule::Schedule::Every(
                p.discover
                    .as_ref()
                    .map_or(crate::fleet::DISCOVER_EVERY, |d| d.every),
            ));
        }
        pull
    }

    /// `schedule:` (a crontab expression) or `every:` (an interval), and
    /// `catch_up:`.
    pub(crate) fn schedule(&mut self, f: &Fields) -> (Option<crate::schedule::Schedule>, bool) {
        use crate::schedule::{Cron, Schedule};
        let cron = self.parsed(f, "schedule", Cron::parse);
        let every = self.parsed(f, "every", |s| {
            let d = parse_duration(s)?;
            if d < Duration::from_secs(1) {
                return Err(Error::InvalidInput(format!(
                    "{s:?}: an interval must be at least 1s"
                )));
            }
            Ok(d)
        });
        let catch_up = self.boolean(f, "catch_up", false);
        let schedule = match (cron, every) {
            (Some(_), Some(_)) => {
                if let Some(n) = f.get("every") {
                    self.problem(
                        n.at,
                        &f.key("every"),
                        "give either `schedule:` (crontab) or `every:` (interval), not both",
                    );
                }
                None
            }
            (Some(c), None) => Some(Schedule::Cron(c)),
            (None, Some(d)) => Some(Schedule::Every(d)),
            (None, None) => None,
        };
        if catch_up
            && f.get("schedule").is_none()
            && f.get("every").is_none()
            && let Some(n) = f.get("catch_up")
        {
            self.problem(
                n.at,
                &f.key("catch_up"),
                "`catch_up:` needs a `schedule:` to catch up on",
            );
        }
        (schedule, catch_up)
    }

    fn check_name(&mut self, name: &str, at: Pos, path: &str) {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            self.problem(
                at,
                path,
                "a name may hold only letters, digits, `-`, `_` and `.`",
            );
        }
    }

    fn sources(&mut self, f: &Fields) -> Vec<Source> {
        let Some(node) = f.get("sources") else {
            self.problem(
                f.at,
                &f.path,
                "no `sources:`: add a list of paths (`- data/results`) or databases \
                 (`- database: postgres://user@host/db`)",
            );
            return Vec::new();
        };
        let key = f.key("sources");
        let items: &[Node] = match &node.value {
            Value::List(items) if !items.is_empty() => items,
            Value::Str(_) => std::slice::from_ref(node),
            other => {
                self.problem(
                    node.at,
                    &key,
                    format!(
                        "expected a list of paths or databases, found {}",
                        if matches!(other, Value::List(_)) {
                            "an empty list"
                        } else {
                            other.kind()
                        }
                    ),
                );
                return Vec::new();
            }
        };
        let mut out: Vec<Source> = Vec::new();
        for (i, n) in items.iter().enumerate() {
            let ipath = format!("{key}[{i}]");
            let Some(s) = self.source(n, &ipath) else {
                continue;
            };
            if out.iter().any(|o| o.name() == s.name()) {
                self.problem(
                    n.at,
                    &ipath,
                    format!(
                        "two sources are named {:?}: give one `name: ...` of its own",
                        s.name()
                    ),
                );
                continue;
            }
            out.push(s);
        }
        out
    }

    fn source(&mut self, n: &Node, path: &str) -> Option<Source> {
        let (given, name, at) = match &n.value {
            Value::Str(s) => (s.clone(), None, n.at),
            Value::Map(_) => {
                let f = self.fields(
                    n,
                    path,
                    &[
                        "path",
                        "name",
                        "database",
                        "password",
                        "password_env",
                        "password_file",
                        "password_command",
                    ],
                )?;
                let name = self.string(&f, "name");
                if let Some(db) = self.string(&f, "database") {
                    if f.get("path").is_some() {
                        self.problem(
                            f.at,
                            path,
                            "a source is either `path:` or `database:`, not both",
                        );
                    }
                    let password = self.secret(&f, "password");
                    return self.database(&db, password, name, f.get("database")?.at, path);
                }
                if f.get("password").is_some() || f.get("password_env").is_some() {
                    self.problem(f.at, path, "a password belongs to a `database:` source");
                }
                let Some(p) = self.string(&f, "path") else {
                    if f.get("path").is_none() {
                        self.problem(f.at, path, "a source needs `path: DIR` or `database: URL`");
                    }
                    return None;
                };
                (p, name, f.get("path")?.at)
            }
            other => {
                self.problem(
                    n.at,
                    path,
                    format!("expected a path or a mapping, found {}", other.kind()),
                );
                return None;
            }
        };
        let full = self.path(&given);
        if !full.exists() {
            self.problem(
                at,
                path,
                format!("the source {} does not exist", full.display()),
            );
            return None;
        }
        let name = name.unwrap_or_else(|| {
            full.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            self.problem(
                at,
                path,
                "this source has no name of its own to give its directory in mirrors: add \
                 `name: ...`",
            );
            return None;
        }
        Some(Source::Files { path: full, name })
    }

    pub(crate) fn database(
        &mut self,
        given: &str,
        password: Option<Secret>,
        name: Option<String>,
        at: Pos,
        path: &str,
    ) -> Option<Source> {
        let url = if given.contains("://") {
            given.to_owned()
        } else {
            let full = self.path(given);
            if !full.is_file() {
                self.problem(
                    at,
                    path,
                    format!("the database file {} does not exist", full.display()),
                );
                return None;
            }
            format!("sqlite://{}", full.display())
        };
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if !["sqlite", "postgres", "postgresql", "mysql", "mariadb"].contains(&scheme) {
            self.problem(
                at,
                path,
                format!(
                    "unknown database scheme {scheme:?} (expected postgres://, mysql://, \
                     mariadb://, sqlite:// or the path of an SQLite file)"
                ),
            );
            return None;
        }
        if let Some((_, rest)) = url.split_once("://")
            && let Some((auth, _)) = rest.rsplit_once('@')
            && auth.contains(':')
        {
            if password.is_some() {
                self.problem(
                    at,
                    path,
                    "the URL holds a password and `password...:` is given too; keep one",
                );
            }
            self.checked_secret(Secret::Inline(String::new()), at, &join(path, "password"))?;
        }
        if let Err(e) = self.registry.database_source_available(&url) {
            self.problem(at, path, plain(&e));
            return None;
        }
        let name = name.unwrap_or_else(|| default_db_name(&url));
        Some(Source::Database {
            url,
            password,
            name,
        })
    }

    fn destination(
        &mut self,
        name: &str,
        node: &Node,
        path: &str,
        sources: &[Source],
    ) -> Option<Destination> {
        self.check_name(name, node.at, path);
        let known: Vec<&str> = [COMMON_KEYS, MIRROR_KEYS, SNAPSHOT_KEYS].concat();
        let f = self.fields(node, path, &known)?;
        let enabled = self.boolean(&f, "enabled", true);
        let mirror = self.string(&f, "mirror");
        let repository = self.string(&f, "repository");
        let (location, is_mirror, at) = match (mirror, repository) {
            (Some(m), None) => (m, true, f.get("mirror")?.at),
            (None, Some(r)) => (r, false, f.get("repository")?.at),
            (Some(_), Some(_)) => {
                self.problem(
                    f.at,
                    path,
                    "give `mirror:` (plain files) or `repository:` (snapshots), not both",
                );
                return None;
            }
            (None, None) => {
                if f.get("mirror").is_none() && f.get("repository").is_none() {
                    self.problem(
                        f.at,
                        path,
                        "say where it goes: `mirror: LOCATION` (plain files) or `repository: \
                         LOCATION` (snapshots)",
                    );
                }
                return None;
            }
        };
        let location = if crate::Registry::scheme_of(&location) == crate::registry::LOCAL_SCHEME {
            self.path(&location).display().to_string()
        } else {
            location
        };
        let kind_key = if is_mirror { "mirror" } else { "repository" };
        if let Err(e) = self.registry_check(&location, is_mirror) {
            self.problem(at, &f.key(kind_key), e);
        }
        let only_for = |k: &str| {
            if is_mirror {
                SNAPSHOT_KEYS.contains(&k)
            } else {
                MIRROR_KEYS.contains(&k)
            }
        };
        for (k, n) in f.entries {
            if only_for(&k.name) {
                let (this, other) = if is_mirror {
                    ("a mirror", "`repository:` destinations")
                } else {
                    ("a snapshot repository", "`mirror:` destinations")
                };
                let extra = if k.name == "compression" {
                    " (a mirror keeps plain files; for compressed snapshots use `repository:`)"
                } else {
                    ""
                };
                self.problem(
                    n.at,
                    &f.key(&k.name),
                    format!("not an option of {this}: it belongs to {other}{extra}"),
                );
            }
        }
        let kind = if is_mirror {
            Kind::Mirror(self.mirror_settings(&f))
        } else {
            Kind::Snapshots(self.snapshot_settings(&f))
        };
        let wanted = self.wanted_sources(&f, sources);
        let flat = self.flat(&f, is_mirror, sources, &wanted);
        let options = self.options(&f);
        self.check_options(&location, &options, is_mirror, &f, kind_key);
        Some(Destination {
            name: name.to_owned(),
            enabled,
            location,
            kind,
            sources: wanted,
            flat,
            options,
        })
    }

    /// The backend's own check of a destination's options (unknown keys,
    /// bad values, missing credentials), with secrets standing in as
    /// placeholders: nothing is opened, run or connected.
    fn check_options(
        &mut self,
        location: &str,
        options: &BTreeMap<String, OptionValue>,
        tree: bool,
        f: &Fields,
        kind_key: &str,
    ) {
        let stand_in: crate::TargetOptions = options
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    OptionValue::Plain(s) => s.clone(),
                    OptionValue::Secret(_) => "secret-placeholder".into(),
                };
                (k.clone(), v)
            })
            .collect();
        if self.registry.check_location(location, tree).is_err() {
            return;
        }
        if let Err(e) = self.registry.check_options(location, &stand_in, tree) {
            let (at, key) = match f.get("options") {
                Some(n) => (n.at, f.key("options")),
                None => (f.get(kind_key).map_or(f.at, |n| n.at), f.key(kind_key)),
            };
            self.problem(at, &key, plain(&e));
        }
    }

    fn mirror_settings(&mut self, f: &Fields) -> MirrorSettings {
        MirrorSettings {
            delete: self.boolean(f, "delete", false),
            max_delete: self.parsed(f, "max_delete", str::parse),
            update: self.boolean(f, "update", false),
            checksum: self.boolean(f, "checksum", false),
            verify: self.parsed(f, "verify", str::parse),
            backup_dir: self.string(f, "backup_dir"),
            transfers: self
                .count(f, "transfers")
                .and_then(|n| usize::try_from(n).ok()),
            bwlimit: self.parsed(f, "bwlimit", crate::mirror::parse_rate),
        }
    }

    fn snapshot_settings(&mut self, f: &Fields) -> SnapshotSettings {
        let compression = self.compression(f).unwrap_or_default();
        let level = self.count(f, "level").and_then(|l| i32::try_from(l).ok());
        if let (Some(l), Some(node)) = (level, f.get("level")) {
            match compression.level_range() {
                Some((lo, hi)) if !(lo..=hi).contains(&l) => self.problem(
                    node.at,
                    &f.key("level"),
                    format!("{compression:?} levels are {lo} to {hi}"),
                ),
                None => self.problem(node.at, &f.key("level"), "no level without compression"),
                _ => {}
            }
        }
        SnapshotSettings {
            compression,
            level,
            init: self.boolean(f, "init", false),
            retention: self.retention(f),
        }
    }

    /// `sources:` of a destination: names of the job's sources.
    fn wanted_sources(&mut self, f: &Fields, sources: &[Source]) -> Vec<String> {
        let wanted = self.strings(f, "sources");
        for w in &wanted {
            if !sources.iter().any(|s| s.name() == w) {
                let names: Vec<&str> = sources.iter().map(Source::name).collect();
                let hint = nearest(w, &names).map_or_else(
                    || format!(" (the job's sources: {})", names.join(", ")),
                    |n| format!("; did you mean `{n}`?"),
                );
                let at = f.get("sources").map_or(f.at, |n| n.at);
                self.problem(
                    at,
                    &f.key("sources"),
                    format!("the job has no source named {w:?}{hint}"),
                );
            }
        }
        wanted
    }

    /// `flat:`, allowed for a mirror of exactly one file tree.
    fn flat(&mut self, f: &Fields, is_mirror: bool, sources: &[Source], wanted: &[String]) -> bool {
        let flat = self.boolean(f, "flat", false);
        if flat {
            let taken: Vec<&Source> = sources
                .iter()
                .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == s.name()))
                .collect();
            let at = f.get("flat").map_or(f.at, |n| n.at);
            if !is_mirror {
                self.problem(at, &f.key("flat"), "only a mirror can be flat");
            } else if taken.len() != 1 || !matches!(taken[0], Source::Files { .. }) {
                self.problem(
                    at,
                    &f.key("flat"),
                    "a flat mirror takes exactly one file tree: name it with `sources: [NAME]`",
                );
            }
        }
        flat
    }

    fn compression(&mut self, f: &Fields) -> Option<Compression> {
        let node = f.get("compression")?;
        match &node.value {
            Value::Bool(true) => Some(Compression::Gzip),
            Value::Bool(false) => Some(Compression::None),
            _ => self.parsed(f, "compression", str::parse),
        }
    }

    fn retention(&mut self, f: &Fields) -> KeepPolicy {
        let within = |v: &mut Self, k: &str| v.parsed(f, k, str::parse::<KeepDuration>);
        KeepPolicy {
            last: self.count(f, "keep_last").unwrap_or(0),
            hourly: self.count(f, "keep_hourly").unwrap_or(0),
            daily: self.count(f, "keep_daily").unwrap_or(0),
            weekly: self.count(f, "keep_weekly").unwrap_or(0),
            monthly: self.count(f, "keep_monthly").unwrap_or(0),
            yearly: self.count(f, "keep_yearly").unwrap_or(0),
            within: within(self, "keep_within"),
            within_hourly: within(self, "keep_within_hourly"),
            within_daily: within(self, "keep_within_daily"),
            within_weekly: within(self, "keep_within_weekly"),
            within_monthly: within(self, "keep_within_monthly"),
            within_yearly: within(self, "keep_within_yearly"),
            tags: self
                .strings(f, "keep_tag")
                .iter()
                .map(|t| t.split(',').map(str::to_owned).collect())
                .collect(),
        }
    }

    pub(crate) fn notify(&mut self, node: &Node, path: &str) -> Option<Notify> {
        let f = self.fields(node, path, &["on", "email", "webhook", "ping"])?;
        let on = match self.string(&f, "on").as_deref() {
            None | Some("failure") => When::Failure,
            Some("success") => When::Success,
            Some("always") => When::Always,
            Some(other) => {
                let at = f.get("on").map_or(f.at, |n| n.at);
                self.problem(
                    at,
                    &f.key("on"),
                    format!("unknown {other:?} (expected failure, success or always)"),
                );
                When::Failure
            }
        };
        let email = f.get("email").and_then(|n| self.email(n, &f.key("email")));
        let webhook = f
            .get("webhook")
            .and_then(|n| self.webhook(n, &f.key("webhook")));
        let ping = self.string(&f, "ping");
        if let (Some(p), Some(n)) = (&ping, f.get("ping")) {
            self.http_url(p, n.at, &f.key("ping"));
        }
        Some(Notify {
            on,
            email,
            webhook,
            ping,
        })
    }

    /// An `http://` or `https://` URL, or a problem.
    fn http_url(&mut self, url: &str, at: Pos, key: &str) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.problem(at, key, "expected an http:// or https:// URL");
        }
    }

    /// `email:` (and seed 002's `notifications.email`).
    pub(crate) fn email(&mut self, node: &Node, path: &str) -> Option<EmailSettings> {
        let f = self.fields(node, path, EMAIL_KEYS)?;
        let host = self.string(&f, "smtp_host");
        let from = self.string(&f, "from_email");
        let to = self.strings(&f, "to_emails");
        let port = self.count(&f, "smtp_port");
        let security = match self.string(&f, "smtp_security").as_deref() {
            None if port == Some(465) => Security::Tls,
            None | Some("starttls") => Security::StartTls,
            Some("tls") => Security::Tls,
            Some("plain") => Security::Plain,
            Some(other) => {
                let at = f.get("smtp_security").map_or(f.at, |n| n.at);
                self.problem(
                    at,
                    &f.key("smtp_security"),
                    format!("unknown {other:?} (expected starttls, tls or plain)"),
                );
                Security::StartTls
            }
        };
        let port = match port {
            Some(p) => u16::try_from(p).unwrap_or(0),
            None => match security {
                Security::StartTls => 587,
                Security::Tls => 465,
                Security::Plain => 25,
            },
        };
        let user = self.string(&f, "smtp_user");
        let password = self.secret(&f, "smtp_password");
        for (name, missing) in [
            ("smtp_host", host.is_none()),
            ("from_email", from.is_none()),
            ("to_emails", to.is_empty()),
        ] {
            if missing && f.get(name).is_none() {
                self.problem(f.at, path, format!("needs `{name}:`"));
            }
        }
        if let (Some(h), Some(_), Security::Plain) = (&host, &password, security)
            && !is_loopback(h)
        {
            let at = f.get("smtp_security").map_or(f.at, |n| n.at);
            self.problem(
                at,
                path,
                "a password over a plain connection to another machine: use `smtp_security: \
                 starttls` or `tls`",
            );
        }
        let ca_file = self.string(&f, "ca_file").map(|p| self.path(&p));
        let timeout = self
            .parsed(&f, "timeout", parse_duration)
            .unwrap_or(crate::jobs::notify::DEFAULT_TIMEOUT);
        Some(EmailSettings {
            host: host?,
            port,
            security,
            user,
            password,
            from: from?,
            to,
            ca_file,
            timeout,
        })
    }

    fn webhook(&mut self, node: &Node, path: &str) -> Option<WebhookSettings> {
        let f = self.fields(node, path, &["url", "headers", "ca_file", "timeout"])?;
        let url = self.string(&f, "url");
        match (&url, f.get("url")) {
            (Some(u), Some(n)) => self.http_url(u, n.at, &f.key("url")),
            (None, None) => self.problem(f.at, path, "needs `url:`"),
            _ => {}
        }
        let headers = self.secret_map(&f, "headers", true);
        let ca_file = self.string(&f, "ca_file").map(|p| self.path(&p));
        let timeout = self
            .parsed(&f, "timeout", parse_duration)
            .unwrap_or(crate::jobs::notify::DEFAULT_TIMEOUT);
        Some(WebhookSettings {
            url: url?,
            headers,
            ca_file,
            timeout,
        })
    }

    fn hooks(&mut self, node: &Node, path: &str) -> Hooks {
        let Some(f) = self.fields(node, path, &["before", "after", "on_failure", "timeout"]) else {
            return Hooks::default();
        };
        Hooks {
            before: self.strings(&f, "before"),
            after: self.strings(&f, "after"),
            on_failure: self.strings(&f, "on_failure"),
            timeout: self
                .parsed(&f, "timeout", parse_duration)
                .unwrap_or(Duration::from_secs(DEFAULT_HOOK_TIMEOUT)),
        }
    }
}

/// The keys of an `email:` notification (seed 002's, plus a few).
pub(crate) const EMAIL_KEYS: &[&str] = &[
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "smtp_user",
    "smtp_password",
    "smtp_password_env",
    "smtp_password_file",
    "smtp_password_command",
    "from_email",
    "to_emails",
    "ca_file",
    "timeout",
];

/// Whether a host name is this machine.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Destinations of one job run at once, unless `parallel:` says otherwise.
pub const DEFAULT_PARALLEL: usize = 4;

/// Options that end in `_file` but name a file the backend reads itself.
const PATH_OPTIONS: &[&str] = &["web_identity_token_file", "federated_token_file"];

const MIRROR_KEYS: &[&str] = &[
    "delete",
    "max_delete",
    "update",
    "checksum",
    "verify",
    "backup_dir",
    "transfers",
    "bwlimit",
];

const SNAPSHOT_KEYS: &[&str] = &[
    "compression",
    "level",
    "init",
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
    "keep_within_hourly",
    "keep_within_daily",
    "keep_within_weekly",
    "keep_within_monthly",
    "keep_within_yearly",
    "keep_tag",
];

/// Keys every destination may have; then those of its kind.
const COMMON_KEYS: &[&str] = &[
    "mirror",
    "repository",
    "enabled",
    "sources",
    "flat",
    "options",
];

/// `30`, `30s`, `5m`, `2h`: a duration as configs write it.
///
/// # Errors
///
/// [`Error::InvalidInput`] for anything else.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| Error::InvalidInput(format!("{s:?} is not a duration (30s, 5m, 2h)")))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(Error::InvalidInput(format!(
                "{s:?} is not a duration (30s, 5m, 2h)"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// A database source's default name: the database's or file's name.
fn default_db_name(url: &str) -> String {
    let tail = url.rsplit('/').next().unwrap_or("database");
    let tail = tail.split('?').next().unwrap_or(tail);
    let stem = tail.rsplit_once('.').map_or(tail, |(s, _)| s);
    if stem.is_empty() {
        "database".into()
    } else {
        stem.to_owned()
    }
}

/// An error's message without its kind's prefix.
pub(crate) fn plain(e: &Error) -> String {
    match e {
        Error::InvalidInput(m) | Error::Unsupported(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The known name closest to `given` (edit distance at most 3, or a
/// different case), for "did you mean".
fn nearest<'k>(given: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (distance(&given.to_ascii_lowercase(), k), *k))
        .filter(|(d, k)| *d <= 3.min(k.len() / 2 + 1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

impl Config {
    /// The effective config as data, for `config show`: every default
    /// filled in, paths absolute, and secrets as where they come from,
    /// never their values.
    pub fn view(&self) -> serde_json::Value {
        use serde_json::{Map, Value as J, json};
        let jobs: Map<String, J> = self
            .jobs
            .iter()
            .map(|j| {
                let sources: Vec<J> = j
                    .sources
                    .iter()
                    .map(|s| match s {
                        Source::Files { path, name } => {
                            json!({"name": name, "path": path.display().to_string()})
                        }
                        Source::Database {
                            url,
                            password,
                            name,
                        } => {
                            let mut m =
                                json!({"name": name, "database": crate::registry::redact(url)});
                            if let Some(p) = password {
                                m["password"] = J::String(p.shown());
                            }
                            m
                        }
                    })
                    .collect();
                let dests: Map<String, J> = j
                    .destinations
                    .iter()
                    .map(|d| (d.name.clone(), destination_view(d)))
                    .collect();
                let mut job = json!({
                    "enabled": j.enabled,
                    "sources": sources,
                    "destinations": dests,
                });
                if !j.excludes.is_empty() {
                    job["exclude"] = json!(j.excludes);
                }
                if !j.exclude_files.is_empty() {
                    job["exclude_file"] = json!(
                        j.exclude_files
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                    );
                }
                if !j.tags.is_empty() {
                    job["tags"] = json!(j.tags);
                }
                match &j.schedule {
                    Some(crate::schedule::Schedule::Cron(c)) => {
                        job["schedule"] = json!(c.as_str());
                    }
                    Some(crate::schedule::Schedule::Every(d)) => {
                        job["every"] = json!(crate::schedule::interval(*d));
                    }
                    None => {}
                }
                if j.catch_up {
                    job["catch_up"] = json!(true);
                }
                special_view(j, &mut job);
                let h = &j.hooks;
                if !(h.before.is_empty() && h.after.is_empty() && h.on_failure.is_empty()) {
                    job["hooks"] = json!({
                        "before": h.before,
                        "after": h.after,
                        "on_failure": h.on_failure,
                        "timeout": format!("{}s", h.timeout.as_secs()),
                    });
                }
                (j.name.clone(), job)
            })
            .collect();
        let mut out = json!({
            "file": self.file.display().to_string(),
            "read_as": self.dialect,
            "parallel": self.parallel,
            "jobs": jobs,
        });
        if let Some(l) = &self.log_file {
            out["log_file"] = J::String(l.display().to_string());
        }
        if !self.sessions.is_empty() {
            out["sessions"] = crate::sessions::config::view(&self.sessions);
        }
        out
    }
}

fn destination_view(d: &Destination) -> serde_json::Value {
    use serde_json::{Value as J, json};
    let mut m = match &d.kind {
        Kind::Mirror(s) => {
            let mut m = json!({
                "mirror": crate::registry::redact(&d.location),
                "delete": s.delete,
                "update": s.update,
                "checksum": s.checksum,
            });
            if let Some(v) = &s.verify {
                m["verify"] = J::String(format!("{v:?}").to_lowercase());
            }
            if let Some(x) = &s.max_delete {
                m["max_delete"] = json!(x);
            }
            if let Some(b) = &s.backup_dir {
                m["backup_dir"] = J::String(b.clone());
            }
            if let Some(t) = s.transfers {
                m["transfers"] = json!(t);
            }
            if let Some(b) = s.bwlimit {
                m["bwlimit"] = J::String(format!("{}K", b / 1024));
            }
            if d.flat {
                m["flat"] = J::Bool(true);
            }
            m
        }
        Kind::Snapshots(s) => {
            let mut m = json!({
                "repository": crate::registry::redact(&d.location),
                "compression": format!("{:?}", s.compression).to_lowercase(),
                "init": s.init,
            });
            if let Some(l) = s.level {
                m["level"] = json!(l);
            }
            let r = &s.retention;
            for (k, v) in [
                ("keep_last", r.last),
                ("keep_hourly", r.hourly),
                ("keep_daily", r.daily),
                ("keep_weekly", r.weekly),
                ("keep_monthly", r.monthly),
                ("keep_yearly", r.yearly),
            ] {
                if v > 0 {
                    m[k] = json!(v);
                }
            }
            for (k, v) in [
                ("keep_within", r.within),
                ("keep_within_hourly", r.within_hourly),
                ("keep_within_daily", r.within_daily),
                ("keep_within_weekly", r.within_weekly),
                ("keep_within_monthly", r.within_monthly),
                ("keep_within_yearly", r.within_yearly),
            ] {
                if let Some(v) = v {
                    m[k] = J::String(v.to_string());
                }
            }
            if !r.tags.is_empty() {
                m["keep_tag"] = json!(r.tags.iter().map(|t| t.join(",")).collect::<Vec<_>>());
            }
            m
        }
    };
    if !d.enabled {
        m["enabled"] = J::Bool(false);
    }
    if !d.sources.is_empty() {
        m["sources"] = json!(d.sources);
    }
    if !d.options.is_empty() {
        m["options"] = options_view(&d.options);
    }
    m
}

/// A task's or a pull job's own keys, in place of sources and
/// destinations.
fn special_view(j: &Job, job: &mut serde_json::Value) {
    use serde_json::json;
    if let Some(t) = &j.task {
        match &t.kind {
            TaskKind::Cleanup => job["task"] = json!("cleanup"),
            TaskKind::Check {
                read_data,
                read_data_subset,
            } => {
                job["task"] = json!("check");
                job["read_data"] = match read_data_subset {
                    Some(s) => json!(s),
                    None => json!(read_data),
                };
            }
        }
        job["jobs"] = json!(t.jobs);
        if let Some(o) = job.as_object_mut() {
            o.remove("sources");
            o.remove("destinations");
        }
    }
    if let Some(p) = &j.pull {
        job["pull"] = crate::fleet::config::view(p);
        if let Some(o) = job.as_object_mut() {
            o.remove("sources");
            o.remove("destinations");
        }
    }
}

/// Backend options for display: secret ones by their source only.
pub(crate) fn options_view(options: &BTreeMap<String, OptionValue>) -> serde_json::Value {
    let opts: serde_json::Map<String, serde_json::Value> = options
        .iter()
        .map(|(k, v)| {
            let shown = match v {
                OptionValue::Plain(s) => s.clone(),
                OptionValue::Secret(s) => s.shown(),
            };
            (k.clone(), serde_json::Value::String(shown))
        })
        .collect();
    serde_json::Value::Object(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_names_and_durations() {
        assert_eq!(nearest("destination", COMMON_KEYS), None);
        assert_eq!(nearest("keep_dialy", SNAPSHOT_KEYS), Some("keep_daily"));
        assert_eq!(nearest("exlude", &["exclude", "enabled"]), Some("exclude"));
        assert_eq!(nearest("zzz", &["exclude"]), None);
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(default_db_name("sqlite:///x/results.db"), "results");
        assert_eq!(
            default_db_name("postgres://u@h:5432/app?sslmode=off"),
            "app"
        );
    }
}
