//! backupkit's storage targets: local and mounted paths, and, each behind
//! its own cargo feature, object stores (`s3`, `azure`, `gcs`), SSH hosts
//! (`sftp`) and rclone remotes (`rclone`).

#[cfg(feature = "cloud")]
pub mod cloud;
mod local;
#[cfg(feature = "rclone")]
pub mod rclone;
#[cfg(feature = "sftp")]
pub mod sftp;

use std::sync::Arc;

use backup_core::registry::TargetOptions;
use backup_core::{Error, Registry, Result, Target};

pub use local::LocalTarget;

/// Registers every target this build has: `file` and plain paths always,
/// `s3`, `az`/`azure` and `gs` with their features.
pub fn register(registry: &mut Registry) {
    registry.register_scheme(backup_core::registry::LOCAL_SCHEME, |location, options| {
        no_options("local", options)?;
        let path = location.strip_prefix("file://").unwrap_or(location);
        Ok(Arc::new(LocalTarget::new(path)?) as Arc<dyn Target>)
    });
    #[cfg(feature = "s3")]
    registry.register_scheme("s3", |location, options| {
        Ok(Arc::new(cloud::CloudTarget::open(
            cloud::Cloud::S3,
            location,
            options,
        )?) as Arc<dyn Target>)
    });
    #[cfg(feature = "azure")]
    for scheme in ["az", "azure"] {
        registry.register_scheme(scheme, |location, options| {
            Ok(Arc::new(cloud::CloudTarget::open(
                cloud::Cloud::Azure,
                location,
                options,
            )?) as Arc<dyn Target>)
        });
    }
    #[cfg(feature = "sftp")]
    for scheme in ["sftp", "ssh"] {
        registry.register_scheme(scheme, |location, options| {
            Ok(Arc::new(sftp::SftpTarget::open(location, options)?) as Arc<dyn Target>)
        });
    }
    #[cfg(feature = "rclone")]
    registry.register_scheme("rclone", |location, options| {
        Ok(Arc::new(rclone::RcloneTarget::open(location, options)?) as Arc<dyn Target>)
    });
    #[cfg(feature = "gcs")]
    registry.register_scheme("gs", |location, options| {
        Ok(Arc::new(cloud::CloudTarget::open(
            cloud::Cloud::Gcs,
            location,
            options,
        )?) as Arc<dyn Target>)
    });
}

/// Refuses options for a target kind that takes none.
fn no_options(kind: &str, options: &TargetOptions) -> Result<()> {
    match options.keys().next() {
        None => Ok(()),
        Some(key) => Err(Error::InvalidInput(format!(
            "unknown option {key:?} for {kind} repositories"
        ))),
    }
}
