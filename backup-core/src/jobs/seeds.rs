//! The config sections of the scripts backupkit replaces, read as they are
//! written: seed 000's `backups:` (a pipeline's unified backup script) and
//! seed 002's `backup:` (a web application's backup manager). Each becomes
//! ordinary [`Config`] jobs; what a section lacks that backupkit needs is
//! a problem that says what to add.
//!
//! Relative paths are relative to the working directory, as the scripts
//! resolved them. Other top-level sections of the file (a pipeline's own
//! settings) are not backupkit's and are left alone.

use std::collections::BTreeMap;
use std::path::Path;

use crate::archive::Compression;
use crate::jobs::doc::{Node, Pos, Value, join};
use crate::jobs::model::{
    Config, DEFAULT_PARALLEL, Destination, Fields, Hooks, Job, Kind, MirrorSettings, Notify,
    OptionValue, SnapshotSettings, Source, Task, TaskKind, Validator,
};
use crate::jobs::notify::When;
use crate::jobs::secret::Secret;
use crate::retention::KeepPolicy;

/// The section's key position and node; the validator is rooted at the
/// working directory.
fn section<'n>(v: &mut Validator, root: &'n Node, name: &str) -> Option<(Pos, &'n Node)> {
    v.base = std::env::current_dir().unwrap_or_else(|_| ".".into());
    match &root.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(k, n)| (k.at, n)),
        _ => None,
    }
}

/// Seed 000's `backups:` section: one job, `backups`, with the section's
/// destinations. A destination with `use_compression` (or the global
/// `compression.enabled`) keeps gzip snapshots; one without is a mirror
/// updated as the script's `rsync --update` / `rclone --update` did.
pub(crate) fn seed000(v: &mut Validator, path: &Path, root: &Node) -> Option<Config> {
    let (at, node) = section(v, root, "backups")?;
    let f = v.fields(
        node,
        "backups",
        &[
            "enabled",
            "compression",
            "destinations",
            "sources",
            "log_file",
        ],
    )?;
    let enabled = v.boolean(&f, "enabled", true);
    let compress_all = match f.get("compression") {
        Some(n) => v
            .fields(n, "backups.compression", &["enabled"])
            .is_some_and(|c| v.boolean(&c, "enabled", false)),
        None => false,
    };
    let log_file = v.string(&f, "log_file").map(|p| v.path(&p));
    let sources = seed000_sources(v, &f, at);
    let mut destinations = Vec::new();
    match f.get("destinations") {
        None => v.problem(at, "backups", "no `destinations:`: add at least one"),
        Some(n) => {
            if let Some(entries) = v.entries(n, "backups.destinations") {
                for (k, dn) in entries {
                    let key = join("backups.destinations", &k.name);
                    seed000_destination(
                        v,
                        &k.name,
                        dn,
                        &key,
                        &sources,
                        compress_all,
                        &mut destinations,
                    );
                }
            }
        }
    }
    Some(Config {
        file: path.to_path_buf(),
        log_file,
        parallel: DEFAULT_PARALLEL,
        sessions: Vec::new(),
        jobs: vec![Job {
            name: "backups".into(),
            enabled,
            sources,
            excludes: Vec::new(),
            exclude_files: Vec::new(),
            tags: Vec::new(),
            destinations,
            hooks: Hooks::default(),
            notify: None,
            schedule: None,
            catch_up: false,
            pull: None,
            task: None,
        }],
        dialect: "seed 000 `backups:`",
        http: crate::jobs::model::HttpSettings::default(),
    })
}

/// `backups.sources`: backupkit's addition, a name and path per tree.
fn seed000_sources(v: &mut Validator, f: &Fields, at: Pos) -> Vec<Source> {
    let mut sources = Vec::new();
    match f.get("sources") {
        None => v.problem(
            at,
            "backups",
            "seed 000's `backups:` section names no source paths: add `sources:` under \
             `backups:` with a name and path for each tree, e.g. `sources: {csvs: \
             data/flyTrackingData, results: outputs/Figures}`; a destination's `csvs_path` or \
             `results_path` then takes the source of that name",
        ),
        Some(n) => {
            if let Some(entries) = v.entries(n, "backups.sources") {
                for (k, p) in entries {
                    let key = join("backups.sources", &k.name);
                    let Value::Str(given) = &p.value else {
                        v.problem(
                            p.at,
                            &key,
                            format!("expected a path, found {}", p.value.kind()),
                        );
                        continue;
                    };
                    let full = v.path(given);
                    if !full.exists() {
                        v.problem(
                            p.at,
                            &key,
                            format!("the source {} does not exist", full.display()),
                        );
                        continue;
                    }
                    sources.push(Source::Files {
                        path: full,
                        name: k.name.clone(),
                    });
                }
            }
        }
    }
    sources
}

