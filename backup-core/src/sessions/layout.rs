//! Path templates: where a session lives on each side.
//!
//! A template is a relative path whose segments hold `{name}` variables
//! and literal text: `{participant_id}/{session_date}` at the source,
//! `{session_date}/{participant_id}` at the destination (seed 003's
//! inverted layout). A session is one match of the source template below
//! the source base; its variables, substituted into the destination
//! template, give its place there.
//!
//! # Contract
//!
//! - Matching is exact and deterministic: each segment matches one path
//!   component; a variable takes at least one character and stops at the
//!   first occurrence of the literal text that follows it.
//! - A layout never maps two sessions to one destination: the destination
//!   uses every source variable, each destination segment holds at most
//!   one variable (values hold no `/`, so segments decode uniquely), and
//!   uses no variable the source lacks. Anything else is refused when the
//!   layout is built, with the reason.
//! - Values are checked before they are used in a path: no `.`, `..`,
//!   empty or control-character values.
//! - Date variables (named `date` or ending in `_date`) parse `YYYYMMDD`
//!   and `YYYY-MM-DD`, so that sessions can be selected by date range; a
//!   directory whose date does not parse is not a session.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;

use crate::{Error, Result};

/// One piece of a template segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// A parsed template: segments of pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Vec<Piece>>,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Template {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidInput(format!("path template {text:?}: {why}"));
        let trimmed = text.trim_matches('/');
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        let mut segments = Vec::new();
        for seg in trimmed.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(bad("it has an empty, `.` or `..` segment"));
            }
            let mut pieces = Vec::new();
            let mut rest = seg;
            while !rest.is_empty() {
                match rest.find('{') {
                    Some(0) => {
                        let end = rest.find('}').ok_or_else(|| bad("a `{` is not closed"))?;
                        let name = &rest[1..end];
                        let valid = !name.is_empty()
                            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                        if !valid {
                            return Err(bad(&format!(
                                "{{{name}}} is not a variable name (letters, digits, `_`)"
                            )));
                        }
                        if matches!(pieces.last(), Some(Piece::Var(_))) {
                            return Err(bad("two variables touch: put literal text between them"));
                        }
                        pieces.push(Piece::Var(name.to_owned()));
                        rest = &rest[end + 1..];
                    }
                    Some(i) => {
                        pieces.push(Piece::Text(rest[..i].to_owned()));
                        rest = &rest[i..];
                    }
                    None => {
                        if rest.contains('}') {
                            return Err(bad("a `}` has no `{`"));
                        }
                        pieces.push(Piece::Text(rest.to_owned()));
                        rest = "";
                    }
                }
            }
            segments.push(pieces);
        }
        let t = Self {
            text: trimmed.to_owned(),
            segments,
        };
        let mut seen = Vec::new();
        for v in t.variables() {
            if seen.contains(&v) {
                return Err(bad(&format!("{{{v}}} appears twice")));
            }
            seen.push(v);
        }
        Ok(t)
    }
}

impl Template {
    /// The variables, in order.
    pub fn variables(&self) -> Vec<&str> {
        self.segments
            .iter()
            .flatten()
            .filter_map(|p| match p {
                Piece::Var(v) => Some(v.as_str()),
                Piece::Text(_) => None,
            })
            .collect()
    }

    /// How many path components a match spans.
    pub fn depth(&self) -> usize {
        self.segments.len()
    }

    /// Matches path component `i` of a session path against segment `i`;
    /// adds what it captures to `vars`.
    pub fn match_segment(&self, i: usize, name: &str, vars: &mut Vars) -> bool {
        let Some(pieces) = self.segments.get(i) else {
            return false;
        };
        let mut rest = name;
        let mut captured = Vec::new();
        for (k, p) in pieces.iter().enumerate() {
            match p {
                Piece::Text(t) => match rest.strip_prefix(t.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                },
                Piece::Var(v) => {
                    // At least one character, then up to the next text.
                    let Some(first) = rest.chars().next().map(char::len_utf8) else {
                        return false;
                    };
                    let end = match pieces.get(k + 1) {
                        Some(Piece::Text(next)) => match rest[first..].find(next.as_str()) {
                            Some(at) => at + first,
                            None => return false,
                        },
                        _ => rest.len(),
                    };
                    if end == 0 {
                        return false;
                    }
                    captured.push((v.clone(), rest[..end].to_owned()));
                    rest = &rest[end..];
                }
            }
        }
        if !rest.is_empty() {
            return false;
        }
        for (k, v) in captured {
            // A date variable holds a date, or this is not a session.
            if check_value(&v).is_err() || (is_date_variable(&k) && parse_date(&v).is_none()) {
                return false;
            }
            vars.insert(k, v);
        }
        true
    }

    /// The relative path for these variables.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a variable that is missing or whose value
    /// could not be a path component.
    pub fn render(&self, vars: &Vars) -> Result<String> {
        let mut out = Vec::with_capacity(self.segments.len());
        for seg in &self.segments {
            let mut s = String::new();
            for p in seg {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Var(v) => {
                        let value = vars.get(v).ok_or_else(|| {
                            Error::InvalidInput(format!("no value for {{{v}}} in {}", self.text))
                        })?;
                        check_value(value)?;
                        s.push_str(value);
                    }
                }
            }
            out.push(s);
        }
        Ok(out.join("/"))
    }
}

