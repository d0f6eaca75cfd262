//! An object store (S3, Azure Blob, GCS) as a mirror [`Tree`]: a bucket or
//! container and a key prefix, whose keys below the prefix are the tree's
//! paths.
//!
//! Connections, options, the I/O runtime, error mapping, streaming uploads
//! and downloads are [`CloudTarget`]'s; this module maps the tree contract
//! onto them:
//!
//! - **Listing.** [`Tree::walk`] lists every object below the prefix once,
//!   sorts the keys into canonical order (stores list in byte order, where
//!   `a.txt` comes before `a/b`) and adds a directory entry for every
//!   directory the keys imply (`a/b/c` implies `a` and `a/b`), so the engine
//!   sees the shape of a local tree. Memory grows with the listing. Entries
//!   carry the `ETag` as their stamp and no mtime: a listing has none.
//! - **mtimes.** A file's mtime is kept as user metadata `mtime`, written
//!   the way rclone writes it, so that `rclone check` and `rclone sync`
//!   agree with backupkit about a mirror: on S3 Unix seconds with a fraction
//!   (`1700000000.123456789`, trailing zeros dropped); on Azure RFC 3339
//!   with nine fractional digits (`2023-11-14T22:13:20.123456789Z`); on GCS
//!   RFC 3339 with trailing zeros dropped, plus gsutil's
//!   `goog-reserved-file-mtime` (whole seconds). [`Tree::stat`] (a `HEAD`)
//!   reads either form under either key, and falls back to the store's own
//!   modification time.
//! - **Writes.** A file streams up in parts with bounded memory and becomes
//!   visible only when its upload completes, which is the atomic commit the
//!   contract asks for; a dropped writer aborts its upload. The commit
//!   reports the new `ETag` (the one later listings show), which the mirror
//!   record keeps: a file whose listed `ETag` is still the recorded one is
//!   as backupkit wrote it.
//! - **Directories** exist only through their keys: [`Tree::make_dir`] and
//!   [`Tree::set_dir_mtime`] do nothing, and removing one is a no-op. An
//!   object with a directory's name (`a` beside `a/b`; `object_store` lists
//!   the `a/` marker some tools write as `a`) is left out of the walk, with a
//!   warning when it holds data; the marker of an empty directory shows as
//!   an empty file. Symlinks cannot be stored.

use std::io::{self, Read, Write};
use std::time::Duration;

use backup_core::registry::TargetOptions;
use backup_core::target::check_key;
use backup_core::tree::{
    EntryKind, FileAttrs, FileWriter, Stored, Tree, TreeCaps, TreeEntry, Walked, cmp_paths,
};
use backup_core::{Error, Result, Target};
use futures_util::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{Attribute, Attributes, GetOptions, ObjectStoreExt};

use crate::cloud::{Cloud, CloudTarget, CloudWriter};

/// The metadata key of the mtime (rclone's, on every cloud).
const MTIME_KEY: &str = "mtime";
/// gsutil's mtime key on GCS (whole Unix seconds), which rclone also writes.
const GSUTIL_MTIME_KEY: &str = "goog-reserved-file-mtime";
const NANOS: i128 = 1_000_000_000;

/// A bucket (or container) and prefix holding a tree of files.
#[derive(Debug)]
pub struct CloudTree {
    target: CloudTarget,
    cloud: Cloud,
}

impl CloudTree {
    /// Opens `s3://bucket/prefix`, `az://container/prefix` or
    /// `gs://bucket/prefix`, with the options and environment
    /// [`CloudTarget::open`] takes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad location or option, or missing
    /// credentials; nothing is requested before the first operation.
    pub fn open(cloud: Cloud, location: &str, options: &TargetOptions) -> Result<Self> {
        Ok(Self {
            target: CloudTarget::open(cloud, location, options)?,
            cloud,
        })
    }

    /// The prefix as a listing path, `None` for the whole bucket.
    fn base(&self) -> Option<Path> {
        let prefix = self.target.prefix().trim_end_matches('/');
        // The prefix was checked when the target was opened.
        Path::parse(prefix).ok().filter(|p| !p.as_ref().is_empty())
    }

    /// Whether any object lies below `at` (the whole bucket for `None`).
    fn any_below(&self, at: Option<&Path>, key: &str) -> Result<bool> {
        let mut listed = self.target.store().list(at);
        match self.target.block_on(listed.next()) {
            // A missing bucket is an error, not an empty tree.
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(self.target.map_err("list", key, &e)),
        }
    }

