//! The `sessions:` section of a config file: named session sets, each a
//! source base with its layout, filters, and destinations with layouts of
//! their own.
//!
//! ```yaml
//! sessions:
//!   recordings:
//!     source: /data
//!     layout: "{participant_id}/{session_date}"
//!     filters:
//!       participant_prefixes: [m, p, b, s, TR, TF]
//!       exclude_patterns: ["*.tmp", "*.lock"]
//!     videos: "*.mp4"
//!     destinations:
//!       cottonlab:
//!         mirror: /mnt/CottonLab/mobile_system_data
//!         layout: "{session_date}/{participant_id}"
//!         options: {mount_point: /mnt/CottonLab}
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::jobs::doc::{Node, Value, join};
use crate::jobs::model::{OptionValue, Validator};
use crate::sessions::layout::{Filter, Layout, Template};

/// A named set of sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSet {
    pub name: String,
    /// The local base the sessions are found below.
    pub source: PathBuf,
    pub layout: Template,
    pub filter: Filter,
    /// Globs of files never synced, verified or deleted (`*.tmp`).
    pub excludes: Vec<String>,
    /// The files counted as videos in status tables (`*.mp4`).
    pub videos: String,
    pub destinations: Vec<SessionDestination>,
    /// The external check that a session was imported.
    pub imported: Option<crate::sessions::status::ImportCheck>,
}

/// Where a set's sessions are mirrored, with its own layout.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDestination {
    pub name: String,
    pub enabled: bool,
    /// The destination base (any mirror location).
    pub location: String,
    pub layout: Layout,
    pub options: BTreeMap<String, OptionValue>,
}

