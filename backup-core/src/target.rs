//! The storage contract: a place that keeps named objects.
//!
//! The trait is synchronous on purpose. Packing, compressing and hashing are
//! CPU-bound and run on plain threads with bounded buffers; a backend that
//! speaks an async protocol (object stores) bridges inside itself, the way
//! `rustic_core` does, instead of making every engine async.

use std::fmt::Debug;
use std::io::{Read, Write};
use std::time::SystemTime;

use crate::Result;

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `/`-separated key relative to the target's root.
    pub key: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// A streaming writer for one object. Nothing is visible under the key until
/// [`ObjectWriter::commit`] returns; dropping the writer without committing
/// discards what was written.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible, atomically replacing any object
    /// of the same key.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// A place that stores named objects: a local or mounted directory, and later
/// SSH hosts, rclone remotes and object stores.
///
/// # Contract
///
/// - `put` is atomic: readers see either the old object or the whole new one,
///   never a part (write to a temporary name, then rename or complete an
///   upload).
/// - `create_new` fails with [`crate::Error::AlreadyExists`] when the key
///   exists, and two concurrent calls for one key never both succeed.
/// - `get`, `stat` and `delete` of a missing key fail with
///   [`crate::Error::NotFound`]; `delete` of a missing key may also succeed.
/// - `get_range` yields exactly the bytes `get` would at those offsets.
/// - `list` returns every object whose key starts with `prefix`, in any
///   order, without temporary objects of unfinished `put`s.
/// - Errors never contain credentials.
pub trait Target: Debug + Send + Sync {
    /// Where this target points, fit for messages (no credentials).
    fn location(&self) -> String;

    /// Starts writing an object.
    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>>;

    /// Creates a small object only if the key is free (locks, markers).
    fn create_new(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Opens an object for streaming reads.
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>>;

    /// Opens `len` bytes of an object, from byte `offset`, for streaming
    /// reads (a chunk inside a pack file). `offset` lies inside the object
    /// (a range that starts at or past its end may fail); the reader ends
    /// early when the object ends first, so callers that need exactly `len`
    /// bytes check what they got. A missing key fails with
    /// [`crate::Error::NotFound`]. Backends override the default, which
    /// reads from the start and skips `offset` bytes, with their native
    /// ranged read.
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        let mut r = self.get(key)?;
        let skipped = std::io::copy(&mut (&mut r).take(offset), &mut std::io::sink())
            .map_err(|e| crate::Error::io("read", format!("{}/{key}", self.location()), e))?;
        if skipped < offset {
            return Ok(Box::new(std::io::empty()));
        }
        Ok(Box::new(r.take(len)))
    }

    /// Lists objects under a prefix.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Names of the "directories" directly below `prefix` (which ends with
    /// `/`): every name `n` such that some key, finished or not, starts with
    /// `prefix + n + "/"`. Unfinished writes count, so that leftovers of a
    /// killed process can be found. The default derives them from `list`.
    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .list(prefix)?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(prefix)?;
                rest.split_once('/').map(|(d, _)| d.to_owned())
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Size and time of one object.
    fn stat(&self, key: &str) -> Result<ObjectMeta>;

    /// Removes one object.
    fn delete(&self, key: &str) -> Result<()>;

    /// Removes leftovers of unfinished writes under a prefix (temporary files
    /// of a killed process). Targets without such leftovers do nothing.
    fn sweep(&self, _prefix: &str) -> Result<()> {
        Ok(())
    }
}

/// Marks the temporary names of unfinished writes; `list` never shows them,
/// `sweep` removes them.
pub const TMP_MARK: &str = ".tmp-";

/// A fresh temporary name beside `key`: same directory, hidden, marked with
/// [`TMP_MARK`] and a random suffix. Targets that write then rename use it.
pub fn tmp_key(key: &str) -> String {
    let (dir, name) = match key.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, key),
    };
    // Names may use all 255 bytes a filesystem allows: the temporary name
    // keeps at most 233 of them (1 + 233 + 5 + 16 = 255).
    let mut keep = name.len().min(233);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let tmp = format!(
        ".{}{TMP_MARK}{:016x}",
        &name[..keep],
        crate::snapshot::random_u64()
    );
    match dir {
        Some(d) => format!("{d}/{tmp}"),
        None => tmp,
    }
}

/// Whether a file name is one of [`tmp_key`]'s temporary names: `.NAME`,
/// [`TMP_MARK`], sixteen hex digits. Trees report such files as leftovers
/// of unfinished writes, never as a user's files.
pub fn is_tmp_name(name: &str) -> bool {
    let Some(i) = name.rfind(TMP_MARK) else {
        return false;
    };
    let suffix = &name[i + TMP_MARK.len()..];
    name.starts_with('.') && suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks an object key: `/`-separated, relative, without empty, `.` or `..`
/// components. Every target calls this before touching its store, so a key
/// can never name something outside the target's root.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(crate::Error::InvalidInput(format!(
            "invalid object key {key:?}"
        )))
    }
}

/// Conveniences on top of [`Target`], for every target.
pub trait TargetExt: Target {
    /// Stores `data` under `key` atomically.
    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut w = self.put(key)?;
        w.write_all(data)
            .map_err(|e| crate::Error::io("write", key, e))?;
        w.commit()
    }

    /// Reads a whole (small) object.
    fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let mut r = self.get(key)?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .map_err(|e| crate::Error::io("read", key, e))?;
        Ok(buf)
    }

    /// Whether `key` exists.
    fn exists(&self, key: &str) -> Result<bool> {
        match self.stat(key) {
            Ok(_) => Ok(true),
            Err(crate::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl<T: Target + ?Sized> TargetExt for T {}
