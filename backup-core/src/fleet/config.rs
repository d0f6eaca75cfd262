//! A job's `pull:` section: the devices, how they are discovered, the data
//! kinds, and the limits of a round.
//!
//! ```yaml
//! jobs:
//!   ethoscopes:
//!     pull:
//!       devices:
//!         - id: ETHOSCOPE_004
//!           url: ssh://ethoscope@192.168.1.104
//!       discover:
//!         url: http://node.local/devices     # or command: list-devices
//!         user: ethoscope
//!       discover_every: 5m
//!       kinds:
//!         results: {remote: /ethoscope_data/results, local: /data/results}
//!         videos: {remote: /ethoscope_data/videos, local: /data/videos}
//!       concurrency: 4
//!       timeout: 5m
//!       bwlimit: 10M
//!       host_keys: accept-new
//!       known_hosts: /var/lib/backupkit/known_hosts
//!       identity_file: /etc/ethoscope/keys/id_rsa
//!     every: 5m
//! ```

use std::time::Duration;

use crate::fleet::{
    CONCURRENCY, DISCOVER_EVERY, DataKind, Device, Discover, HostKeys, Pull, RETRIES, TIMEOUT,
    check_id,
};
use crate::jobs::doc::{Node, Value, join};
use crate::jobs::model::{Fields, Validator, parse_duration};

impl Validator<'_> {
    /// A job's `pull:`.
    pub(crate) fn pull(&mut self, node: &Node, path: &str) -> Option<Pull> {
        let f = self.fields(
            node,
            path,
            &[
                "devices",
                "discover",
                "discover_every",
                "kinds",
                "concurrency",
                "timeout",
                "retries",
                "bwlimit",
                "bwlimit_total",
                "host_keys",
                "known_hosts",
                "identity_file",
                "options",
                "verify",
            ],
        )?;
        let devices = f
            .get("devices")
            .map(|n| self.devices(n, &f.key("devices")))
            .unwrap_or_default();
        let every = self
            .duration(&f, "discover_every")
            .unwrap_or(DISCOVER_EVERY);
        let discover = f
            .get("discover")
            .and_then(|n| self.discover(n, &f.key("discover"), every));
        if devices.is_empty() && discover.is_none() && f.get("devices").is_none() {
            self.problem(
                f.at,
                path,
                "needs `devices:` (a list of {id, url}) or `discover:` (a command or url)",
            );
        }
        let kinds = if let Some(n) = f.get("kinds") {
            self.kinds(n, &f.key("kinds"))
        } else {
            self.problem(
                f.at,
                path,
                "needs `kinds:` (each with `remote:` on the device and `local:`)",
            );
            Vec::new()
        };
        let concurrency = self.count(&f, "concurrency").map_or(CONCURRENCY, |c| {
            if c == 0 {
                let at = f.get("concurrency").map_or(f.at, |n| n.at);
                self.problem(at, &f.key("concurrency"), "must be at least 1");
            }
            c.max(1) as usize
        });
        let timeout = self.duration(&f, "timeout").unwrap_or(TIMEOUT);
        let retries = self.count(&f, "retries").unwrap_or(RETRIES);
        let bwlimit = self.rate(&f, "bwlimit");
        let bwlimit_total = self.rate(&f, "bwlimit_total");
        let host_keys = self.host_keys(&f);
        let known_hosts = self.string(&f, "known_hosts").map(|p| self.path(&p));
        let identity_file = self.string(&f, "identity_file").map(|p| self.path(&p));
        let options = self.options(&f);
        let verify = self.string(&f, "verify").and_then(|v| match v.parse() {
            Ok(m) => Some(m),
            Err(e) => {
                let at = f.get("verify").map_or(f.at, |n| n.at);
                self.problem(at, &f.key("verify"), crate::jobs::model::plain(&e));
                None
            }
        });
        Some(Pull {
            devices,
            discover,
            kinds,
            concurrency,
            timeout,
            retries,
            bwlimit,
            bwlimit_total,
            host_keys,
            known_hosts,
            identity_file,
            options,
            verify,
        })
    }

    fn host_keys(&mut self, f: &Fields) -> HostKeys {
        match self.string(f, "host_keys").as_deref() {
            None | Some("strict") => HostKeys::Strict,
            Some("accept-new") => HostKeys::AcceptNew,
            Some(other) => {
                let at = f.get("host_keys").map_or(f.at, |n| n.at);
                self.problem(
                    at,
                    &f.key("host_keys"),
                    format!(
                        "{other:?}: expected strict (known devices only) or accept-new (record \
                         a new device's key, refuse a changed one); trusting any key is not \
                         offered"
                    ),
                );
                HostKeys::Strict
            }
        }
    }

    fn duration(&mut self, f: &Fields, name: &str) -> Option<Duration> {
        let node = f.get(name)?;
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => format!("{i}s"),
            other => {
                self.problem(
                    node.at,
                    &f.key(name),
                    format!(
                        "expected a duration such as 30s or 5m, found {}",
                        other.kind()
                    ),
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) if d >= Duration::from_secs(1) => Some(d),
            Ok(_) => {
                self.problem(node.at, &f.key(name), "must be at least 1s");
                None
            }
            Err(e) => {
                self.problem(node.at, &f.key(name), crate::jobs::model::plain(&e));
                None
            }
        }
    }

    fn rate(&mut self, f: &Fields, name: &str) -> Option<u64> {
        let node = f.get(name)?;
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => {
                self.problem(
                    node.at,
                    &f.key(name),
                    format!("expected a rate such as 10M, found {}", other.kind()),
                );
                return None;
            }
        };
        match crate::mirror::parse_rate(&text) {
            Ok(r) => Some(r),
            Err(e) => {
                self.problem(node.at, &f.key(name), crate::jobs::model::plain(&e));
                None
            }
        }
    }

    /// `devices:`: a list of `{id, url, name}`, or a mapping of ids to URLs.
    fn devices(&mut self, node: &Node, path: &str) -> Vec<Device> {
        let mut out: Vec<Device> = Vec::new();
        let mut add = |v: &mut Self, d: Device, at, key: &str| {
            if let Err(e) = check_id(&d.id) {
                v.problem(at, key, e);
            } else if out.iter().any(|o| o.id == d.id) {
                v.problem(at, key, format!("device {:?} is listed twice", d.id));
            } else {
                out.push(d);
            }
        };
        match &node.value {
            Value::List(items) => {
                for (i, n) in items.iter().enumerate() {
                    let key = format!("{path}[{i}]");
                    let Some(f) = self.fields(n, &key, &["id", "url", "name"]) else {
                        continue;
                    };
                    let (Some(id), Some(url)) = (self.string(&f, "id"), self.string(&f, "url"))
                    else {
                        self.problem(n.at, &key, "a device needs `id:` and `url:`");
                        continue;
                    };
                    let name = self.string(&f, "name");
                    self.device_url(&url, n.at, &join(&key, "url"));
                    add(self, Device { id, name, url }, n.at, &key);
                }
            }
            Value::Map(entries) => {
                for (k, n) in entries {
                    let key = join(path, &k.name);
                    let Value::Str(url) = &n.value else {
                        self.problem(n.at, &key, "expected the device's ssh:// URL");
                        continue;
                    };
                    self.device_url(url, n.at, &key);
                    let d = Device {
                        id: k.name.clone(),
                        name: None,
                        url: url.trim_end_matches('/').to_owned(),
                    };
                    add(self, d, k.at, &key);
                }
            }
            other => self.problem(
                node.at,
                path,
                format!(
                    "expected a list of devices ({{id, url}}), found {}",
                    other.kind()
                ),
            ),
        }
        out
    }

    fn device_url(&mut self, url: &str, at: crate::jobs::doc::Pos, key: &str) {
        if let Err(why) = self.registry_check(url, true) {
            self.problem(at, key, why);
        }
    }

    fn discover(&mut self, node: &Node, path: &str, every: Duration) -> Option<Discover> {
        let f = self.fields(node, path, &["command", "url", "user", "port", "timeout"])?;
        let command = self.string(&f, "command");
        let url = self.string(&f, "url");
        if let (Some(u), Some(n)) = (&url, f.get("url"))
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            self.problem(n.at, &f.key("url"), "expected an http:// or https:// URL");
        }
        if command.is_none() && url.is_none() {
            self.problem(f.at, path, "needs `command:` or `url:`");
            return None;
        }
        let user = self.string(&f, "user");
        let port = self.count(&f, "port").and_then(|p| u16::try_from(p).ok());
        let timeout = self
            .duration(&f, "timeout")
            .unwrap_or(Duration::from_secs(60));
        Some(Discover {
            command,
            url,
            user,
            port,
            every,
            timeout,
        })
    }

    fn kinds(&mut self, node: &Node, path: &str) -> Vec<DataKind> {
        let Some(entries) = self.entries(node, path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, n) in entries {
            let key = join(path, &k.name);
            let Some(f) = self.fields(n, &key, &["remote", "local"]) else {
                continue;
            };
            let (Some(remote), Some(local)) = (self.string(&f, "remote"), self.string(&f, "local"))
            else {
                self.problem(
                    n.at,
                    &key,
                    "a kind needs `remote:` (its directory on the device) and `local:`",
                );
                continue;
            };
            let local = if local.contains("://") {
                local
            } else {
                self.path(&local).display().to_string()
            };
            out.push(DataKind {
                name: k.name.clone(),
                remote,
                local,
            });
        }
        if out.is_empty() && !entries.is_empty() {
            return out;
        }
        if entries.is_empty() {
            self.problem(node.at, path, "no kinds: add at least one");
        }
        out
    }
}

