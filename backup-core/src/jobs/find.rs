//! Where the config file is, and whether it may hold secrets.
//!
//! The order: `--config FILE`, then `BACKUPKIT_CONFIG`, then
//! `./backupkit.yaml`, `./backupkit.yml` or `./backupkit.toml` in the
//! working directory, then `config.yaml`, `config.yml` or `config.toml` in
//! the user's config directory (`$XDG_CONFIG_HOME/backupkit`, or
//! `~/.config/backupkit`). Two candidates at one level are an error, never
//! a silent choice.

use std::path::{Path, PathBuf};

use crate::jobs::doc::Format;
use crate::{Error, Result};

/// Where a config was found, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub format: Format,
    /// `--config`, `BACKUPKIT_CONFIG`, `the working directory` or `the
    /// user's config directory`, for messages.
    pub how: &'static str,
}

/// Finds the config file; `Ok(None)` when there is none anywhere.
///
/// `explicit` is `--config`, `from_env` `BACKUPKIT_CONFIG`, `cwd` the
/// working directory and `config_home` the user's config directory (the
/// caller reads the environment, so that tests need not change it).
///
/// # Errors
///
/// [`Error::NotFound`] for a named file that does not exist,
/// [`Error::InvalidInput`] for an extension that is not YAML or TOML, or
/// for two candidates in one place.
pub fn find(
    explicit: Option<&Path>,
    from_env: Option<&Path>,
    cwd: &Path,
    config_home: Option<&Path>,
) -> Result<Option<Found>> {
    for (named, how) in [(explicit, "--config"), (from_env, "BACKUPKIT_CONFIG")] {
        if let Some(p) = named.filter(|p| !p.as_os_str().is_empty()) {
            if !p.is_file() {
                return Err(Error::NotFound {
                    what: "config file",
                    path: format!("{} (from {how})", p.display()),
                });
            }
            return Ok(Some(Found {
                path: p.to_path_buf(),
                format: format_of(p)?,
                how,
            }));
        }
    }
    if let Some(f) = one_of(cwd, "backupkit", "the working directory")? {
        return Ok(Some(f));
    }
    match config_home {
        Some(home) => one_of(
            &home.join("backupkit"),
            "config",
            "the user's config directory",
        ),
        None => Ok(None),
    }
}

fn format_of(p: &Path) -> Result<Format> {
    Format::of(p).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{}: a config file ends in .yaml, .yml or .toml",
            p.display()
        ))
    })
}

/// `dir/stem.{yaml,yml,toml}`, if exactly one exists.
fn one_of(dir: &Path, stem: &str, how: &'static str) -> Result<Option<Found>> {
    let there: Vec<PathBuf> = ["yaml", "yml", "toml"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .filter(|p| p.is_file())
        .collect();
    match there.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(Found {
            path: one.clone(),
            format: format_of(one)?,
            how,
        })),
        [a, b, ..] => Err(Error::InvalidInput(format!(
            "two config files in {how}: {} and {}; keep one, or name it with --config",
            a.display(),
            b.display()
        ))),
    }
}

/// [`find`] as a process does it: `BACKUPKIT_CONFIG`, the working
/// directory, `XDG_CONFIG_HOME` or `HOME`.
///
/// # Errors
///
/// As [`find`], and [`Error::InvalidInput`] when there is no config
/// anywhere (saying where one may go).
pub fn locate(explicit: Option<&Path>) -> Result<Found> {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", "the working directory", e))?;
    let home = config_home(var("XDG_CONFIG_HOME").as_deref(), var("HOME").as_deref());
    find(
        explicit,
        var("BACKUPKIT_CONFIG").as_deref(),
        &cwd,
        home.as_deref(),
    )?
    .ok_or_else(|| {
        Error::InvalidInput(
            "no config file: give one (--config FILE), set BACKUPKIT_CONFIG, or write \
             ./backupkit.yaml (see the README's \"Jobs from a config file\")"
                .into(),
        )
    })
}

/// The user's config directory: `$XDG_CONFIG_HOME`, else `$HOME/.config`.
pub fn config_home(xdg: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    xdg.filter(|p| p.is_absolute())
        .map(Path::to_path_buf)
        .or_else(|| home.map(|h| h.join(".config")))
}

/// Whether only the file's owner may read it (no group or other bits), as
/// ssh asks of a private key: the condition for secrets written inline.
///
/// # Errors
///
/// The file's metadata cannot be read.
pub fn owner_only(path: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io("inspect", path.display().to_string(), e))?;
    // The mask says "no group or other bits" as `chmod` users read it.
    #[allow(clippy::verbose_bit_mask)]
    let private = meta.permissions().mode() & 0o077 == 0;
    Ok(private)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::{config_home, find, owner_only};
    use crate::Error;
    use crate::jobs::doc::Format;

    #[test]
    fn the_config_is_found_in_order_and_two_candidates_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cwd, home) = (dir.path().join("work"), dir.path().join("home"));
        fs::create_dir_all(&cwd).unwrap();
        fs::create_dir_all(home.join("backupkit")).unwrap();
        assert_eq!(find(None, None, &cwd, Some(&home)).unwrap(), None);
        fs::write(home.join("backupkit/config.toml"), "").unwrap();
        let f = find(None, None, &cwd, Some(&home)).unwrap().unwrap();
        assert_eq!(
            (f.format, f.how),
            (Format::Toml, "the user's config directory")
        );
        fs::write(cwd.join("backupkit.yml"), "").unwrap();
        let f = find(None, None, &cwd, Some(&home)).unwrap().unwrap();
        assert_eq!(
            (f.path, f.how),
            (cwd.join("backupkit.yml"), "the working directory")
        );
        let named = dir.path().join("lab.yaml");
        fs::write(&named, "").unwrap();
        let f = find(None, Some(&named), &cwd, Some(&home))
            .unwrap()
            .unwrap();
        assert_eq!(f.how, "BACKUPKIT_CONFIG");
        let other = dir.path().join("other.toml");
        fs::write(&other, "").unwrap();
        let f = find(Some(&other), Some(&named), &cwd, None)
            .unwrap()
            .unwrap();
        assert_eq!((f.how, f.format), ("--config", Format::Toml));
        let e = find(Some(&dir.path().join("nope.yaml")), None, &cwd, None).unwrap_err();
        assert!(
            matches!(e, Error::NotFound { .. }) && e.to_string().contains("--config"),
            "{e}"
        );
        let ini = dir.path().join("lab.ini");
        fs::write(&ini, "").unwrap();
        let e = find(Some(&ini), None, &cwd, None).unwrap_err();
        assert!(e.to_string().contains(".yaml, .yml or .toml"), "{e}");
        fs::write(cwd.join("backupkit.toml"), "").unwrap();
        let e = find(None, None, &cwd, None).unwrap_err();
        assert!(e.to_string().contains("two config files"), "{e}");
    }

    #[test]
    fn the_user_config_directory_and_owner_only_files() {
        assert_eq!(
            config_home(Some(Path::new("/x/cfg")), Some(Path::new("/home/u"))),
            Some("/x/cfg".into())
        );
        assert_eq!(
            config_home(Some(Path::new("relative")), Some(Path::new("/home/u"))),
            Some("/home/u/.config".into())
        );
        assert_eq!(config_home(None, None), None);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        fs::write(&f, "").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(owner_only(&f).unwrap());
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(!owner_only(&f).unwrap());
        fs::set_permissions(&f, fs::Permissions::from_mode(0o604)).unwrap();
        assert!(!owner_only(&f).unwrap());
    }
}