    /// Every file below the prefix, sorted canonically, and warnings for
    /// keys that cannot be tree paths.
    fn listing(&self) -> Result<(Vec<TreeEntry>, Vec<Walked>)> {
        let base = self.base();
        let listed: Vec<object_store::ObjectMeta> = self
            .target
            .block_on(self.target.store().list(base.as_ref()).try_collect())
            .map_err(|e| self.target.map_err("list", "", &e))?;
        let mut files = Vec::with_capacity(listed.len());
        let mut warnings = Vec::new();
        for o in listed {
            let Some(rel) = self.target.key_of(&o.location) else {
                continue;
            };
            // `object_store` already refuses to list a key with an empty,
            // `.` or `..` segment or a control character (the whole listing
            // fails); this keeps the tree's own rule whatever it accepts.
            if check_key(&rel).is_err() {
                warnings.push(Walked::Warning {
                    path: rel,
                    message: "the object name is not a valid path of a tree; not mirrored".into(),
                });
                continue;
            }
            files.push(TreeEntry {
                stamp: o.e_tag.as_deref().map(normal_etag),
                ..TreeEntry::file(rel, o.size, None)
            });
        }
        files.sort_by(|a, b| cmp_paths(&a.path, &b.path));
        Ok((files, warnings))
    }
}

/// An `ETag` without quotes or a weak marker: listings and headers of one
/// store quote it differently (Azure lists `0x8D...`, answers `"0x8D..."`).
fn normal_etag(tag: &str) -> String {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.trim_matches('"').to_owned()
}

fn dir_entry(path: impl Into<String>) -> TreeEntry {
    TreeEntry {
        kind: EntryKind::Dir,
        ..TreeEntry::file(path, 0, None)
    }
}

/// `ns` as Unix seconds with the fraction's trailing zeros dropped, as
/// rclone writes S3's `mtime` (`1700000000.5`, `-1.25`, `1700000000`).
fn unix_seconds(ns: i64) -> String {
    let ns = i128::from(ns);
    let sign = if ns < 0 { "-" } else { "" };
    let (secs, frac) = (ns.abs() / NANOS, ns.abs() % NANOS);
    if frac == 0 {
        format!("{sign}{secs}")
    } else {
        let frac = format!("{frac:09}");
        format!("{sign}{secs}.{}", frac.trim_end_matches('0'))
    }
}