/// A pull job's settings for `config show`.
pub(crate) fn view(p: &Pull) -> serde_json::Value {
    use serde_json::json;
    let secs = |d: Duration| crate::schedule::interval(d);
    let mut v = json!({
        "devices": p.devices.iter().map(|d| json!({
            "id": d.id, "name": d.name, "url": crate::registry::redact(&d.url),
        })).collect::<Vec<_>>(),
        "kinds": p.kinds.iter().map(|k| (k.name.clone(), json!({
            "remote": k.remote, "local": crate::registry::redact(&k.local),
        }))).collect::<serde_json::Map<_, _>>(),
        "concurrency": p.concurrency,
        "timeout": secs(p.timeout),
        "retries": p.retries,
        "host_keys": p.host_keys.as_str(),
    });
    if let Some(d) = &p.discover {
        v["discover"] = json!({
            "command": d.command,
            "url": d.url.as_deref().map(crate::registry::redact),
            "user": d.user,
            "port": d.port,
            "timeout": secs(d.timeout),
        });
        v["discover_every"] = json!(secs(d.every));
    }
    for (k, r) in [("bwlimit", p.bwlimit), ("bwlimit_total", p.bwlimit_total)] {
        if let Some(r) = r {
            v[k] = json!(format!("{}/s", crate::progress::human_bytes(r)));
        }
    }
    if let Some(k) = &p.known_hosts {
        v["known_hosts"] = json!(k.display().to_string());
    }
    if let Some(k) = &p.identity_file {
        v["identity_file"] = json!(k.display().to_string());
    }
    if !p.options.is_empty() {
        v["options"] = crate::jobs::model::options_view(&p.options);
    }
    v
}
