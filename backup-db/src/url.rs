//! Database URLs to local paths.

use std::path::{Path, PathBuf};

use backup_core::{Error, Result};

/// The path an SQLite URL names: `sqlite:///abs/path.db` is absolute,
/// `sqlite://rel/path.db` is relative to the current directory (and is
/// returned resolved against it). The rest is taken literally: no
/// percent-decoding, no query parameters.
///
/// # Errors
///
/// [`Error::InvalidInput`] for anything else (another scheme, no path).
pub fn sqlite_path(url: &str) -> Result<PathBuf> {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return Err(Error::InvalidInput(format!(
            "not an SQLite URL: {url:?} (expected sqlite:///absolute/path.db or sqlite://relative/path.db)"
        )));
    };
    if rest.is_empty() || rest == "/" {
        return Err(Error::InvalidInput(format!(
            "SQLite URL {url:?} names no database file"
        )));
    }
    // `sqlite:///C:/data/x.db` on Windows.
    let rest = match rest.as_bytes() {
        [b'/', drive, b':', ..] if cfg!(windows) && drive.is_ascii_alphabetic() => &rest[1..],
        _ => rest,
    };
    std::path::absolute(Path::new(rest)).map_err(|e| Error::io("resolve", rest, e))
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn absolute_and_relative_urls() {
        #[cfg(unix)]
        assert_eq!(
            sqlite_path("sqlite:///data/lab/results.db").unwrap(),
            std::path::Path::new("/data/lab/results.db")
        );
        assert_eq!(
            sqlite_path("sqlite://runs/results.db").unwrap(),
            std::env::current_dir().unwrap().join("runs/results.db")
        );
        for bad in [
            "sqlite:/x.db",
            "sqlite://",
            "sqlite:///",
            "postgres://h/db",
            "x.db",
            "",
        ] {
            let err = sqlite_path(bad).unwrap_err();
            assert!(
                matches!(err, backup_core::Error::InvalidInput(_)),
                "{bad}: {err}"
            );
        }
    }
}