fn seed000_destination(
    v: &mut Validator,
    name: &str,
    node: &Node,
    key: &str,
    sources: &[Source],
    compress_all: bool,
    out: &mut Vec<Destination>,
) {
    // `NAME_path` keys (the seed's `csvs_path`, `results_path`) are the
    // user's: each names the place of the source of that name.
    let path_keys: Vec<String> = match &node.value {
        Value::Map(entries) => entries
            .iter()
            .filter(|(k, _)| k.name.ends_with("_path") && k.name != "base_path")
            .map(|(k, _)| k.name.clone())
            .collect(),
        _ => Vec::new(),
    };
    let mut known = vec![
        "enabled",
        "base_path",
        "remote",
        "folder",
        "use_compression",
    ];
    known.extend(path_keys.iter().map(String::as_str));
    let Some(f) = v.fields(node, key, &known) else {
        return;
    };
    if !sources.is_empty() {
        for k in &path_keys {
            let name = k.trim_end_matches("_path");
            if !sources.iter().any(|s| s.name() == name)
                && let Some(n) = f.get(k)
            {
                v.problem(
                    n.at,
                    &f.key(k),
                    format!("no source named {name:?}: add `{name}: PATH` to `backups.sources`"),
                );
            }
        }
    }
    let enabled = v.boolean(&f, "enabled", true);
    let compress = v.boolean(&f, "use_compression", compress_all);
    let base = match (v.string(&f, "base_path"), v.string(&f, "remote")) {
        (Some(b), None) => Some(local_or_url(v, &b)),
        (None, Some(remote)) => {
            let folder = v.string(&f, "folder").unwrap_or_default();
            Some(format!("rclone:{remote}:{folder}"))
        }
        (Some(_), Some(_)) => {
            v.problem(
                f.at,
                key,
                "give `base_path:` or `remote:` + `folder:`, not both",
            );
            return;
        }
        (None, None) => None,
    };
    let make = |v: &mut Validator, dname: String, location: String, only: Vec<String>, flat| {
        // With the backend's own check of the location given no options
        // (an `smb://` path without a user).
        if let Err(e) = v.registry_check_bare(&location, !compress) {
            v.problem(f.at, key, e);
        }
        seed000_kind(dname, enabled, location, compress, only, flat)
    };
    let mut rest = Vec::new();
    for s in sources {
        match v.string(&f, &format!("{}_path", s.name())) {
            Some(p) => {
                let location = local_or_url(v, &p);
                let d = make(
                    v,
                    format!("{name}.{}", s.name()),
                    location,
                    vec![s.name().to_owned()],
                    true,
                );
                out.push(d);
            }
            None => rest.push(s.name().to_owned()),
        }
    }
    if rest.is_empty() {
        return;
    }
    match base {
        Some(location) => {
            let only = if rest.len() == sources.len() {
                Vec::new()
            } else {
                rest
            };
            let d = make(v, name.to_owned(), location, only, false);
            out.push(d);
        }
        None => v.problem(
            f.at,
            key,
            format!(
                "no place for the source(s) {}: add `base_path:` (or `remote:` and `folder:`), \
                 or a `NAME_path:` for each",
                rest.join(", ")
            ),
        ),
    }
}

/// A seed 000 destination: compressed ones keep gzip snapshots (created
/// on the first run, as the script created its folders), the others are
/// mirrors updated as `rsync --update` did.
fn seed000_kind(
    name: String,
    enabled: bool,
    location: String,
    compress: bool,
    sources: Vec<String>,
    flat: bool,
) -> Destination {
    Destination {
        name,
        enabled,
        location,
        kind: if compress {
            Kind::Snapshots(SnapshotSettings {
                compression: Compression::Gzip,
                level: None,
                init: true,
                retention: KeepPolicy::default(),
            })
        } else {
            Kind::Mirror(MirrorSettings {
                update: true,
                ..MirrorSettings::default()
            })
        },
        sources,
        flat,
        options: BTreeMap::new(),
    }
}

