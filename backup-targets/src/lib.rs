//! backupkit's storage targets: local and mounted paths, and, each behind
//! its own cargo feature, object stores (`s3`, `azure`, `gcs`), SSH hosts
//! (`sftp`) and rclone remotes (`rclone`).

#[cfg(feature = "cloud")]
pub mod cloud;
mod local;
pub mod mount;
#[cfg(feature = "rclone")]
pub mod rclone;
#[cfg(feature = "sftp")]
pub mod sftp;

use std::sync::Arc;

use backup_core::{Error, Registry, Result, Target};

pub use local::LocalTarget;

/// Registers every target this build has: `file` and plain paths always,
/// `s3`, `az`/`azure` and `gs` with their features.
pub fn register(registry: &mut Registry) {
    registry.register_scheme(backup_core::registry::LOCAL_SCHEME, |location, options| {
        let path = location.strip_prefix("file://").unwrap_or(location);
        let mut mount_point = None;
        let mut timeout = mount::DEFAULT_TIMEOUT;
        for (key, value) in options {
            match key.as_str() {
                "mount_point" => mount_point = Some(std::path::PathBuf::from(value)),
                "mount_timeout" => timeout = parse_duration(key, value)?,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "unknown option {key:?} for local repositories (known: mount_point, \
                         mount_timeout)"
                    )));
                }
            }
        }
        let target = LocalTarget::new(path)?;
        mount::check(target.root(), mount_point.as_deref(), timeout)?;
        Ok(Arc::new(target) as Arc<dyn Target>)
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

/// A duration option: `30s`, `2m`, `500ms`, or plain seconds.
pub(crate) fn parse_duration(key: &str, value: &str) -> Result<std::time::Duration> {
    use std::time::Duration;
    let bad = || {
        Error::InvalidInput(format!(
            "option {key}={value:?}: expected a duration such as 30s, 2m or 500ms"
        ))
    };
    let (number, unit) = value
        .find(|c: char| !c.is_ascii_digit())
        .map_or((value, "s"), |i| value.split_at(i));
    let n: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(bad()),
    }
}
