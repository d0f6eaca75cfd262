//! The walks a mirror merges: its sources as one canonical stream, and the
//! destination without backupkit's own state. Every stream is checked to be
//! in canonical order, since the merge (and so every deletion) relies on it.

use std::cmp::Ordering;
use std::path::Path;

use crate::mirror::MirrorSource;
use crate::mirror::record::STATE_DIR;
use crate::source::Excludes;
use crate::tree::{EntryKind, Tree, TreeEntry, Walked, cmp_paths, join};
use crate::{Error, Result};

/// A walk's items, boxed.
pub(crate) type Walk<'a> = Box<dyn Iterator<Item = Result<Walked>> + Send + 'a>;

/// A skip rule for one tree's walk.
pub(crate) type Skip = Box<dyn Fn(&str, EntryKind) -> bool + Sync>;

/// The skip rule of a source: its excludes, matched against the tree's own
/// path of each entry, and backupkit's state directory (a source that is
/// itself a mirror keeps its own record, which is not the data).
pub(crate) fn source_skip(tree: &dyn Tree, excludes: &Excludes) -> Skip {
    let root = tree.root_path();
    let excludes = excludes.clone();
    Box::new(move |rel, _| {
        rel == STATE_DIR
            || !excludes.patterns().is_empty()
                && excludes.is_excluded(Path::new(&format!("{}/{rel}", root.trim_end_matches('/'))))
    })
}

/// The skip rule of a destination: the backup directories and the
/// excludes (an excluded destination file is never deleted). backupkit's
/// state directory is walked, for the leftovers a killed run left there,
/// and its entries dropped by [`without_state`].
pub(crate) fn dest_skip(tree: &dyn Tree, excludes: &Excludes, backup_dirs: Vec<String>) -> Skip {
    let root = tree.root_path();
    let excludes = excludes.clone();
    Box::new(move |rel, _| {
        backup_dirs.iter().any(|d| d == rel)
            || (!excludes.patterns().is_empty()
                && excludes
                    .is_excluded(Path::new(&format!("{}/{rel}", root.trim_end_matches('/')))))
    })
}

/// A destination walk without backupkit's state directory, but with the
/// leftovers of unfinished writes in it (a killed run's half record).
pub(crate) fn without_state(walk: Walk<'_>) -> Walk<'_> {
    let state = format!("{STATE_DIR}/");
    Box::new(walk.filter(move |w| {
        !matches!(w, Ok(Walked::Entry(e)) if e.path == STATE_DIR || e.path.starts_with(&state))
    }))
}

/// One item of the merged source stream: which source, the entry with its
/// destination path, and the path inside its own tree.
#[derive(Debug)]
pub(crate) enum SourceItem {
    Entry {
        source: usize,
        rel: String,
        entry: TreeEntry,
    },
    Warning {
        path: String,
        message: String,
    },
}

/// The merged source stream.
pub(crate) type Sources<'a> = Box<dyn Iterator<Item = Result<SourceItem>> + Send + 'a>;

/// The sources' entries, each under its prefix, as one canonical stream.
/// Sources must be sorted by prefix, and a `""` prefix must be alone.
pub(crate) fn sources<'a>(
    list: &'a [MirrorSource],
    roots: &'a [TreeEntry],
    skips: &'a [Skip],
) -> Result<Sources<'a>> {
    let mut chained: Sources<'a> = Box::new(std::iter::empty());
    for (i, src) in list.iter().enumerate() {
        let prefix = src.prefix.as_str();
        let root = &roots[i];
        let head: Option<Result<SourceItem>> = (!prefix.is_empty()).then(|| {
            Ok(SourceItem::Entry {
                source: i,
                rel: String::new(),
                entry: TreeEntry {
                    path: prefix.to_owned(),
                    ..root.clone()
                },
            })
        });
        chained = Box::new(chained.chain(head));
        if root.kind != EntryKind::Dir {
            continue;
        }
        let walk = src.tree.walk(skips[i].as_ref())?;
        let items = walk.filter_map(move |w| match w {
            Err(e) => Some(Err(e)),
            // A source's temporary files are nobody's data.
            Ok(Walked::Leftover(_)) => None,
            Ok(Walked::Warning { path, message }) => Some(Ok(SourceItem::Warning {
                path: join(prefix, &path),
                message,
            })),
            Ok(Walked::Entry(mut entry)) => {
                let rel = std::mem::take(&mut entry.path);
                entry.path = join(prefix, &rel);
                Some(Ok(SourceItem::Entry {
                    source: i,
                    rel,
                    entry,
                }))
            }
        });
        chained = Box::new(chained.chain(items));
    }
    Ok(Box::new(Ordered::new(chained, "the sources")))
}

/// Items per hand-over from a [`prefetch`] thread.
const PREFETCH_BATCH: usize = 512;