/// A session's variables, by name.
pub type Vars = BTreeMap<String, String>;

/// Whether a value can stand in a path: no `/`, not `.`/`..`, no control
/// characters, not empty.
fn check_value(v: &str) -> Result<()> {
    if v.is_empty() || v == "." || v == ".." || v.contains('/') || v.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "{v:?} cannot be part of a session path"
        )));
    }
    Ok(())
}

/// Whether a variable holds a date (`date`, `session_date`, ...).
pub fn is_date_variable(name: &str) -> bool {
    name == "date" || name.ends_with("_date")
}

/// A date as sessions write it: `YYYYMMDD` or `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y%m%d")
        .ok()
        .filter(|_| s.len() == 8)
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .filter(|_| s.len() == 10)
        })
}

/// A source template and a destination template that fit together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub source: Template,
    pub dest: Template,
}

impl Layout {
    /// Checks that every session maps to a place of its own.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the variable or segment at fault.
    pub fn new(source: Template, dest: Template) -> Result<Self> {
        let captured = source.variables();
        let used = dest.variables();
        if captured.is_empty() {
            return Err(Error::InvalidInput(format!(
                "the source template {source} has no variables: every session would be the same"
            )));
        }
        if let Some(v) = used.iter().find(|v| !captured.contains(v)) {
            return Err(Error::InvalidInput(format!(
                "the destination template {dest} uses {{{v}}}, which the source template \
                 {source} does not capture"
            )));
        }
        if let Some(v) = captured.iter().find(|v| !used.contains(v)) {
            return Err(Error::InvalidInput(format!(
                "the destination template {dest} leaves out {{{v}}}: sessions that differ only \
                 in it would go to one place"
            )));
        }
        for seg in &dest.segments {
            let vars = seg.iter().filter(|p| matches!(p, Piece::Var(_))).count();
            if vars > 1 {
                return Err(Error::InvalidInput(format!(
                    "the destination template {dest} puts two variables in one path segment: \
                     values such as \"a_b\" could map two sessions to one place; give each its \
                     own segment"
                )));
            }
        }
        Ok(Self { source, dest })
    }

    /// Where a session's files go, relative to the destination base.
    ///
    /// # Errors
    ///
    /// As [`Template::render`].
    pub fn dest_path(&self, vars: &Vars) -> Result<String> {
        self.dest.render(vars)
    }
}

/// Keeps the sessions the seed's filters allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Per variable: the value must start with one of these
    /// (`participant_prefixes` is this for `participant_id`).
    pub prefixes: BTreeMap<String, Vec<String>>,
    /// Per variable: the value must match this glob.
    pub patterns: BTreeMap<String, String>,
    /// Inclusive date range on the date variable.
    pub start: Option<NaiveDate>,
    pub end: Option<NaiveDate>,
}

impl Filter {
    /// Whether a session with these variables is kept; a session whose
    /// date variable does not parse is dropped when a range is given.
    pub fn keeps(&self, vars: &Vars) -> bool {
        for (name, prefixes) in &self.prefixes {
            let Some(v) = vars.get(name) else {
                return false;
            };
            if !prefixes.iter().any(|p| v.starts_with(p.as_str())) {
                return false;
            }
        }
        for (name, pattern) in &self.patterns {
            let Some(v) = vars.get(name) else {
                return false;
            };
            let Ok(glob) = globset::Glob::new(pattern) else {
                return false;
            };
            if !glob.compile_matcher().is_match(v) {
                return false;
            }
        }
        if self.start.is_some() || self.end.is_some() {
            let Some(date) = session_date(vars) else {
                return false;
            };
            if self.start.is_some_and(|s| date < s) || self.end.is_some_and(|e| date > e) {
                return false;
            }
        }
        true
    }
}

/// The session's date: its first date variable that parses.
pub fn session_date(vars: &Vars) -> Option<NaiveDate> {
    vars.iter()
        .filter(|(k, _)| is_date_variable(k))
        .find_map(|(_, v)| parse_date(v))
}

/// A session found below the source base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub vars: Vars,
    /// Its path relative to the source base.
    pub path: String,
}

