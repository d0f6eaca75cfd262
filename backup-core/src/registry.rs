//! The registry: how a frontend composes backupkit from its crates.
//!
//! Backend crates register URL schemes, archive formats and hashers; the CLI,
//! the Python module and embedders each build one registry in a line and
//! then share every engine through [`crate::Repository`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::archive::{ArchiveFormat, Compression};
use crate::hash::Hashers;
use crate::target::Target;
use crate::{Error, Result};

/// Opens a target from the location string (scheme included).
pub type TargetFactory = Arc<dyn Fn(&str) -> Result<Arc<dyn Target>> + Send + Sync>;
/// Makes an archive format for a compression and level.
pub type FormatFactory =
    Arc<dyn Fn(Compression, Option<i32>) -> Result<Box<dyn ArchiveFormat>> + Send + Sync>;

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
];

/// Scheme name of plain local paths.
pub const LOCAL_SCHEME: &str = "file";

/// Schemes, formats and hashers available to the engines.
#[derive(Default, Clone)]
pub struct Registry {
    schemes: BTreeMap<String, TargetFactory>,
    formats: Option<FormatFactory>,
    hashers: Option<Arc<dyn Hashers>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("schemes", &self.schemes.keys().collect::<Vec<_>>())
            .field("formats", &self.formats.is_some())
            .field("hashers", &self.hashers)
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
        factory: impl Fn(&str) -> Result<Arc<dyn Target>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.schemes.insert(scheme.to_owned(), Arc::new(factory));
        self
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
        let scheme = Self::scheme_of(location);
        if let Some(f) = self.schemes.get(scheme) {
            return f(location);
        }
        match KNOWN_SCHEMES.iter().find(|(s, _)| *s == scheme) {
            Some((_, feature)) => Err(Error::Unsupported(format!(
                "{scheme}:// repositories: this backupkit was built without feature `{feature}`"
            ))),
            None => Err(Error::Unsupported(format!(
                "unknown repository scheme {scheme:?} (expected a local path)"
            ))),
        }
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

    pub fn hashers(&self) -> Result<Arc<dyn Hashers>> {
        self.hashers
            .clone()
            .ok_or_else(|| Error::Unsupported("no hashers registered".into()))
    }
}