impl Validator<'_> {
    /// `sessions:`, a mapping of set names to sets.
    pub(crate) fn session_sets(&mut self, node: &Node) -> Vec<SessionSet> {
        let Some(entries) = self.entries(node, "sessions") else {
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(k, n)| self.session_set(&k.name, n, &join("sessions", &k.name)))
            .collect()
    }

    fn session_set(&mut self, name: &str, node: &Node, path: &str) -> Option<SessionSet> {
        let f = self.fields(
            node,
            path,
            &[
                "source",
                "layout",
                "filters",
                "videos",
                "destinations",
                "imported",
            ],
        )?;
        let source = self.string(&f, "source").map(|s| self.path(&s));
        match (&source, f.get("source")) {
            (None, None) => self.problem(
                f.at,
                path,
                "needs `source: DIR` (where sessions are recorded)",
            ),
            (Some(s), Some(n)) if !s.is_dir() => self.problem(
                n.at,
                &f.key("source"),
                format!("{} is not a directory", s.display()),
            ),
            _ => {}
        }
        let layout = self.template(&f, "layout", path);
        let (filter, excludes) = match f.get("filters") {
            Some(n) => self.session_filters(n, &f.key("filters")),
            None => (Filter::default(), Vec::new()),
        };
        let videos = self.string(&f, "videos").unwrap_or_else(|| "*.mp4".into());
        if globset::Glob::new(&videos).is_err() {
            let at = f.get("videos").map_or(f.at, |n| n.at);
            self.problem(at, &f.key("videos"), "not a glob pattern");
        }
        let mut destinations = Vec::new();
        match f.get("destinations") {
            None => self.problem(
                f.at,
                path,
                "needs `destinations:` (where sessions are synced)",
            ),
            Some(n) => {
                if let Some(entries) = self.entries(n, &f.key("destinations")) {
                    for (k, d) in entries {
                        let dpath = join(&f.key("destinations"), &k.name);
                        if let Some(d) =
                            self.session_destination(&k.name, d, &dpath, layout.as_ref())
                        {
                            destinations.push(d);
                        }
                    }
                }
            }
        }
        let imported = f
            .get("imported")
            .and_then(|n| self.import_check(n, &f.key("imported")));
        Some(SessionSet {
            imported,
            name: name.to_owned(),
            source: source?,
            layout: layout?,
            filter,
            excludes,
            videos,
            destinations,
        })
    }

    pub(crate) fn template(
        &mut self,
        f: &crate::jobs::model::Fields,
        key: &str,
        path: &str,
    ) -> Option<Template> {
        let Some(text) = self.string(f, key) else {
            if f.get(key).is_none() {
                self.problem(
                    f.at,
                    path,
                    format!("needs `{key}:`, a path template such as \"{{participant_id}}/{{session_date}}\""),
                );
            }
            return None;
        };
        match text.parse::<Template>() {
            Ok(t) => Some(t),
            Err(e) => {
                let at = f.get(key).map_or(f.at, |n| n.at);
                self.problem(at, &f.key(key), plain(&e));
                None
            }
        }
    }

    pub(crate) fn import_check(
        &mut self,
        node: &Node,
        path: &str,
    ) -> Option<crate::sessions::status::ImportCheck> {
        let f = self.fields(
            node,
            path,
            &[
                "command",
                "timeout",
                "database",
                "password",
                "password_env",
                "password_file",
                "password_command",
                "queries",
            ],
        )?;
        let command = self.string(&f, "command");
        let queries = self.strings(&f, "queries");
        let password = self.secret(&f, "password");
        let database = match (self.string(&f, "database"), f.get("database")) {
            (Some(given), Some(n)) => {
                match self.database(
                    &given,
                    None,
                    Some("imported".into()),
                    n.at,
                    &f.key("database"),
                ) {
                    Some(crate::jobs::model::Source::Database { url, .. }) => Some(url),
                    _ => None,
                }
            }
            _ => None,
        };
        if command.is_none() && f.get("database").is_none() {
            self.problem(
                f.at,
                path,
                "needs `command:` (exit 0 means imported; {name} is a session value) or \
                 `database:` with `queries:`",
            );
        }
        if f.get("database").is_some() && queries.is_empty() {
            self.problem(
                f.at,
                path,
                "`database:` needs `queries:`, each returning a row for an imported session \
                 (:name is a session value)",
            );
        }
        let timeout = match f.get("timeout") {
            Some(n) => match &n.value {
                Value::Str(t) => crate::jobs::model::parse_duration(t).ok(),
                Value::Int(i) => u64::try_from(*i).ok().map(std::time::Duration::from_secs),
                _ => None,
            }
            .unwrap_or_else(|| {
                self.problem(n.at, &f.key("timeout"), "expected a duration such as 30s");
                std::time::Duration::from_secs(60)
            }),
            None => std::time::Duration::from_secs(60),
        };
        Some(crate::sessions::status::ImportCheck {
            command,
            timeout,
            database,
            password,
            queries,
        })
    }

    pub(crate) fn session_filters(&mut self, node: &Node, path: &str) -> (Filter, Vec<String>) {
        let mut filter = Filter::default();
        let Some(f) = self.fields(
            node,
            path,
            &[
                "participant_prefixes",
                "prefixes",
                "patterns",
                "exclude_patterns",
            ],
        ) else {
            return (filter, Vec::new());
        };
        let prefixes = self.strings(&f, "participant_prefixes");
        if !prefixes.is_empty() {
            filter.prefixes.insert("participant_id".into(), prefixes);
        }
        for (field, target) in [("prefixes", true), ("patterns", false)] {
            let Some(n) = f.get(field) else { continue };
            let Some(entries) = self.entries(n, &f.key(field)) else {
                continue;
            };
            for (k, v) in entries {
                let key = join(&f.key(field), &k.name);
                if target {
                    let list = match &v.value {
                        Value::Str(s) => vec![s.clone()],
                        Value::List(items) => items
                            .iter()
                            .filter_map(|i| match &i.value {
                                Value::Str(s) => Some(s.clone()),
                                _ => None,
                            })
                            .collect(),
                        other => {
                            self.problem(
                                v.at,
                                &key,
                                format!("expected a list of prefixes, found {}", other.kind()),
                            );
                            continue;
                        }
                    };
                    filter.prefixes.insert(k.name.clone(), list);
                } else {
                    match &v.value {
                        Value::Str(s) if globset::Glob::new(s).is_ok() => {
                            filter.patterns.insert(k.name.clone(), s.clone());
                        }
                        _ => self.problem(v.at, &key, "expected a glob pattern such as \"p*\""),
                    }
                }
            }
        }
        let excludes = self.strings(&f, "exclude_patterns");
        (filter, excludes)
    }

    fn session_destination(
        &mut self,
        name: &str,
        node: &Node,
        path: &str,
        source: Option<&Template>,
    ) -> Option<SessionDestination> {
        let f = self.fields(node, path, &["mirror", "layout", "enabled", "options"])?;
        let enabled = self.boolean(&f, "enabled", true);
        let location = self.string(&f, "mirror");
        if location.is_none() && f.get("mirror").is_none() {
            self.problem(
                f.at,
                path,
                "needs `mirror: LOCATION` (the destination's base)",
            );
        }
        let location = location.map(|l| {
            if crate::Registry::scheme_of(&l) == crate::registry::LOCAL_SCHEME {
                self.path(&l).display().to_string()
            } else {
                l
            }
        });
        if let (Some(l), Some(n)) = (&location, f.get("mirror"))
            && let Err(e) = self.registry_check(l, true)
        {
            self.problem(n.at, &f.key("mirror"), e);
        }
        let dest = self.template(&f, "layout", path);
        let layout = match (source, dest) {
            (Some(s), Some(d)) => match Layout::new(s.clone(), d) {
                Ok(l) => Some(l),
                Err(e) => {
                    let at = f.get("layout").map_or(f.at, |n| n.at);
                    self.problem(at, &f.key("layout"), plain(&e));
                    None
                }
            },
            _ => None,
        };
        let options = self.options(&f);
        Some(SessionDestination {
            name: name.to_owned(),
            enabled,
            location: location?,
            layout: layout?,
            options,
        })
    }
}