/// `ns` in RFC 3339 (UTC, `Z`), with nine fractional digits (rclone's Azure
/// format) or with trailing zeros dropped (Go's `RFC3339Nano`, rclone's GCS
/// format).
fn rfc3339(ns: i64, trim: bool) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(ns);
    let frac = format!("{:09}", ns.rem_euclid(1_000_000_000));
    let frac = if trim {
        frac.trim_end_matches('0')
    } else {
        &frac
    };
    let dot = if frac.is_empty() { "" } else { "." };
    format!("{}{dot}{frac}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// An mtime in either form rclone writes (Unix seconds with an optional
/// fraction, or RFC 3339), in nanoseconds; `None` for anything else.
fn parse_mtime(text: &str) -> Option<i64> {
    let text = text.trim();
    let (neg, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    // As liberal as rclone's reader: `1.` and `.5` are numbers too.
    if int.len() + frac.len() > 0 && digits(int) && digits(frac) {
        // Digits past nanoseconds are dropped, as rclone does.
        let frac = &frac[..frac.len().min(9)];
        let secs: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_ns: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse::<i128>().ok()? * 10i128.pow(9 - u32::try_from(frac.len()).ok()?)
        };
        let ns = secs.checked_mul(NANOS)?.checked_add(frac_ns)?;
        return i64::try_from(if neg { -ns } else { ns }).ok();
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

/// The mtime metadata of an object, by rclone's key, then gsutil's.
fn mtime_of(attributes: &Attributes) -> Option<i64> {
    [MTIME_KEY, GSUTIL_MTIME_KEY].iter().find_map(|key| {
        attributes
            .get(&Attribute::Metadata((*key).into()))
            .and_then(|v| parse_mtime(v))
    })
}

/// The metadata that keeps `mtime_ns` on `cloud`, in rclone's format.
fn mtime_attributes(cloud: Cloud, mtime_ns: Option<i64>) -> Attributes {
    let mut attributes = Attributes::new();
    let Some(ns) = mtime_ns else {
        return attributes;
    };
    let value = match cloud {
        Cloud::S3 => unix_seconds(ns),
        Cloud::Azure => rfc3339(ns, false),
        Cloud::Gcs => {
            attributes.insert(
                Attribute::Metadata(GSUTIL_MTIME_KEY.into()),
                ns.div_euclid(1_000_000_000).to_string().into(),
            );
            rfc3339(ns, true)
        }
    };
    attributes.insert(Attribute::Metadata(MTIME_KEY.into()), value.into());
    attributes
}

/// The walk of a sorted listing: each file after the directories its path
/// implies (each once, as it is first needed), nothing at or below what
/// `skip` leaves out, and no object that shares a directory's name.
fn shape(files: &[TreeEntry], skip: &(dyn Fn(&str, EntryKind) -> bool + Sync)) -> Vec<Walked> {
    let mut out = Vec::new();
    // The directories of the last file yielded, outermost first.
    let mut open: Vec<String> = Vec::new();
    // A directory left out with everything below it.
    let mut skipped: Option<String> = None;
    for (i, file) in files.iter().enumerate() {
        let below = |dir: &str| {
            file.path.len() > dir.len()
                && file.path.starts_with(dir)
                && file.path.as_bytes()[dir.len()] == b'/'
        };
        if skipped.as_deref().is_some_and(below) {
            continue;
        }
        skipped = None;
        // An object with a directory's name (`a` beside `a/b`): the
        // directory wins, as no filesystem holds both. The canonical
        // order puts the directory's contents right after it.
        if files.get(i + 1).is_some_and(|next| {
            next.path.len() > file.path.len()
                && next.path.starts_with(&file.path)
                && next.path.as_bytes()[file.path.len()] == b'/'
        }) {
            // Empty ones are the directory markers some tools write.
            if file.size > 0 && !skip(&file.path, EntryKind::File) {
                out.push(Walked::Warning {
                    path: file.path.clone(),
                    message: "an object has the name of a directory; not mirrored".into(),
                });
            }
            continue;
        }
        let dirs: Vec<&str> = file
            .path
            .match_indices('/')
            .map(|(at, _)| &file.path[..at])
            .collect();
        let same = open
            .iter()
            .zip(&dirs)
            .take_while(|(a, b)| a.as_str() == **b)
            .count();
        open.truncate(same);
        let mut left_out = false;
        for dir in &dirs[same..] {
            if skip(dir, EntryKind::Dir) {
                skipped = Some((*dir).to_owned());
                left_out = true;
                break;
            }
            open.push((*dir).to_owned());
            out.push(Walked::Entry(dir_entry(*dir)));
        }
        if !left_out && !skip(&file.path, EntryKind::File) {
            out.push(Walked::Entry(file.clone()));
        }
    }
    out
}

impl Tree for CloudTree {
    /// A conditional write (create only if absent), as the object-store
    /// repositories' locks.
    fn create_new(&self, path: &str, data: &[u8]) -> Result<()> {
        backup_core::Target::create_new(&self.target, path, data)
    }

    fn location(&self) -> String {
        self.target.location()
    }

    fn root_path(&self) -> String {
        format!("/{}", self.target.prefix().trim_end_matches('/'))
    }

    fn caps(&self) -> TreeCaps {
        TreeCaps {
            // The metadata keeps nanoseconds.
            mtime_precision: Duration::from_nanos(1),
            case_insensitive: false,
            symlinks: false,
            dirs: false,
            modes: false,
            transfers: 8,
        }
    }

    fn root(&self) -> Result<Option<TreeEntry>> {
        Ok(self
            .any_below(self.base().as_ref(), "")?
            .then(|| dir_entry("")))
    }

    fn walk<'a>(
        &'a self,
        skip: &'a (dyn Fn(&str, EntryKind) -> bool + Sync),
    ) -> Result<Box<dyn Iterator<Item = Result<Walked>> + Send + 'a>> {
        let (files, mut out) = self.listing()?;
        out.extend(shape(&files, skip));
        Ok(Box::new(out.into_iter().map(Ok)))
    }

    fn stat(&self, path: &str) -> Result<Option<TreeEntry>> {
        if path.is_empty() {
            return self.root();
        }
        let at = self.target.path(path)?;
        let head = GetOptions::new().with_head(true);
        match self
            .target
            .block_on(self.target.store().get_opts(&at, head))
        {
            Ok(got) => Ok(Some(TreeEntry {
                stamp: got.meta.e_tag.as_deref().map(normal_etag),
                ..TreeEntry::file(
                    path,
                    got.meta.size,
                    mtime_of(&got.attributes).or(got.meta.last_modified.timestamp_nanos_opt()),
                )
            })),
            Err(object_store::Error::NotFound { .. }) => {
                Ok(self.any_below(Some(&at), path)?.then(|| dir_entry(path)))
            }
            Err(e) => Err(self.target.map_err("stat", path, &e)),
        }
    }

    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        Target::get(&self.target, path)
    }

    fn write(&self, path: &str, attrs: FileAttrs) -> Result<Box<dyn FileWriter>> {
        let writer = self
            .target
            .writer(path, mtime_attributes(self.cloud, attrs.mtime_ns))?;
        Ok(Box::new(TreeWriter { writer }))
    }

    fn make_dir(&self, path: &str, _attrs: FileAttrs) -> Result<()> {
        if !path.is_empty() {
            check_key(path)?;
        }
        Ok(())
    }

    fn symlink(&self, path: &str, _target: &str) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{}/{path}: object stores cannot keep symlinks",
            self.target.location()
        )))
    }

    fn remove(&self, path: &str, kind: EntryKind) -> Result<()> {
        match kind {
            // A directory is gone with its last object.
            EntryKind::Dir => check_key(path),
            EntryKind::File | EntryKind::Symlink => Target::delete(&self.target, path),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (src, dst) = (self.target.path(from)?, self.target.path(to)?);
        // A server-side copy (with its metadata), then a delete.
        self.target
            .block_on(self.target.store().rename(&src, &dst))
            .map_err(|e| self.target.map_err("move", from, &e))
    }
}

