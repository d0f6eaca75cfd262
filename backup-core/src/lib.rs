//! backupkit's core: the model (sources, targets, archives, snapshots) and the
//! engines (backup, restore, check, forget) that every frontend shares.
//!
//! backup-core holds no compression code, no cloud SDK and no database driver:
//! formats and hashes come from `backup-archive`, storage from
//! `backup-targets`, and a frontend joins them through a [`Registry`].

// Shared model and composition.
pub mod error;
pub mod progress;
pub mod registry;
// Storage contracts: objects (snapshot repositories) and trees of files
// (mirrors).
pub mod target;
pub mod tree;
// What is read, and how it is packed.
pub mod archive;
pub mod database;
pub mod dedup;
pub mod fleet;
pub mod hash;
pub mod source;
// The engines.
pub mod jobs;
pub mod mirror;
pub mod schedule;
pub mod sessions;
pub mod snapshot;
#[doc(hidden)]
pub mod testgen;

pub use snapshot::{
    backup, check, copy, export, forget, lock, manifest, prune, repository, restore, retention,
};
pub(crate) use snapshot::{dbsnap, sink, store, verify};

pub use backup::{BackupOptions, BackupSummary, Warning};
pub use check::{CheckOptions, CheckProblem, CheckReport, error_chain};
pub use copy::CopySummary;
pub use dbsnap::{AutoOptions, AutoOutcome, DatabaseBackupOptions, DatabaseRestoreSummary};
pub use error::{Error, IoContext, Result};
pub use export::ExportSummary;
pub use forget::{ForgetGroup, ForgetOptions, SnapshotFilter};
pub use progress::{Cancel, Event, NoProgress, Progress};
pub use prune::{PruneOptions, PruneReport};
pub use registry::{Registry, TargetOptions};
pub use repository::{Repository, SnapshotListing};
pub use restore::{RestoreOptions, RestoreSummary};
pub use retention::{KeepDuration, KeepPolicy};
pub use snapshot::{SnapshotKind, SnapshotMeta, SnapshotStatus};
pub use target::{ObjectMeta, ObjectWriter, Target, TargetExt};

// Public handles must stay usable across threads (the Python module and the
// CLI hand them to worker threads).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Repository>();
    assert_send_sync::<Registry>();
    assert_send_sync::<Cancel>();
};