/// Runs `items` on a thread of its own, handing them over in batches, so
/// that the walks of both sides (a stat per entry each) overlap. The thread
/// ends when the items do, or when the consumer is dropped.
pub(crate) fn prefetch<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    items: impl Iterator<Item = T> + Send + 'scope,
) -> impl Iterator<Item = T> + Send + 'scope {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<T>>(8);
    scope.spawn(move || {
        let mut batch = Vec::with_capacity(PREFETCH_BATCH);
        for item in items {
            batch.push(item);
            if batch.len() == PREFETCH_BATCH
                && tx
                    .send(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(PREFETCH_BATCH),
                    ))
                    .is_err()
            {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
    });
    rx.into_iter().flatten()
}

/// Something with a canonical path.
pub(crate) trait Keyed {
    fn key(&self) -> Option<&str>;
}

impl Keyed for SourceItem {
    fn key(&self) -> Option<&str> {
        match self {
            SourceItem::Entry { entry, .. } => Some(&entry.path),
            SourceItem::Warning { .. } => None,
        }
    }
}

impl Keyed for Walked {
    fn key(&self) -> Option<&str> {
        match self {
            Walked::Entry(e) => Some(&e.path),
            _ => None,
        }
    }
}

/// Fails the stream when its paths are not strictly increasing.
pub(crate) struct Ordered<I> {
    inner: I,
    last: Option<String>,
    what: &'static str,
    failed: bool,
}

impl<I> Ordered<I> {
    pub(crate) fn new(inner: I, what: &'static str) -> Self {
        Self {
            inner,
            last: None,
            what,
            failed: false,
        }
    }
}

impl<T: Keyed, I: Iterator<Item = Result<T>>> Iterator for Ordered<I> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.inner.next()?;
        if let Ok(it) = &item
            && let Some(key) = it.key()
        {
            if let Some(last) = &self.last
                && cmp_paths(last, key) != Ordering::Less
            {
                self.failed = true;
                return Some(Err(Error::Backend {
                    backend: "mirror".into(),
                    message: format!(
                        "the listing of {} is out of order at {key:?} (after {last:?}); \
                         nothing was deleted",
                        self.what
                    ),
                    source: None,
                }));
            }
            self.last = Some(key.to_owned());
        }
        Some(item)
    }
}

/// A source entry: which source, its path in its own tree, the entry.
pub(crate) type SourceEntry = (usize, String, TreeEntry);

/// One path of two merged walks.
pub(crate) enum Pair {
    Source(SourceEntry),
    Dest(TreeEntry),
    Both(SourceEntry, TreeEntry),
    /// A source entry that could not be read.
    Unreadable {
        path: String,
        message: String,
    },
}

/// Walks the sources and the destination together, one path at a time.
/// The destination's leftovers and warnings are passed over.
pub(crate) fn pair_up(
    src: Sources<'_>,
    dst: Walk<'_>,
    f: &mut dyn FnMut(Pair) -> Result<()>,
) -> Result<()> {
    let mut src = src.peekable();
    let mut dst = dst.peekable();
    loop {
        let src_key = match src.peek() {
            Some(Ok(SourceItem::Entry { entry, .. })) => Some(entry.path.clone()),
            Some(Ok(SourceItem::Warning { .. })) => {
                if let Some(Ok(SourceItem::Warning { path, message })) = src.next() {
                    f(Pair::Unreadable { path, message })?;
                }
                continue;
            }
            Some(Err(_)) => return Err(next_err(&mut src)),
            None => None,
        };
        let dest_key = match dst.peek() {
            Some(Ok(Walked::Entry(e))) => Some(e.path.clone()),
            Some(Ok(_)) => {
                dst.next();
                continue;
            }
            Some(Err(_)) => return Err(next_err(&mut dst)),
            None => None,
        };
        let order = match (&src_key, &dest_key) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) => cmp_paths(a, b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
        };
        let take_src = |src: &mut std::iter::Peekable<Sources<'_>>| match src.next() {
            Some(Ok(SourceItem::Entry { source, rel, entry })) => Some((source, rel, entry)),
            _ => None,
        };
        let take_dst = |dst: &mut std::iter::Peekable<Walk<'_>>| match dst.next() {
            Some(Ok(Walked::Entry(e))) => Some(e),
            _ => None,
        };
        let pair = match order {
            Ordering::Less => take_src(&mut src).map(Pair::Source),
            Ordering::Greater => take_dst(&mut dst).map(Pair::Dest),
            Ordering::Equal => match (take_src(&mut src), take_dst(&mut dst)) {
                (Some(s), Some(d)) => Some(Pair::Both(s, d)),
                _ => None,
            },
        };
        if let Some(pair) = pair {
            f(pair)?;
        }
    }
}

/// The error at the head of a stream (whose head was peeked as an error).
pub(crate) fn next_err<T, I: Iterator<Item = Result<T>>>(it: &mut I) -> Error {
    match it.next() {
        Some(Err(e)) => e,
        _ => Error::Cancelled,
    }
}