/// The set named `name`, or the only one when `name` is `None`.
///
/// # Errors
///
/// [`crate::Error::InvalidInput`] naming the config's sets (`what` is how
/// a caller names a set: `--set`, `set=`).
pub fn select<'s>(
    sets: &'s [SessionSet],
    name: Option<&str>,
    what: &str,
) -> crate::Result<&'s SessionSet> {
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    let found = match name {
        Some(n) => sets.iter().find(|s| s.name == n),
        None if sets.len() == 1 => sets.first(),
        None => None,
    };
    found.ok_or_else(|| {
        crate::Error::InvalidInput(match (name, names.is_empty()) {
            (_, true) => "the config has no `sessions:` section".into(),
            (Some(n), false) => {
                format!(
                    "no session set named {n:?} (the config's: {})",
                    names.join(", ")
                )
            }
            (None, false) => format!(
                "the config has several session sets ({}): choose one with {what}",
                names.join(", ")
            ),
        })
    })
}

/// The sets as `config show` prints them.
pub fn view(sets: &[SessionSet]) -> serde_json::Value {
    use serde_json::{Map, Value as J, json};
    let sets: Map<String, J> = sets
        .iter()
        .map(|set| {
            let dests: Map<String, J> = set
                .destinations
                .iter()
                .map(|d| {
                    let mut m = json!({
                        "mirror": crate::registry::redact(&d.location),
                        "layout": d.layout.dest.to_string(),
                    });
                    if !d.enabled {
                        m["enabled"] = J::Bool(false);
                    }
                    (d.name.clone(), m)
                })
                .collect();
            let f = &set.filter;
            let view = json!({
                "source": set.source.display().to_string(),
                "layout": set.layout.to_string(),
                "filters": {
                    "prefixes": f.prefixes,
                    "patterns": f.patterns,
                    "exclude_patterns": set.excludes,
                },
                "videos": set.videos,
                "destinations": dests,
            });
            (set.name.clone(), view)
        })
        .collect();
    J::Object(sets)
}

/// An error's message without its kind's prefix.
fn plain(e: &crate::Error) -> String {
    match e {
        crate::Error::InvalidInput(m) => m.clone(),
        other => other.to_string(),
    }
}
