//! backupkit's storage targets: local and mounted paths, and, each behind
//! its own cargo feature, object stores (`s3`, `azure`, `gcs`), SSH hosts
//! (`sftp`) and rclone remotes (`rclone`).

#[cfg(feature = "cloud")]
pub mod cloud;
#[cfg(feature = "cloud")]
mod cloud_tree;
mod local;
mod local_tree;
pub mod mount;
#[cfg(feature = "notify")]
pub mod notify;
#[cfg(feature = "rclone")]
pub mod rclone;
#[cfg(feature = "rclone")]
pub mod rclone_tree;
#[cfg(feature = "sftp")]
pub mod sftp;
#[cfg(feature = "smb")]
pub mod smb;
#[cfg(any(feature = "sftp", feature = "rclone"))]
mod way;

use std::sync::Arc;

use backup_core::{Error, Registry, Result, Target};

pub use local::LocalTarget;
pub use local_tree::LocalTree;

/// The options of local paths: `mount_point` and `mount_timeout`.
fn local_options(
    options: &backup_core::TargetOptions,
) -> Result<(Option<std::path::PathBuf>, std::time::Duration)> {
    let mut mount_point = None;
    let mut timeout = mount::DEFAULT_TIMEOUT;
    for (key, value) in options {
        match key.as_str() {
            "mount_point" => mount_point = Some(std::path::PathBuf::from(value)),
            "mount_timeout" => timeout = parse_duration(key, value)?,
            _ => {
                return Err(Error::InvalidInput(format!(
                    "unknown option {key:?} for local repositories and mirrors (known: \
                     mount_point, mount_timeout)"
                )));
            }
        }
    }
    Ok((mount_point, timeout))
}

/// Registers every target this build has: `file` and plain paths always,
/// `s3`, `az`/`azure` and `gs` with their features.
pub fn register(registry: &mut Registry) {
    registry.register_scheme(backup_core::registry::LOCAL_SCHEME, |location, options| {
        let path = location.strip_prefix("file://").unwrap_or(location);
        let (mount_point, timeout) = local_options(options)?;
        let target = LocalTarget::new(path)?;
        mount::check(target.root(), mount_point.as_deref(), timeout)?;
        Ok(Arc::new(target) as Arc<dyn Target>)
    });
    registry.register_tree(backup_core::registry::LOCAL_SCHEME, |location, options| {
        let path = location.strip_prefix("file://").unwrap_or(location);
        // `copy_links` is a mirror source's alone (`--copy-links`).
        let mut options = options.clone();
        let follow = match options.remove("copy_links").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(Error::InvalidInput(
                    "option copy_links: expected true or false".into(),
                ));
            }
        };
        let (mount_point, timeout) = local_options(&options)?;
        let tree = LocalTree::new(path)?.following_links(follow);
        mount::check(tree.root_dir(), mount_point.as_deref(), timeout)?;
        Ok(Arc::new(tree) as Arc<dyn backup_core::tree::Tree>)
    });
    #[cfg(feature = "s3")]
    registry.register_scheme("s3", |location, options| {
        Ok(Arc::new(cloud::CloudTarget::open(
            cloud::Cloud::S3,
            location,
            options,
        )?) as Arc<dyn Target>)
    });
    #[cfg(feature = "s3")]
    registry.register_tree("s3", |location, options| {
        Ok(Arc::new(cloud_tree::CloudTree::open(
            cloud::Cloud::S3,
            location,
            options,
        )?) as Arc<dyn backup_core::tree::Tree>)
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
        registry.register_tree(scheme, |location, options| {
            Ok(Arc::new(cloud_tree::CloudTree::open(
                cloud::Cloud::Azure,
                location,
                options,
            )?) as Arc<dyn backup_core::tree::Tree>)
        });
    }
    #[cfg(feature = "smb")]
    smb::register(registry);
    #[cfg(feature = "sftp")]
    for scheme in ["sftp", "ssh"] {
        registry.register_scheme(scheme, |location, options| {
            Ok(Arc::new(sftp::SftpTarget::open(location, options)?) as Arc<dyn Target>)
        });
    }
    #[cfg(feature = "sftp")]
    for scheme in ["sftp", "ssh"] {
        registry.register_tree(scheme, |location, options| {
            Ok(Arc::new(sftp::SftpTree::open(location, options)?)
                as Arc<dyn backup_core::tree::Tree>)
        });
    }
    #[cfg(feature = "rclone")]
    registry.register_scheme("rclone", |location, options| {
        Ok(Arc::new(rclone::RcloneTarget::open(location, options)?) as Arc<dyn Target>)
    });
    #[cfg(feature = "notify")]
    registry.set_sender(Arc::new(notify::Notifier));
    register_option_checks(registry);
    #[cfg(feature = "rclone")]
    registry.register_tree("rclone", |location, options| {
        Ok(Arc::new(rclone_tree::RcloneTree::open(location, options)?)
            as Arc<dyn backup_core::tree::Tree>)
    });
    #[cfg(feature = "gcs")]
    registry.register_scheme("gs", |location, options| {
        Ok(Arc::new(cloud::CloudTarget::open(
            cloud::Cloud::Gcs,
            location,
            options,
        )?) as Arc<dyn Target>)
    });
    #[cfg(feature = "gcs")]
    registry.register_tree("gs", |location, options| {
        Ok(Arc::new(cloud_tree::CloudTree::open(
            cloud::Cloud::Gcs,
            location,
            options,
        )?) as Arc<dyn backup_core::tree::Tree>)
    });
}

