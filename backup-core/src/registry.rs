//! The registry: how a frontend composes backupkit from its crates.
//!
//! Backend crates register URL schemes, archive formats and hashers; the CLI,
//! the Python module and embedders each build one registry in a line and
//! then share every engine through [`crate::Repository`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::archive::{ArchiveFormat, Compression, StreamCodec};
use crate::database::{DatabaseSource, DatabaseTarget};
use crate::hash::Hashers;
use crate::target::Target;
use crate::{Error, Result};

/// Options for opening a target: endpoints, regions, credentials, an ssh
/// config. Keys are the backend's own (`endpoint`, `region`, ...); values
/// may be secrets and are never logged.
pub type TargetOptions = BTreeMap<String, String>;

/// Opens a target from the location string (scheme included) and options.
pub type TargetFactory = Arc<dyn Fn(&str, &TargetOptions) -> Result<Arc<dyn Target>> + Send + Sync>;
/// Opens a mirror tree from the location string and options.
pub type TreeFactory =
    Arc<dyn Fn(&str, &TargetOptions) -> Result<Arc<dyn crate::tree::Tree>> + Send + Sync>;
/// Checks a location's options without opening it or touching the
/// network (`true`: as a mirror tree): what a config check reports.
pub type OptionCheck = Arc<dyn Fn(&str, &TargetOptions, bool) -> Result<()> + Send + Sync>;
/// Makes an archive format for a compression and level.
pub type FormatFactory =
    Arc<dyn Fn(Compression, Option<i32>) -> Result<Box<dyn ArchiveFormat>> + Send + Sync>;

/// Makes a stream codec for a compression and level.
pub type CodecFactory =
    Arc<dyn Fn(Compression, Option<i32>) -> Result<Box<dyn StreamCodec>> + Send + Sync>;

/// Opens a database source from its URL.
pub type DatabaseSourceFactory = Arc<dyn Fn(&str) -> Result<Arc<dyn DatabaseSource>> + Send + Sync>;
/// Opens a database restore target from its URL (or path).
pub type DatabaseTargetFactory = Arc<dyn Fn(&str) -> Result<Arc<dyn DatabaseTarget>> + Send + Sync>;

/// Database engines backupkit knows, with the cargo feature of each.
const KNOWN_DATABASES: &[(&str, &str)] = &[
    ("sqlite", "sqlite"),
    ("postgres", "postgres"),
    ("postgresql", "postgres"),
    ("mysql", "mysql"),
    ("mariadb", "mysql"),
];

/// Schemes backupkit knows, with the cargo feature that provides each, so a
/// build without it can say which feature is missing.
const KNOWN_SCHEMES: &[(&str, &str)] = &[
    ("s3", "s3"),
    ("az", "azure"),
    ("azure", "azure"),
    ("gs", "gcs"),
    ("sftp", "sftp"),
    ("ssh", "sftp"),
    ("rclone", "rclone"),
    ("smb", "smb"),
];

/// Scheme name of plain local paths.
pub const LOCAL_SCHEME: &str = "file";

