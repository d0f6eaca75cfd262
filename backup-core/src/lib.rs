//! backupkit's core: the model (sources, targets, archives, snapshots) and the
//! engines (backup, restore, check, forget) that every frontend shares.
//!
//! backup-core holds no compression code, no cloud SDK and no database driver:
//! formats and hashes come from `backup-archive`, storage from
//! `backup-targets`, and a frontend joins them through a [`Registry`].

pub mod archive;
pub mod backup;
pub mod check;
pub mod copy;
pub mod database;
mod dbsnap;
pub mod error;
pub mod forget;
pub mod hash;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod registry;
pub mod repository;
pub mod restore;
pub mod retention;
mod sink;
pub mod snapshot;
pub mod source;
mod store;
pub mod target;
#[doc(hidden)]
pub mod testgen;
mod verify;

pub use backup::{BackupOptions, BackupSummary, Warning};
pub use check::{CheckOptions, CheckProblem, CheckReport, error_chain};
pub use copy::CopySummary;
pub use dbsnap::{AutoOptions, AutoOutcome, DatabaseBackupOptions, DatabaseRestoreSummary};
pub use error::{Error, IoContext, Result};
pub use forget::{ForgetGroup, ForgetOptions, SnapshotFilter};
pub use progress::{Cancel, Event, NoProgress, Progress};
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