/// A seed's path: local ones made absolute, URLs as they are.
fn local_or_url(v: &Validator, given: &str) -> String {
    if given.contains("://") || given.starts_with("rclone:") {
        given.to_owned()
    } else {
        v.path(given).display().to_string()
    }
}

/// Seed 002's `backup:` section: jobs `database`, `files` and `full` (as
/// the script's commands), each into the local `root_dir` repository and,
/// with `cloud.enabled`, the cloud one, with the section's retention.
///
/// The database is `backup.database:` (backupkit's addition), or the
/// seed's `.env` variables (`DB_TYPE`, `DB_HOST`, `DB_PORT`, `DB_NAME`,
/// `DB_USER`, `DB_PASSWORD`); file trees are `backup.files:`.
pub(crate) fn seed002(v: &mut Validator, path: &Path, root: &Node) -> Option<Config> {
    let (at, node) = section(v, root, "backup")?;
    let f = v.fields(
        node,
        "backup",
        &[
            "root_dir",
            "retention",
            "compression",
            "cloud",
            "notifications",
            "database",
            "files",
            "log_file",
        ],
    )?;
    let root_dir = v
        .string(&f, "root_dir")
        .unwrap_or_else(|| "data/backups".into());
    let root_dir = v.path(&root_dir).display().to_string();
    let log_file = v.string(&f, "log_file").map(|p| v.path(&p));
    let compression = match f.get("compression") {
        Some(n) => match n.value {
            Value::Bool(false) => Compression::None,
            Value::Bool(true) => Compression::Gzip,
            ref other => {
                v.problem(
                    n.at,
                    "backup.compression",
                    format!("expected true or false, found {}", other.kind()),
                );
                Compression::Gzip
            }
        },
        None => Compression::Gzip,
    };
    let mut retention = KeepPolicy::default();
    if let Some(n) = f.get("retention")
        && let Some(r) = v.fields(n, "backup.retention", &["daily", "weekly", "monthly"])
    {
        retention.daily = v.count(&r, "daily").unwrap_or(0);
        retention.weekly = v.count(&r, "weekly").unwrap_or(0);
        retention.monthly = v.count(&r, "monthly").unwrap_or(0);
    }
    let snapshots = || {
        Kind::Snapshots(SnapshotSettings {
            compression,
            level: None,
            init: true,
            retention: retention.clone(),
        })
    };
    let mut destinations = vec![Destination {
        name: "local".into(),
        enabled: true,
        location: root_dir,
        kind: snapshots(),
        sources: Vec::new(),
        flat: false,
        options: BTreeMap::new(),
    }];
    if let Some(n) = f.get("cloud")
        && let Some(d) = seed002_cloud(v, n, snapshots())
    {
        destinations.push(d);
    }
    let notify = f
        .get("notifications")
        .and_then(|n| seed002_notifications(v, n));
    let (database, files) = seed002_sources(v, &f, at);
    let jobs = seed002_jobs(database, files, &destinations, notify.as_ref());
    Some(Config {
        file: path.to_path_buf(),
        log_file,
        parallel: DEFAULT_PARALLEL,
        jobs,
        sessions: Vec::new(),
        dialect: "seed 002 `backup:`",
        http: crate::jobs::model::HttpSettings::default(),
    })
}

/// Seed 002's jobs: `database`, `files`, and `full` (both), and the tasks
/// `cleanup` and `verify`, each with the seed's crontab time.
fn seed002_jobs(
    database: Option<Source>,
    files: Vec<Source>,
    destinations: &[Destination],
    notify: Option<&Notify>,
) -> Vec<Job> {
    let job = |name: &str, sources: Vec<Source>| Job {
        name: name.into(),
        enabled: true,
        sources,
        excludes: Vec::new(),
        exclude_files: Vec::new(),
        tags: vec![name.into()],
        destinations: destinations.to_vec(),
        hooks: Hooks::default(),
        notify: notify.cloned(),
        schedule: seed002_schedule(name),
        catch_up: false,
        pull: None,
        task: None,
    };
    let mut jobs = Vec::new();
    if let Some(db) = &database {
        jobs.push(job("database", vec![db.clone()]));
    }
    if !files.is_empty() {
        jobs.push(job("files", files.clone()));
    }
    if database.is_some() && !files.is_empty() {
        let mut all = files;
        all.extend(database);
        jobs.push(job("full", all));
    }
    if !jobs.is_empty() {
        // The seed's weekly `backup_manager.py cleanup` and daily
        // `verify_recent_backups.py`: retention of every job, and a check
        // of the repositories reading a tenth of the snapshots' data.
        for (name, kind) in [
            ("cleanup", TaskKind::Cleanup),
            (
                "verify",
                TaskKind::Check {
                    read_data: false,
                    read_data_subset: Some("10%".into()),
                },
            ),
        ] {
            jobs.push(Job {
                tags: Vec::new(),
                destinations: Vec::new(),
                task: Some(Task {
                    kind,
                    jobs: Vec::new(),
                    at: Pos::default(),
                }),
                ..job(name, Vec::new())
            });
        }
    }
    jobs
}