/// Schemes, formats and hashers available to the engines.
#[derive(Default, Clone)]
pub struct Registry {
    schemes: BTreeMap<String, TargetFactory>,
    trees: BTreeMap<String, TreeFactory>,
    formats: Option<FormatFactory>,
    codecs: Option<CodecFactory>,
    hashers: Option<Arc<dyn Hashers>>,
    chunks: Option<Arc<dyn crate::dedup::ChunkCodec>>,
    sender: Option<Arc<dyn crate::jobs::notify::Sender>>,
    checks: BTreeMap<String, OptionCheck>,
    databases: BTreeMap<String, (DatabaseSourceFactory, DatabaseTargetFactory)>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("schemes", &self.schemes.keys().collect::<Vec<_>>())
            .field("trees", &self.trees.keys().collect::<Vec<_>>())
            .field("formats", &self.formats.is_some())
            .field("codecs", &self.codecs.is_some())
            .field("hashers", &self.hashers)
            .field("chunks", &self.chunks)
            .field("databases", &self.databases.keys().collect::<Vec<_>>())
            .field("sender", &self.sender)
            .field("checks", &self.checks.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a target scheme (`file`, `s3`, ...). A later registration of
    /// the same scheme replaces the earlier one, so embedders can override.
    pub fn register_scheme(
        &mut self,
        scheme: &str,
        factory: impl Fn(&str, &TargetOptions) -> Result<Arc<dyn Target>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.schemes.insert(scheme.to_owned(), Arc::new(factory));
        self
    }

    /// Registers a mirror tree scheme; as [`Registry::register_scheme`].
    pub fn register_tree(
        &mut self,
        scheme: &str,
        factory: impl Fn(&str, &TargetOptions) -> Result<Arc<dyn crate::tree::Tree>>
        + Send
        + Sync
        + 'static,
    ) -> &mut Self {
        self.trees.insert(scheme.to_owned(), Arc::new(factory));
        self
    }

    /// Opens the mirror tree a location names, with backend options.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a scheme this build has no trees for.
    pub fn open_tree(
        &self,
        location: &str,
        options: &TargetOptions,
    ) -> Result<Arc<dyn crate::tree::Tree>> {
        if let Some(f) = self.trees.get(Self::scheme_of(location)) {
            return f(location, options);
        }
        Err(self.unavailable(location, true))
    }

    /// Registers how a scheme's options are checked without opening a
    /// location (see [`OptionCheck`]).
    pub fn register_option_check(
        &mut self,
        scheme: &str,
        check: impl Fn(&str, &TargetOptions, bool) -> Result<()> + Send + Sync + 'static,
    ) -> &mut Self {
        self.checks.insert(scheme.to_owned(), Arc::new(check));
        self
    }

    /// Checks `options` for `location` (as a tree or a repository) without
    /// opening it: unknown keys, bad values, missing credentials. A scheme
    /// without a registered check passes; opening it checks them then.
    ///
    /// # Errors
    ///
    /// The error opening the location with these options would give.
    pub fn check_options(&self, location: &str, options: &TargetOptions, tree: bool) -> Result<()> {
        match self.checks.get(Self::scheme_of(location)) {
            Some(check) => check(location, options, tree),
            None => Ok(()),
        }
    }

    /// Whether this build can open `location`, as a mirror tree (`tree`) or
    /// as a repository, without opening it: for validating a config.
    ///
    /// # Errors
    ///
    /// The error opening it would give for its scheme.
    pub fn check_location(&self, location: &str, tree: bool) -> Result<()> {
        let scheme = Self::scheme_of(location);
        let known = if tree {
            self.trees.contains_key(scheme)
        } else {
            self.schemes.contains_key(scheme)
        };
        if known {
            Ok(())
        } else {
            Err(self.unavailable(location, tree))
        }
    }

    /// Why `location` cannot be opened (as a tree or a repository).
    fn unavailable(&self, location: &str, tree: bool) -> Error {
        let scheme = Self::scheme_of(location);
        let what = if tree { "locations" } else { "repositories" };
        match KNOWN_SCHEMES.iter().find(|(s, _)| *s == scheme) {
            Some((_, feature)) if !self.schemes.contains_key(scheme) => Error::Unsupported(
                format!("{scheme}:// {what}: this backupkit was built without feature `{feature}`"),
            ),
            Some(_) => Error::Unsupported(format!(
                "mirrors to and from {scheme}:// locations are not available yet (snapshot \
                 repositories are)"
            )),
            None => Error::Unsupported(format!(
                "unknown {} scheme {scheme:?} (expected a local path{})",
                if tree { "location" } else { "repository" },
                if tree {
                    ", sftp://, ssh://, s3://, az://, gs://, smb:// or rclone:"
                } else {
                    ", sftp://, s3://, az://, gs://, smb:// or rclone:"
                }
            )),
        }
    }

    pub fn set_formats(
        &mut self,
        factory: impl Fn(Compression, Option<i32>) -> Result<Box<dyn ArchiveFormat>>
        + Send
        + Sync
        + 'static,
    ) -> &mut Self {
        self.formats = Some(Arc::new(factory));
        self
    }

    /// Registers a database engine under its URL scheme (`sqlite`, ...).
    pub fn register_database(
        &mut self,
        scheme: &str,
        source: impl Fn(&str) -> Result<Arc<dyn DatabaseSource>> + Send + Sync + 'static,
        target: impl Fn(&str) -> Result<Arc<dyn DatabaseTarget>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.databases
            .insert(scheme.to_owned(), (Arc::new(source), Arc::new(target)));
        self
    }

    fn database_factories(
        &self,
        url: &str,
    ) -> Result<&(DatabaseSourceFactory, DatabaseTargetFactory)> {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if let Some(f) = self.databases.get(scheme) {
            return Ok(f);
        }
        match KNOWN_DATABASES.iter().find(|(s, _)| *s == scheme) {
            Some((_, feature)) => Err(Error::Unsupported(format!(
                "{scheme} databases: this backupkit was built without feature `{feature}`"
            ))),
            None => Err(Error::InvalidInput(format!(
                "not a database URL: {:?} (expected sqlite:///path/to/file.db, postgres://... or mysql://...)",
                redact(url)
            ))),
        }
    }

    /// Whether this build has the engine a database URL names, without
    /// opening it.
    ///
    /// # Errors
    ///
    /// As [`Registry::database_source`] for an engine it lacks.
    pub fn database_source_available(&self, url: &str) -> Result<()> {
        self.database_factories(url).map(|_| ())
    }

    /// Opens the database a URL names, to dump it.
    pub fn database_source(&self, url: &str) -> Result<Arc<dyn DatabaseSource>> {
        (self.database_factories(url)?.0)(url)
    }

    /// Opens the database a URL names, to restore into it.
    pub fn database_target(&self, url: &str) -> Result<Arc<dyn DatabaseTarget>> {
        (self.database_factories(url)?.1)(url)
    }

    pub fn set_codecs(
        &mut self,
        factory: impl Fn(Compression, Option<i32>) -> Result<Box<dyn StreamCodec>>
        + Send
        + Sync
        + 'static,
    ) -> &mut Self {
        self.codecs = Some(Arc::new(factory));
        self
    }

    pub fn codec(
        &self,
        compression: Compression,
        level: Option<i32>,
    ) -> Result<Box<dyn StreamCodec>> {
        let f = self
            .codecs
            .as_ref()
            .ok_or_else(|| Error::Unsupported("no stream codecs registered".into()))?;
        f(compression, level)
    }

    /// Sets what delivers notifications (email, webhooks, pings).
    pub fn set_sender(&mut self, sender: Arc<dyn crate::jobs::notify::Sender>) -> &mut Self {
        self.sender = Some(sender);
        self
    }

    /// What delivers notifications.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a build without one.
    pub fn sender(&self) -> Result<Arc<dyn crate::jobs::notify::Sender>> {
        self.sender.clone().ok_or_else(|| {
            Error::Unsupported(
                "this backupkit was built without notifications (feature `notify`)".into(),
            )
        })
    }

    pub fn set_hashers(&mut self, hashers: Arc<dyn Hashers>) -> &mut Self {
        self.hashers = Some(hashers);
        self
    }

    /// The scheme of a location: `s3://b/p` is `s3`, `rclone:remote:path`
    /// is `rclone`, anything else is a local path (`file`).
    pub fn scheme_of(location: &str) -> &str {
        if let Some((scheme, _)) = location.split_once("://")
            && !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
        {
            return scheme;
        }
        if location.starts_with("rclone:") {
            return "rclone";
        }
        LOCAL_SCHEME
    }

    /// Opens the target a location names.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] naming the missing cargo feature for a known
    /// scheme this build lacks, or the unknown scheme.
    pub fn open_target(&self, location: &str) -> Result<Arc<dyn Target>> {
        self.open_target_with(location, &TargetOptions::new())
    }

    /// Opens the target a location names, with backend options.
    ///
    /// # Errors
    ///
    /// As [`Registry::open_target`]; also [`Error::InvalidInput`] for an
    /// option the backend does not know.
    pub fn open_target_with(
        &self,
        location: &str,
        options: &TargetOptions,
    ) -> Result<Arc<dyn Target>> {
        if let Some(f) = self.schemes.get(Self::scheme_of(location)) {
            return f(location, options);
        }
        Err(self.unavailable(location, false))
    }

    pub fn format(
        &self,
        compression: Compression,
        level: Option<i32>,
    ) -> Result<Box<dyn ArchiveFormat>> {
        let f = self
            .formats
            .as_ref()
            .ok_or_else(|| Error::Unsupported("no archive formats registered".into()))?;
        f(compression, level)
    }

    /// Sets the chunk codec of deduplicated repositories.
    pub fn set_chunk_codec(&mut self, codec: Arc<dyn crate::dedup::ChunkCodec>) -> &mut Self {
        self.chunks = Some(codec);
        self
    }

    /// The chunk codec of deduplicated repositories.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a registry without one.
    pub fn chunk_codec(&self) -> Result<Arc<dyn crate::dedup::ChunkCodec>> {
        self.chunks
            .clone()
            .ok_or_else(|| Error::Unsupported("no chunk codec registered".into()))
    }

    pub fn hashers(&self) -> Result<Arc<dyn Hashers>> {
        self.hashers
            .clone()
            .ok_or_else(|| Error::Unsupported("no hashers registered".into()))
    }
}

/// A database given as users give it: a URL (`postgres://...`,
/// `sqlite:///abs/file.db`), or a plain path, which names an SQLite file
/// (seed 001's `--db-path outputs/results.db`).
pub fn database_url(given: &str) -> Result<String> {
    if given.contains("://") {
        return Ok(given.to_owned());
    }
    let abs = std::path::absolute(given).map_err(|e| Error::io("resolve", given, e))?;
    let abs = abs.to_str().ok_or_else(|| {
        Error::InvalidInput(format!("database path {given:?} is not valid UTF-8"))
    })?;
    Ok(format!("sqlite://{abs}"))
}

/// A URL with any password replaced by `***`, for messages: the one in
/// `user:password@` (up to the last `@`, since an unescaped password may hold
/// `@` or `/`) and the values of query parameters that name one
/// (`?password=`, `sslpassword=`, `token=`, `secret=`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let rest = match rest.rsplit_once('@') {
        // `user:...@host`: the user is what comes before the first `:`, and
        // holds no `/` (`/path:x@y` is a path, not a user).
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) if !user.contains('/') => format!("{user}:***@{host}"),
            _ => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    let out = format!("{scheme}://{rest}");
    let Some((base, query)) = out.split_once('?') else {
        return out;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_param(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// Whether a URL query parameter carries a secret.
fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::{Registry, database_url, redact};
    use crate::testgen::Gen;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://lab:s3cret@db:5432/results"),
            "postgres://lab:***@db:5432/results"
        );
        assert_eq!(
            redact("postgres://lab@db/results"),
            "postgres://lab@db/results"
        );
        assert_eq!(redact("sqlite:///data/a@b.db"), "sqlite:///data/a@b.db");
        assert_eq!(redact("/plain/path"), "/plain/path");
    }

    #[test]
    fn passwords_with_at_signs_slashes_or_in_the_query_are_redacted() {
        for (url, want) in [
            (
                "postgres://lab:p@ss@db/results",
                "postgres://lab:***@db/results",
            ),
            (
                "postgres://lab:pa/ss@db/results",
                "postgres://lab:***@db/results",
            ),
            ("mysql://u:@db/x", "mysql://u:***@db/x"),
            (
                "postgres://db/results?user=lab&password=s3cret&sslmode=require",
                "postgres://db/results?user=lab&password=***&sslmode=require",
            ),
            (
                "postgres://db/r?sslpassword=s3cret",
                "postgres://db/r?sslpassword=***",
            ),
            ("sqlite:///data/x:y/a@b.db", "sqlite:///data/x:y/a@b.db"),
        ] {
            assert_eq!(redact(url), want, "{url}");
            assert!(!redact(url).contains("s3cret") && !redact(url).contains("ss@"));
        }
    }

    const PIECES: &[&str] = &[
        "", ":", "/", "//", "://", "@", "[", "]", "%", "%zz", "?", "#", " ", "\t", "\n", "=", "&",
        "a", "0", "-", "+", ".", "..", "é", "😀", "\u{0}", "\u{202e}", "s3", "sftp", "rclone:",
        "file", "sqlite", "postgres", "http", "user", "host", "password", "token",
    ];

    /// Generated locations and database URLs: nothing panics, and every
    /// location gets a scheme.
    #[test]
    fn location_and_database_url_parsing_never_panics() {
        let mut g = Gen::new(1);
        let registry = Registry::new();
        for _ in 0..20_000 {
            let location = g.string_of(8, PIECES);
            let scheme = Registry::scheme_of(&location);
            assert!(!scheme.is_empty());
            assert!(location.starts_with(scheme) || scheme == super::LOCAL_SCHEME);
            let _ = registry.open_target(&location);
            let _ = registry.database_source(&location);
            let _ = redact(&location);
            let _ = database_url(&location);
        }
    }

    /// Any password in `scheme://user:PASSWORD@...` stays out of the
    /// redacted form, whatever surrounds it.
    #[test]
    fn redaction_hides_every_generated_password() {
        let mut g = Gen::new(2);
        let no_secret: Vec<&str> = PIECES
            .iter()
            .copied()
            .filter(|p| !p.contains(['S', 'W', '/', ':']))
            .collect();
        for _ in 0..20_000 {
            let scheme = ["postgres", "mysql", "sftp", "s3", "x"][g.below(5)];
            let user = g.string_of(3, &no_secret).replace(['/', ':', 'S', 'W'], "");
            let password = format!("SW{}", g.string_of(4, &no_secret));
            let rest = g.string_of(6, &no_secret).replace(['S', 'W'], "");
            let url = format!("{scheme}://{user}:{password}@{rest}");
            let shown = redact(&url);
            assert!(!shown.contains(&password), "{url:?} -> {shown:?}");
            let url = format!("{scheme}://{rest}?a=1&password={password}&b=2");
            let shown = redact(&url);
            assert!(!shown.contains(&password), "{url:?} -> {shown:?}");
        }
    }
}
