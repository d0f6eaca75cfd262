//! A device's tree, watched: every answer it gives (an entry listed, bytes
//! read, a stat) counts as a sign of life, so that a per-device watchdog
//! can give up on a device that stops answering, even in the middle of a
//! file, without limiting how long a healthy pull may take.
//!
//! While a bulk transport (rsync) runs, the transport's own inactivity
//! timeout (`--timeout`, set to the same value) watches the connection.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Result;
use crate::progress::Cancel;
use crate::tree::{
    Bulk, BulkCopy, EntryKind, FileAttrs, FileWriter, Tree, TreeCaps, TreeEntry, Walked,
};

/// Signs of life of one device.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last answer.
    last_ms: AtomicU64,
    /// Bulk copies running (watched by the transport itself).
    bulk: AtomicUsize,
    /// Bytes read from the device so far (files in flight too).
    read: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            bulk: AtomicUsize::new(0),
            read: AtomicU64::new(0),
        })
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub(super) fn read_bytes(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// How long the device has said nothing, while nothing else watches it.
    pub(super) fn silent_for(&self) -> Duration {
        if self.bulk.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A tree whose answers feed an [`Activity`], and that asks the device
/// nothing more once the device's pull is cancelled (so that a device
/// given up on is not reconnected to, file after file).
#[derive(Debug)]
pub(super) struct Watched {
    pub(super) inner: Arc<dyn Tree>,
    pub(super) activity: Arc<Activity>,
    pub(super) cancel: Cancel,
}

impl Watched {
    fn ask<T>(&self, op: impl FnOnce() -> Result<T>) -> Result<T> {
        self.cancel.check()?;
        let r = op();
        if r.is_ok() {
            self.activity.touch();
        }
        r
    }
}

struct WatchedRead {
    inner: Box<dyn Read + Send>,
    activity: Arc<Activity>,
    cancel: Cancel,
}

impl Read for WatchedRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.activity.touch();
        self.activity.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Tree for Watched {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn root_path(&self) -> String {
        self.inner.root_path()
    }

    fn caps(&self) -> TreeCaps {
        self.inner.caps()
    }

    fn root(&self) -> Result<Option<TreeEntry>> {
        self.ask(|| self.inner.root())
    }

    fn walk<'a>(
        &'a self,
        skip: &'a (dyn Fn(&str, EntryKind) -> bool + Sync),
    ) -> Result<Box<dyn Iterator<Item = Result<Walked>> + Send + 'a>> {
        let walk = self.ask(|| self.inner.walk(skip))?;
        let activity = Arc::clone(&self.activity);
        let cancel = self.cancel.clone();
        Ok(Box::new(walk.map(move |w| {
            cancel.check()?;
            activity.touch();
            w
        })))
    }

    fn stat(&self, path: &str) -> Result<Option<TreeEntry>> {
        self.ask(|| self.inner.stat(path))
    }

    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        let inner = self.ask(|| self.inner.open(path))?;
        Ok(Box::new(WatchedRead {
            inner,
            activity: Arc::clone(&self.activity),
            cancel: self.cancel.clone(),
        }))
    }

    fn write(&self, path: &str, attrs: FileAttrs) -> Result<Box<dyn FileWriter>> {
        self.inner.write(path, attrs)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn make_dir(&self, path: &str, attrs: FileAttrs) -> Result<()> {
        self.inner.make_dir(path, attrs)
    }

    fn set_dir_mtime(&self, path: &str, mtime_ns: i64) -> Result<()> {
        self.inner.set_dir_mtime(path, mtime_ns)
    }

    fn symlink(&self, path: &str, target: &str) -> Result<()> {
        self.inner.symlink(path, target)
    }

    fn remove(&self, path: &str, kind: EntryKind) -> Result<()> {
        self.inner.remove(path, kind)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.inner.rename(from, to)
    }

    fn create_new(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.create_new(path, data)
    }

    fn local_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.local_dir()
    }

    fn bulk(&self) -> Option<&dyn Bulk> {
        self.inner.bulk().map(|_| self as &dyn Bulk)
    }
}

impl Bulk for Watched {
    fn name(&self) -> &'static str {
        self.inner.bulk().map_or("", Bulk::name)
    }

    fn worth(&self, files: usize, replaced_bytes: u64) -> bool {
        self.inner
            .bulk()
            .is_some_and(|b| b.worth(files, replaced_bytes))
    }

    fn copy(&self, job: &BulkCopy<'_>, cancel: &Cancel) -> Result<Vec<Option<String>>> {
        let Some(b) = self.inner.bulk() else {
            return Err(crate::Error::InvalidInput("no bulk transport".into()));
        };
        self.activity.bulk.fetch_add(1, Ordering::SeqCst);
        let r = b.copy(job, cancel);
        self.activity.touch();
        self.activity.bulk.fetch_sub(1, Ordering::SeqCst);
        r
    }
}