/// An upload in progress; dropped, it is aborted.
struct TreeWriter {
    writer: CloudWriter,
}

impl Write for TreeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl FileWriter for TreeWriter {
    fn commit(mut self: Box<Self>) -> Result<Stored> {
        let put = self.writer.finish()?;
        let stamp = match put.e_tag {
            Some(tag) => Some(tag),
            // Not every store answers an upload with its ETag.
            None => self.writer.head_e_tag()?,
        };
        Ok(Stored {
            stamp: stamp.as_deref().map(normal_etag),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_core::testgen::Gen;

    #[test]
    fn s3_mtimes_are_rclone_float_seconds() {
        assert_eq!(
            unix_seconds(1_700_000_000_123_456_789),
            "1700000000.123456789"
        );
        assert_eq!(unix_seconds(1_700_000_000_500_000_000), "1700000000.5");
        assert_eq!(unix_seconds(1_700_000_000_000_000_000), "1700000000");
        assert_eq!(unix_seconds(0), "0");
        assert_eq!(unix_seconds(-1_250_000_000), "-1.25");
        assert_eq!(unix_seconds(-5), "-0.000000005");
        assert_eq!(
            parse_mtime("1354040105.123456789"),
            Some(1_354_040_105_123_456_789)
        );
        assert_eq!(parse_mtime("1354040105"), Some(1_354_040_105_000_000_000));
        // Digits past nanoseconds are dropped, not rounded.
        assert_eq!(parse_mtime("1.0000000019"), Some(1_000_000_001));
        assert_eq!(parse_mtime("-1.25"), Some(-1_250_000_000));
        assert_eq!(parse_mtime("1."), Some(1_000_000_000));
        assert_eq!(parse_mtime(".5"), Some(500_000_000));
        for bad in [
            "", ".", "-", "1e9", "1.2.3", "x", "--1", "1 2", "+1", "1.-5",
        ] {
            assert_eq!(parse_mtime(bad), None, "{bad:?}");
        }
        assert_eq!(parse_mtime("99999999999999999999"), None);
    }

    #[test]
    fn azure_and_gcs_mtimes_are_rfc3339_with_nanoseconds() {
        let ns = 1_700_000_000_123_456_789;
        assert_eq!(rfc3339(ns, false), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(rfc3339(ns, true), "2023-11-14T22:13:20.123456789Z");
        let whole = 1_700_000_000_000_000_000;
        assert_eq!(rfc3339(whole, false), "2023-11-14T22:13:20.000000000Z");
        assert_eq!(rfc3339(whole, true), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1, false), "1969-12-31T23:59:59.999999999Z");
        // Other writers' offsets and precisions are read too.
        assert_eq!(
            parse_mtime("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(parse_mtime("2023-11-14T22:13:20Z"), Some(whole));
    }

    #[test]
    fn mtimes_round_trip_in_every_format() {
        let mut g = Gen::new(31);
        for i in 0..20_000 {
            let ns = match i {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => i64::from_ne_bytes(g.next_u64().to_ne_bytes()),
            };
            assert_eq!(parse_mtime(&unix_seconds(ns)), Some(ns), "{ns}");
            assert_eq!(parse_mtime(&rfc3339(ns, false)), Some(ns), "{ns}");
            assert_eq!(parse_mtime(&rfc3339(ns, true)), Some(ns), "{ns}");
        }
    }

    #[test]
    fn each_cloud_writes_rclones_keys() {
        let ns = Some(1_700_000_000_123_456_789);
        let get = |a: &Attributes, k: &'static str| {
            a.get(&Attribute::Metadata(k.into())).map(|v| v.to_string())
        };
        let s3 = mtime_attributes(Cloud::S3, ns);
        assert_eq!(get(&s3, "mtime").as_deref(), Some("1700000000.123456789"));
        assert_eq!(s3.len(), 1);
        let azure = mtime_attributes(Cloud::Azure, ns);
        assert_eq!(
            get(&azure, "mtime").as_deref(),
            Some("2023-11-14T22:13:20.123456789Z")
        );
        let gcs = mtime_attributes(Cloud::Gcs, ns);
        assert_eq!(
            get(&gcs, "goog-reserved-file-mtime").as_deref(),
            Some("1700000000")
        );
        assert_eq!(mtime_of(&gcs), ns);
        assert!(mtime_attributes(Cloud::S3, None).is_empty());
        // gsutil's key alone is read, at its precision.
        let gsutil =
            Attributes::from_iter([(Attribute::Metadata(GSUTIL_MTIME_KEY.into()), "1700000000")]);
        assert_eq!(mtime_of(&gsutil), Some(1_700_000_000_000_000_000));
    }

    /// Generated listings: the walk is in canonical order without
    /// duplicates, every directory a yielded file implies comes first, and
    /// nothing at or below a skipped directory, or with a directory's name,
    /// is yielded.
    #[test]
    fn walks_of_generated_listings_have_the_shape_of_a_tree() {
        let mut g = Gen::new(32);
        for _ in 0..3000 {
            let mut paths: Vec<String> = (0..g.below(12))
                .map(|_| {
                    (0..=g.below(3))
                        .map(|_| g.pick(&["a", "b", "a.txt", "a-b", "Z", "ü", "skip"]))
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .collect();
            paths.sort_by(|a, b| cmp_paths(a, b));
            paths.dedup();
            let files: Vec<TreeEntry> = paths
                .iter()
                .map(|p| TreeEntry::file(p.clone(), u64::from(p.len() % 2 == 0), None))
                .collect();
            let skip_dir = |p: &str| p == "skip" || p.ends_with("/skip");
            let skip = |p: &str, kind: EntryKind| match kind {
                EntryKind::Dir => skip_dir(p),
                _ => p.ends_with('Z'),
            };
            let walked = shape(&files, &skip);
            let entries: Vec<&TreeEntry> = walked
                .iter()
                .filter_map(|w| match w {
                    Walked::Entry(e) => Some(e),
                    _ => None,
                })
                .collect();
            for pair in entries.windows(2) {
                assert_eq!(
                    cmp_paths(&pair[0].path, &pair[1].path),
                    std::cmp::Ordering::Less,
                    "{paths:?}"
                );
            }
            let ancestors = |p: &str| -> Vec<String> {
                p.match_indices('/')
                    .map(|(i, _)| p[..i].to_owned())
                    .collect()
            };
            for f in &paths {
                let hidden = ancestors(f).iter().any(|d| skip_dir(d));
                let shadowed = paths.iter().any(|o| o.starts_with(&format!("{f}/")));
                let want = !hidden && !shadowed && !f.ends_with('Z');
                let got = entries
                    .iter()
                    .any(|e| e.path == *f && e.kind == EntryKind::File);
                assert_eq!(got, want, "{f} in {paths:?}: {entries:?}");
                if got {
                    for d in ancestors(f) {
                        assert!(
                            entries
                                .iter()
                                .any(|e| e.path == d && e.kind == EntryKind::Dir),
                            "{d} before {f}"
                        );
                    }
                }
            }
            for e in entries.iter().filter(|e| e.kind == EntryKind::Dir) {
                assert!(
                    !skip_dir(&e.path) && !ancestors(&e.path).iter().any(|d| skip_dir(d)),
                    "{e:?}"
                );
                assert!(paths.iter().any(|p| p.starts_with(&format!("{}/", e.path))));
            }
            let warned = walked
                .iter()
                .filter(|w| matches!(w, Walked::Warning { .. }))
                .count();
            assert!(warned <= paths.len());
        }
    }

    #[test]
    fn etags_lose_quotes_and_weak_markers() {
        assert_eq!(normal_etag("\"abc-2\""), "abc-2");
        assert_eq!(normal_etag("W/\"abc\""), "abc");
        assert_eq!(normal_etag("0x8D"), "0x8D");
    }
}