/// Seed 002's crontab (its documentation's production table): the
/// database daily at 02:00, files on Sundays at 03:00, a full backup on
/// the first of the month at 04:00, cleanup on Sundays at 05:00, the
/// verification daily at 06:00; `serve` runs them so.
fn seed002_schedule(job: &str) -> Option<crate::schedule::Schedule> {
    let expr = match job {
        "database" => "0 2 * * *",
        "files" => "0 3 * * 0",
        "full" => "0 4 1 * *",
        "cleanup" => "0 5 * * 0",
        "verify" => "0 6 * * *",
        _ => return None,
    };
    crate::schedule::Cron::parse(expr)
        .ok()
        .map(crate::schedule::Schedule::Cron)
}

/// Seed 002's sources: `backup.database` (or its `.env` variables) and
/// `backup.files`.
fn seed002_sources(v: &mut Validator, f: &Fields, at: Pos) -> (Option<Source>, Vec<Source>) {
    let database = match f.get("database") {
        Some(n) => match &n.value {
            Value::Str(url) => {
                v.database(url, None, Some("database".into()), n.at, "backup.database")
            }
            other => {
                v.problem(
                    n.at,
                    "backup.database",
                    format!("expected a database URL or path, found {}", other.kind()),
                );
                None
            }
        },
        None => database_from_env(v, f.at),
    };
    let mut files = Vec::new();
    for (i, p) in v.strings(f, "files").iter().enumerate() {
        let full = v.path(p);
        let at = f.get("files").map_or(f.at, |n| n.at);
        if !full.exists() {
            v.problem(
                at,
                &format!("backup.files[{i}]"),
                format!("the source {} does not exist", full.display()),
            );
            continue;
        }
        let name = full
            .file_name()
            .map_or_else(|| format!("files{i}"), |n| n.to_string_lossy().into_owned());
        files.push(Source::Files { path: full, name });
    }
    if database.is_none()
        && files.is_empty()
        && !v
            .problems
            .iter()
            .any(|p| p.key.starts_with("backup.database") || p.key.starts_with("backup.files"))
    {
        v.problem(
            at,
            "backup",
            "seed 002's `backup:` section names nothing to back up: add `database: \
             postgres://USER@HOST/NAME` (or set DB_TYPE, DB_HOST, DB_PORT, DB_NAME, DB_USER and \
             DB_PASSWORD as the seed's .env does) and/or `files: [PATH, ...]` under `backup:`",
        );
    }
    (database, files)
}

fn seed002_cloud(v: &mut Validator, node: &Node, kind: Kind) -> Option<Destination> {
    let f = v.fields(
        node,
        "backup.cloud",
        &["enabled", "provider", "s3", "azure", "gcs"],
    )?;
    if !v.boolean(&f, "enabled", false) {
        return None;
    }
    let Some(provider) = v.string(&f, "provider") else {
        v.problem(
            f.at,
            "backup.cloud",
            "`enabled: true` needs `provider: s3`, `azure` or `gcs`",
        );
        return None;
    };
    let (scheme, bucket_key, extra): (&str, &str, &[&str]) = match provider.as_str() {
        "s3" => ("s3", "bucket", &["region"]),
        "azure" => ("az", "container", &[]),
        "gcs" => ("gs", "bucket", &["project_id"]),
        other => {
            let at = f.get("provider").map_or(f.at, |n| n.at);
            v.problem(
                at,
                "backup.cloud.provider",
                format!("unknown provider {other:?} (expected s3, azure or gcs)"),
            );
            return None;
        }
    };
    let key = format!("backup.cloud.{provider}");
    let Some(pn) = f.get(&provider) else {
        v.problem(
            f.at,
            "backup.cloud",
            format!("`provider: {provider}` needs a `{provider}:` section with `{bucket_key}:`"),
        );
        return None;
    };
    let mut known = vec![bucket_key, "prefix"];
    known.extend(extra);
    let p = v.fields(pn, &key, &known)?;
    let Some(bucket) = v.string(&p, bucket_key) else {
        v.problem(p.at, &key, format!("needs `{bucket_key}:`"));
        return None;
    };
    let prefix = v.string(&p, "prefix").unwrap_or_default();
    let location = format!("{scheme}://{bucket}/{}", prefix.trim_matches('/'));
    let location = location.trim_end_matches('/').to_owned();
    let mut options = BTreeMap::new();
    if let Some(region) = v.string(&p, "region") {
        options.insert("region".into(), OptionValue::Plain(region));
    }
    // project_id is the seed's; object stores take the project from the
    // credentials, so it is accepted and not needed.
    let _ = v.string(&p, "project_id");
    if let Err(e) = v.registry_check(&location, false) {
        v.problem(p.at, &key, e);
    }
    Some(Destination {
        name: "cloud".into(),
        enabled: true,
        location,
        kind,
        sources: Vec::new(),
        flat: false,
        options,
    })
}

