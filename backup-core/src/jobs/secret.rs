//! Secrets in a config: where a password or key comes from, resolved only
//! when a job needs it, and never shown.
//!
//! A secret is written as `NAME_env: VARIABLE`, `NAME_file: PATH` (the
//! file's first line) or `NAME_command: COMMAND` (its output's first line,
//! run with `sh -c`), or inline as `NAME: value`, which a config file that
//! others can read may not hold (as ssh treats keys).

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written in the config file itself.
    Inline(String),
    /// An environment variable's name.
    Env(String),
    /// A file whose first line is the secret.
    File(PathBuf),
    /// A shell command whose output's first line is the secret.
    Command(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

/// The suffixes that name a secret's source, with what each reads.
pub const SOURCES: [&str; 3] = ["_env", "_file", "_command"];

impl Secret {
    /// The secret as `config show` prints it: where it comes from, never
    /// its value.
    pub fn shown(&self) -> String {
        match self {
            Secret::Inline(_) => "*** (inline)".into(),
            Secret::Env(v) => format!("*** (from ${v})"),
            Secret::File(p) => format!("*** (from file {})", p.display()),
            Secret::Command(c) => format!("*** (from command {c:?})"),
        }
    }

    /// Makes the secret from `NAME` + `suffix` and its value.
    pub fn from_suffix(suffix: &str, value: String) -> Option<Self> {
        match suffix {
            "" => Some(Secret::Inline(value)),
            "_env" => Some(Secret::Env(value)),
            "_file" => Some(Secret::File(PathBuf::from(value))),
            "_command" => Some(Secret::Command(value)),
            _ => None,
        }
    }

    /// Whether it can be found now without running anything: the variable
    /// is set, the file is readable. Commands are run only when needed.
    ///
    /// # Errors
    ///
    /// What is missing, and how to provide it.
    pub fn check(&self) -> Result<()> {
        match self {
            Secret::Env(v) if std::env::var_os(v).is_none_or(|s| s.is_empty()) => Err(
                Error::InvalidInput(format!("the environment variable {v} is not set")),
            ),
            Secret::File(p) => std::fs::metadata(p)
                .map(|_| ())
                .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", p.display()))),
            _ => Ok(()),
        }
    }

    /// The secret's value.
    ///
    /// # Errors
    ///
    /// A variable that is not set, a file that cannot be read, a command
    /// that fails or prints nothing; the message never holds the value.
    pub fn resolve(&self) -> Result<String> {
        let value = match self {
            Secret::Inline(s) => s.clone(),
            Secret::Env(v) => std::env::var(v).map_err(|_| {
                Error::InvalidInput(format!("the environment variable {v} is not set"))
            })?,
            Secret::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::InvalidInput(format!("cannot read {}: {e}", p.display()))
                })?;
                text.lines().next().unwrap_or("").to_owned()
            }
            Secret::Command(c) => {
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(c)
                    .stdin(Stdio::null())
                    .stderr(Stdio::inherit())
                    .output()
                    .map_err(|e| Error::InvalidInput(format!("cannot run {c:?}: {e}")))?;
                if !out.status.success() {
                    return Err(Error::InvalidInput(format!(
                        "the secret command {c:?} failed ({})",
                        out.status
                    )));
                }
                let text = String::from_utf8(out.stdout).map_err(|_| {
                    Error::InvalidInput(format!("the secret command {c:?} printed non-UTF-8"))
                })?;
                text.lines().next().unwrap_or("").to_owned()
            }
        };
        if value.is_empty() {
            return Err(Error::InvalidInput(format!("{} is empty", self.source())));
        }
        Ok(value)
    }

    /// Where it comes from, for messages.
    fn source(&self) -> String {
        match self {
            Secret::Inline(_) => "the inline secret".into(),
            Secret::Env(v) => format!("${v}"),
            Secret::File(p) => format!("the first line of {}", p.display()),
            Secret::Command(c) => format!("the output of {c:?}"),
        }
    }
}

/// Whether an option of this name holds a secret: passwords, keys, tokens,
/// connection strings.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "secret", "token", "connection_string", "sas"]
        .iter()
        .any(|w| n.contains(w))
        || n == "key"
        || n.ends_with("_key")
}

/// Values to scrub from every message the runner prints or logs: the
/// resolved secrets of a run. A message from a backend that quoted a
/// secret back (a URL in an error) loses it here.
#[derive(Debug, Default, Clone)]
pub struct Scrubber {
    values: Vec<String>,
}

impl Scrubber {
    pub fn add(&mut self, value: &str) {
        // Very short values would scrub ordinary words; backends redact
        // their own messages, this is the second line of defence.
        if value.len() >= 4 && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_owned());
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_resolve_from_each_source_and_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\nsecond line\n").unwrap();
        assert_eq!(Secret::File(f.clone()).resolve().unwrap(), "from-file");
        assert_eq!(
            Secret::Command("printf 'from-cmd\\n'".into())
                .resolve()
                .unwrap(),
            "from-cmd"
        );
        assert_eq!(
            Secret::Env("PATH".into()).resolve().unwrap(),
            std::env::var("PATH").unwrap()
        );
        let e = Secret::Env("BACKUPKIT_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("BACKUPKIT_TEST_SURELY_UNSET is not set"),
            "{e}"
        );
        assert!(
            Secret::Env("BACKUPKIT_TEST_SURELY_UNSET".into())
                .check()
                .is_err()
        );
        let e = Secret::Command("exit 3".into()).resolve().unwrap_err();
        assert!(e.to_string().contains("failed"), "{e}");
        let e = Secret::Command("true".into()).resolve().unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let shown = format!("{:?}", Secret::Inline("hunter22".into()));
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(is_secret_name("smtp_password") && is_secret_name("secret_access_key"));
        assert!(is_secret_name("account_key") && !is_secret_name("identity_file"));
        assert!(!is_secret_name("region") && !is_secret_name("access_key_id"));
        let mut s = Scrubber::default();
        s.add("hunter22");
        s.add("ab");
        assert_eq!(s.scrub("login hunter22 failed: ab"), "login *** failed: ab");
    }
}