/// Finds every session below `base` (a local directory): each directory
/// whose path relative to `base` matches the source template and passes
/// the filter, sorted by date, then path.
///
/// # Errors
///
/// A base that cannot be read; unreadable directories below it are
/// skipped (their sessions are not found, which is never unsafe).
pub fn discover(
    base: &std::path::Path,
    template: &Template,
    filter: &Filter,
) -> Result<Vec<Session>> {
    let mut found = Vec::new();
    let mut frontier: Vec<(std::path::PathBuf, Vec<String>, Vars)> =
        vec![(base.to_path_buf(), Vec::new(), Vars::new())];
    for depth in 0..template.depth() {
        let mut next = Vec::new();
        for (dir, parts, vars) in frontier {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if depth == 0 => {
                    return Err(Error::io("list", base.display().to_string(), e));
                }
                Err(_) => continue,
            };
            for entry in entries.flatten() {
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !is_dir {
                    continue;
                }
                let mut v = vars.clone();
                if template.match_segment(depth, &name, &mut v) {
                    let mut p = parts.clone();
                    p.push(name);
                    next.push((entry.path(), p, v));
                }
            }
        }
        frontier = next;
    }
    for (_, parts, vars) in frontier {
        if filter.keeps(&vars) {
            found.push(Session {
                path: parts.join("/"),
                vars,
            });
        }
    }
    found.sort_by(|a, b| {
        session_date(&a.vars)
            .cmp(&session_date(&b.vars))
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        s.parse().unwrap()
    }

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_seeds_inverted_layout_maps_each_session() {
        let l = Layout::new(
            t("{participant_id}/{session_date}"),
            t("{session_date}/{participant_id}"),
        )
        .unwrap();
        let mut v = Vars::new();
        assert!(l.source.match_segment(0, "p001", &mut v));
        assert!(l.source.match_segment(1, "20250104", &mut v));
        assert_eq!(l.dest_path(&v).unwrap(), "20250104/p001");
        assert_eq!(session_date(&v), NaiveDate::from_ymd_opt(2025, 1, 4));
    }

    #[test]
    fn segments_with_text_match_exactly() {
        let s = t("sub-{participant_id}/ses-{session_date}_run{run}");
        let mut v = Vars::new();
        assert!(s.match_segment(0, "sub-p01", &mut v));
        assert!(s.match_segment(1, "ses-2025-01-04_run2", &mut v));
        assert_eq!(
            v,
            vars(&[
                ("participant_id", "p01"),
                ("session_date", "2025-01-04"),
                ("run", "2")
            ])
        );
        let mut w = Vars::new();
        assert!(!s.match_segment(0, "p01", &mut w));
        assert!(!s.match_segment(0, "sub-", &mut w));
        assert!(!s.match_segment(1, "ses-2025_run", &mut w));
        assert_eq!(parse_date("2025-01-04"), parse_date("20250104"));
        assert_eq!(parse_date("2025014"), None);
        assert_eq!(parse_date("20251304"), None);
    }

    #[test]
    fn layouts_that_could_collide_or_invent_are_refused() {
        let src = "{participant_id}/{session_date}";
        for (dest, says) in [
            ("{session_date}", "leaves out {participant_id}"),
            ("{session_date}/{participant_id}/{camera}", "uses {camera}"),
            (
                "{session_date}_{participant_id}",
                "two variables in one path segment",
            ),
        ] {
            let e = Layout::new(t(src), t(dest)).unwrap_err().to_string();
            assert!(e.contains(says), "{dest}: {e}");
        }
        for (bad, says) in [
            ("{a}{b}", "touch"),
            ("{a}/../{b}", "`..`"),
            ("{a}/{a}", "twice"),
            ("{1x}", "not a variable name"),
            ("{a", "not closed"),
            ("", "empty"),
        ] {
            let e = bad.parse::<Template>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = Layout::new(t("data"), t("x")).unwrap_err().to_string();
        assert!(e.contains("no variables"), "{e}");
        assert!(t("{a}").render(&vars(&[("a", "..")])).is_err());
    }

    #[test]
    fn discovery_finds_filtered_sessions_in_date_order() {
        let dir = tempfile::tempdir().unwrap();
        for p in [
            "p001/20250104",
            "p001/20250220",
            "m7/20250110",
            "x9/20250104",
            "p001/notes",
            "p002/2025-01-05",
        ] {
            std::fs::create_dir_all(dir.path().join(p)).unwrap();
        }
        std::fs::write(dir.path().join("p001/20250301"), "a file, not a session").unwrap();
        let tpl = t("{participant_id}/{session_date}");
        let mut f = Filter::default();
        f.prefixes
            .insert("participant_id".into(), vec!["p".into(), "m".into()]);
        let all: Vec<String> = discover(dir.path(), &tpl, &f)
            .unwrap()
            .into_iter()
            .map(|s| s.path)
            .collect();
        // "p001/notes" is no session (no date), x9 is filtered out.
        assert_eq!(
            all,
            [
                "p001/20250104",
                "p002/2025-01-05",
                "m7/20250110",
                "p001/20250220"
            ]
        );
        f.start = NaiveDate::from_ymd_opt(2025, 1, 5);
        f.end = NaiveDate::from_ymd_opt(2025, 1, 31);
        let ranged: Vec<String> = discover(dir.path(), &tpl, &f)
            .unwrap()
            .into_iter()
            .map(|s| s.path)
            .collect();
        assert_eq!(ranged, ["p002/2025-01-05", "m7/20250110"]);
        f.patterns.insert("participant_id".into(), "p00?".into());
        let patterned = discover(dir.path(), &tpl, &f).unwrap();
        assert_eq!(patterned.len(), 1);
        assert!(discover(&dir.path().join("missing"), &tpl, &f).is_err());
    }
}