/// How each scheme's options are checked without touching the network
/// (opening these targets parses and checks everything first and connects
/// only when used; an rclone tree asks rclone about its remote, so its
/// check opens the rclone target instead).
fn register_option_checks(registry: &mut Registry) {
    registry.register_option_check(backup_core::registry::LOCAL_SCHEME, |_, options, _| {
        local_options(options).map(|_| ())
    });
    #[cfg(feature = "cloud")]
    for (scheme, cloud) in [
        #[cfg(feature = "s3")]
        ("s3", cloud::Cloud::S3),
        #[cfg(feature = "azure")]
        ("az", cloud::Cloud::Azure),
        #[cfg(feature = "azure")]
        ("azure", cloud::Cloud::Azure),
        #[cfg(feature = "gcs")]
        ("gs", cloud::Cloud::Gcs),
    ] {
        registry.register_option_check(scheme, move |location, options, _| {
            cloud::CloudTarget::open(cloud, location, options).map(|_| ())
        });
    }
    #[cfg(feature = "sftp")]
    for scheme in ["sftp", "ssh"] {
        registry.register_option_check(scheme, |location, options, tree| {
            if tree {
                sftp::SftpTree::open(location, options).map(|_| ())
            } else {
                sftp::SftpTarget::open(location, options).map(|_| ())
            }
        });
    }
    #[cfg(feature = "rclone")]
    registry.register_option_check("rclone", |location, options, _| {
        rclone::RcloneTarget::open(location, options).map(|_| ())
    });
}

/// A duration option: `30s`, `2m`, `500ms`, or plain seconds. The message
/// of a bad one names the option, never its value.
pub(crate) fn parse_duration(key: &str, value: &str) -> Result<std::time::Duration> {
    use std::time::Duration;
    let bad = || {
        Error::InvalidInput(format!(
            "option {key}: expected a duration such as 30s, 2m or 500ms (the value is not shown)"
        ))
    };
    let (number, unit) = value
        .find(|c: char| !c.is_ascii_digit())
        .map_or((value, "s"), |i| value.split_at(i));
    let n: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(bad),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_core::testgen::Gen;

    #[test]
    fn durations_parse_and_bad_ones_name_the_option_not_the_value() {
        use std::time::Duration;
        assert_eq!(parse_duration("k", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("k", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("k", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("k", "7").unwrap(), Duration::from_secs(7));
        for bad in [
            "soon-SECRET",
            "",
            "SECRET",
            "5h",
            "-5s",
            "99999999999999999999s",
            "18446744073709551615m",
        ] {
            let err = parse_duration("mount_timeout", bad).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad:?}: {text}");
            assert!(text.contains("option mount_timeout"), "{text}");
            if !bad.is_empty() {
                assert!(!text.contains(bad), "{bad:?} shown in {text}");
            }
        }
    }

    #[test]
    fn duration_parsing_never_panics_nor_shows_the_value() {
        let expected = parse_duration("retry_timeout", "x")
            .unwrap_err()
            .to_string();
        let mut g = Gen::new(11);
        for _ in 0..20_000 {
            let value = g.string(6);
            if let Err(e) = parse_duration("retry_timeout", &value) {
                assert_eq!(e.to_string(), expected, "{value:?}");
            }
        }
    }

    /// Local locations and options from generated strings: never a panic.
    #[test]
    fn local_locations_and_options_never_panic() {
        let mut r = Registry::new();
        register(&mut r);
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let mut g = Gen::new(12);
        for i in 0..400 {
            let location = match i % 3 {
                0 => format!("{base}/{}", g.string(5)),
                1 => format!("file://{base}/{}", g.string(5)),
                _ => g.string(6),
            };
            let mut options = backup_core::TargetOptions::new();
            if g.below(2) == 0 {
                let key = g.part(&["mount_timeout", "mount_point", "nope"]);
                let value = match key.as_str() {
                    "mount_point" => g.part(&[base.as_str(), "/", "/proc"]),
                    _ => g.part(&["1s", "10ms", "2m", "x"]),
                };
                options.insert(key, value);
            }
            let _ = r.open_target_with(&location, &options);
        }
    }
}