/// Seed 002's `notifications:`: its email, sent after every run (the
/// seed mails each result) while `enabled: true`.
fn seed002_notifications(v: &mut Validator, node: &Node) -> Option<Notify> {
    let f = v.fields(
        node,
        "backup.notifications",
        &["enabled", "email", "on", "webhook", "ping"],
    )?;
    let enabled = v.boolean(&f, "enabled", false);
    let email = f
        .get("email")
        .and_then(|e| v.email(e, "backup.notifications.email"));
    let rest = v.notify(
        &Node {
            value: Value::Map(
                f.entries
                    .iter()
                    .filter(|(k, _)| ["on", "webhook", "ping"].contains(&k.name.as_str()))
                    .cloned()
                    .collect(),
            ),
            at: f.at,
        },
        "backup.notifications",
    )?;
    let on = if f.get("on").is_some() {
        rest.on
    } else {
        When::Always
    };
    enabled.then_some(Notify { on, email, ..rest })
}

/// Seed 002's database from its `.env` variables, if `DB_TYPE` is set.
fn database_from_env(v: &mut Validator, at: Pos) -> Option<Source> {
    let var = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
    let kind = var("DB_TYPE")?;
    let url = match kind.as_str() {
        "sqlite" => format!(
            "sqlite://{}",
            v.path(&var("DB_PATH").or_else(|| var("DB_NAME"))?)
                .display()
        ),
        "postgresql" | "postgres" | "mysql" | "mariadb" => {
            let scheme = if kind.starts_with("postgres") {
                "postgres"
            } else {
                "mysql"
            };
            let port = var("DB_PORT").map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{scheme}://{}@{}{port}/{}",
                var("DB_USER").unwrap_or_default(),
                var("DB_HOST").unwrap_or_else(|| "localhost".into()),
                var("DB_NAME").unwrap_or_default()
            )
        }
        other => {
            v.problem(
                at,
                "backup",
                format!("DB_TYPE={other:?} is not a database backupkit knows (postgresql, mysql, sqlite)"),
            );
            return None;
        }
    };
    let password = var("DB_PASSWORD").map(|_| Secret::Env("DB_PASSWORD".into()));
    v.database(&url, password, Some("database".into()), at, "backup")
}

/// Whether a `backup:` section is seed 003's (a `source:` with a
/// `path_structure`, or a list of destinations) rather than seed 002's.
pub(crate) fn is_seed003(root: &Node) -> bool {
    let Value::Map(entries) = &root.value else {
        return false;
    };
    let Some((_, backup)) = entries.iter().find(|(k, _)| k.name == "backup") else {
        return false;
    };
    let Value::Map(fields) = &backup.value else {
        return false;
    };
    fields.iter().any(|(k, n)| {
        k.name == "source" || (k.name == "destinations" && matches!(n.value, Value::List(_)))
    })
}

