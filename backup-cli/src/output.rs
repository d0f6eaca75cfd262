//! Output: results on stdout (text or JSON), logs and progress on stderr,
//! progress bars only on a terminal.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;

use backup_core::{Event, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much to say.
#[derive(Debug, Clone, Copy)]
pub struct Verbosity {
    pub quiet: bool,
    pub verbose: u8,
    pub json: bool,
}

/// Shows progress events as a bar (terminal), as log lines (`-v`), or not.
#[derive(Debug)]
pub struct Reporter {
    bar: Option<ProgressBar>,
    v: Verbosity,
    /// Print each mirror decision (a dry run's plan).
    plan: bool,
    warnings: Mutex<u64>,
}

impl Reporter {
    pub fn new(v: Verbosity) -> Self {
        let bar = (!v.quiet && !v.json && v.verbose == 0 && io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Self {
            bar,
            v,
            plan: false,
            warnings: Mutex::new(0),
        }
    }

    /// Also prints each mirror decision (on stdout: it is the result of a
    /// dry run), unless `--json` or `--quiet`.
    #[must_use]
    pub fn listing_plan(mut self, plan: bool) -> Self {
        self.plan = plan;
        self
    }

    fn log(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Reporter {
    fn wants_totals(&self) -> bool {
        self.bar.is_some()
    }

    fn event(&self, event: &Event) {
        match event {
            Event::Total { bytes, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(*bytes);
                }
            }
            Event::File { path, bytes } => {
                if let Some(bar) = &self.bar {
                    bar.inc(*bytes);
                }
                if self.v.verbose > 0 {
                    self.log(&shown(path));
                }
            }
            Event::Planned {
                action,
                path,
                reason,
                ..
            } if (self.plan || self.v.verbose > 0) && !self.v.quiet && !self.v.json => {
                let line = format!("{action:<7} {} ({reason})", shown(path));
                match &self.bar {
                    Some(bar) => bar.suspend(|| drop(out(&line))),
                    None => drop(out(&line)),
                }
            }
            Event::Warning { path, message } => {
                *self.warnings.lock().expect("counter") += 1;
                if !self.v.quiet {
                    self.log(&format!("warning: {}: {}", shown(path), shown(message)));
                }
            }
            _ => {}
        }
    }
}

/// A name as human output shows it: control characters (which could forge
/// lines or drive the terminal) and backslashes escaped as `\n`, `\t`,
/// `\r`, `\xNN` (`\u{NN}` for C1 controls) and `\\`, so that every
/// shown name is unambiguous. `--json` output carries names exactly.
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;
    if !name.chars().any(|c| c.is_control() || c == '\\') {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut s = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(s, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(s, "\\u{{{:x}}}", c as u32);
            }
            c => s.push(c),
        }
    }
    std::borrow::Cow::Owned(s)
}

/// Writes a result line to stdout.
pub fn out(line: impl AsRef<str>) -> io::Result<()> {
    let mut o = io::stdout().lock();
    o.write_all(line.as_ref().as_bytes())?;
    o.write_all(b"\n")
}

/// Writes a value as JSON to stdout.
pub fn json(value: &impl serde::Serialize) -> io::Result<()> {
    // Buffered: stdout flushes at every newline, and pretty JSON has one
    // per field (11,000 writes for a 300-session table).
    let mut o = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    serde_json::to_writer_pretty(&mut o, value)?;
    o.write_all(b"\n")?;
    o.flush()
}

pub use backup_core::progress::human_bytes;

/// Asks for a typed confirmation on a terminal; without a terminal, refuses
/// (never blocks a cron job or script on a prompt).
pub fn confirm(question: &str, word: &str) -> Result<bool, String> {
    if !io::stdin().is_terminal() {
        return Err(format!(
            "{question}: refusing without confirmation because stdin is not a terminal; pass --yes"
        ));
    }
    eprint!("{question}\nType {word:?} to confirm: ");
    let _ = io::stderr().flush();
    let mut answer = String::new();
    io::stdin()
        .read_line(&mut answer)
        .map_err(|e| format!("cannot read confirmation: {e}"))?;
    Ok(answer.trim() == word)
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_characters_and_backslashes_are_escaped() {
        assert_eq!(shown("plain/ünï.csv"), "plain/ünï.csv");
        assert_eq!(
            shown("a\nd0755 0 2020-01-01 /forged"),
            "a\\nd0755 0 2020-01-01 /forged"
        );
        assert_eq!(shown("\x1b[31mred\x07"), "\\x1b[31mred\\x07");
        assert_eq!(shown("tab\there\r"), "tab\\there\\r");
        assert_eq!(shown("back\\slash"), "back\\\\slash");
        assert_eq!(shown("c1\u{9b}x"), "c1\\u{9b}x");
        for s in ["\n", "\u{1b}", "\u{7f}", "\u{85}"] {
            assert!(!shown(s).chars().any(char::is_control), "{s:?}");
        }
    }
}