/// Seed 003's `backup:` section (the recording sync and safe-delete
/// manager): one session set, `recordings`, from `source.base_path` with
/// its `path_structure`, to each enabled destination's `base_path` with
/// its own (`mount_point` checked when `verify_mount` is not false). The
/// seed's `rsync.flags` and `verification` settings are accepted: backupkit
/// always verifies after a sync. Its import check lived outside the
/// config; backupkit reads an `imported:` key here (see `sessions:`).
pub(crate) fn seed003(v: &mut Validator, path: &Path, root: &Node) -> Option<Config> {
    let (at, node) = section(v, root, "backup")?;
    let f = v.fields(
        node,
        "backup",
        &[
            "destinations",
            "source",
            "filters",
            "rsync",
            "verification",
            "imported",
            "log_file",
        ],
    )?;
    let log_file = v.string(&f, "log_file").map(|p| v.path(&p));
    let Some(src) = f.get("source") else {
        v.problem(
            at,
            "backup",
            "seed 003's section needs `source:` with `base_path` and `path_structure`",
        );
        return None;
    };
    let source = v.fields(src, "backup.source", &["base_path", "path_structure"])?;
    let base = v.string(&source, "base_path").map(|given| v.path(&given));
    match (&base, source.get("base_path")) {
        (None, None) => v.problem(
            source.at,
            "backup.source",
            "needs `base_path:` (where sessions are recorded)",
        ),
        (Some(dir), Some(node)) if !dir.is_dir() => v.problem(
            node.at,
            "backup.source.base_path",
            format!("{} is not a directory", dir.display()),
        ),
        _ => {}
    }
    let layout = v.template(&source, "path_structure", "backup.source");
    let (filter, excludes) = match f.get("filters") {
        Some(filters) => v.session_filters(filters, "backup.filters"),
        None => (crate::sessions::layout::Filter::default(), Vec::new()),
    };
    for (key, known) in [
        ("rsync", &["flags"][..]),
        ("verification", &["verify_after_sync", "verify_method"][..]),
    ] {
        if let Some(section) = f.get(key) {
            let _ = v.fields(section, &join("backup", key), known);
        }
    }
    let imported = f
        .get("imported")
        .and_then(|check| v.import_check(check, "backup.imported"));
    let mut destinations = Vec::new();
    match f.get("destinations").map(|node| &node.value) {
        Some(Value::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                let key = format!("backup.destinations[{i}]");
                if let Some(dest) = seed003_destination(v, item, &key, layout.as_ref()) {
                    destinations.push(dest);
                }
            }
        }
        _ => v.problem(
            at,
            "backup",
            "seed 003's section needs `destinations:`, a list",
        ),
    }
    let set = crate::sessions::config::SessionSet {
        name: "recordings".into(),
        source: base?,
        layout: layout?,
        filter,
        excludes,
        videos: "*.mp4".into(),
        destinations,
        imported,
    };
    Some(Config {
        file: path.to_path_buf(),
        log_file,
        parallel: DEFAULT_PARALLEL,
        jobs: Vec::new(),
        sessions: vec![set],
        dialect: "seed 003 `backup:`",
        http: crate::jobs::model::HttpSettings::default(),
    })
}

fn seed003_destination(
    v: &mut Validator,
    node: &Node,
    key: &str,
    source: Option<&crate::sessions::layout::Template>,
) -> Option<crate::sessions::config::SessionDestination> {
    let f = v.fields(
        node,
        key,
        &[
            "name",
            "mount_point",
            "base_path",
            "path_structure",
            "enabled",
            "verify_mount",
        ],
    )?;
    let name = v.string(&f, "name").unwrap_or_else(|| key.to_owned());
    let slug: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let enabled = v.boolean(&f, "enabled", true);
    let verify_mount = v.boolean(&f, "verify_mount", true);
    let base = v
        .string(&f, "base_path")
        .map(|given| local_or_url(v, &given));
    if base.is_none() && f.get("base_path").is_none() {
        v.problem(f.at, key, "needs `base_path:` (where sessions are synced)");
    }
    let dest = v.template(&f, "path_structure", key);
    let layout = match (source, dest) {
        (Some(from), Some(to)) => match crate::sessions::layout::Layout::new(from.clone(), to) {
            Ok(layout) => Some(layout),
            Err(e) => {
                let at = f.get("path_structure").map_or(f.at, |node| node.at);
                v.problem(
                    at,
                    &join(key, "path_structure"),
                    crate::jobs::model::plain(&e),
                );
                None
            }
        },
        _ => None,
    };
    let mut options = BTreeMap::new();
    if let Some(mount) = v.string(&f, "mount_point")
        && verify_mount
    {
        options.insert(
            "mount_point".into(),
            OptionValue::Plain(v.path(&mount).display().to_string()),
        );
    }
    Some(crate::sessions::config::SessionDestination {
        name: if slug.is_empty() {
            "destination".into()
        } else {
            slug
        },
        enabled,
        location: base?,
        layout: layout?,
        options,
    })
}
