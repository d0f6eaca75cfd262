//! Device fleets (seed 004): pull each device's data kinds (`results`,
//! `videos`) over SSH into local trees, many devices side by side, each on
//! its own.
//!
//! A pull job names its devices as a static list, a discovery command
//! that prints them as JSON, or a discovery URL that returns them (the
//! ethoscope node's `/devices`), rediscovered every `discover_every`. A
//! round ([`pull::round`]) pulls every selected device:
//!
//! - each device's kinds go through the mirror engine from the device's
//!   SFTP tree: incremental, every file whole at its final name or not at
//!   all, nothing deleted locally when a device deletes (its SD card is
//!   rotated; the backup keeps everything);
//! - at most `concurrency` devices at once, each with its bandwidth share;
//! - a device that stops answering for `timeout` is given up on for the
//!   round (even in the middle of a file), retried `retries` times with
//!   backoff when it could not be reached, and never holds up the others;
//! - the live state of every device (running with percent and rate, last
//!   success, last error) is kept in a [`status::FleetStatus`] that a
//!   status page reads.
//!
//! The destination layout keeps the device's own structure. With
//! `{device}` in a kind's local path, each device's tree goes below its own
//! directory. Without it (the seed's layout, where each device's tree
//! already starts with its own id, `{etho_id}/{ETHOSCOPE_XXX}/{timestamp}`),
//! the trees merge: each top-level directory of a device is a mirror of its
//! own, so devices pulled side by side never share a mirror's lock or
//! record.

pub mod config;
pub mod pull;
pub mod status;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::jobs::model::OptionValue;
use crate::mirror::VerifyMode;
use crate::{Error, Result};

/// A device to pull from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Its id: a name for paths, status and metrics (`ETHOSCOPE_004`, or
    /// the machine id a node reports).
    pub id: String,
    /// A friendlier name, where discovery gives one (`ETHOSCOPE_004`).
    pub name: Option<String>,
    /// `ssh://user@host[:port]` (or any tree location): the kinds' remote
    /// paths are below it.
    pub url: String,
}

impl Device {
    /// Whether `--device X` means this device: its id or its name, or the
    /// number at the end of either (`004` for `ETHOSCOPE_004`, as the
    /// seed's `-e 004`).
    pub fn matches(&self, wanted: &str) -> bool {
        let ends = |s: &str| {
            s == wanted
                || s.strip_suffix(wanted)
                    .is_some_and(|head| head.ends_with(['_', '-', '.']))
        };
        ends(&self.id) || self.name.as_deref().is_some_and(ends)
    }
}

/// Where devices come from besides the static list.
#[derive(Debug, Clone, PartialEq)]
pub struct Discover {
    /// A command (`sh -c`) that prints devices as JSON lines or one JSON
    /// document.
    pub command: Option<String>,
    /// An `http://` URL returning JSON (a list of devices, or an object of
    /// ids to devices, as the ethoscope node's `/devices`).
    pub url: Option<String>,
    /// The login for devices discovered with only a host (`ip`).
    pub user: Option<String>,
    /// The SSH port for those, if not 22.
    pub port: Option<u16>,
    /// How often the list is refreshed (5 minutes, as the seed).
    pub every: Duration,
    /// How long the command or URL may take.
    pub timeout: Duration,
}

/// Discovery every 5 minutes, as seed 004's service.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(300);

/// A data kind of every device: where it is on the device, where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataKind {
    /// `results`, `videos`.
    pub name: String,
    /// The directory on the device (`/ethoscope_data/results`).
    pub remote: String,
    /// The local directory (or any mirror location); `{device}` becomes
    /// the device's id.
    pub local: String,
}

impl DataKind {
    /// Whether each device gets a directory of its own (`{device}`).
    pub fn per_device(&self) -> bool {
        self.local.contains(DEVICE_FIELD)
    }

    /// The local location for `device`.
    pub fn local_for(&self, device: &Device) -> String {
        self.local.replace(DEVICE_FIELD, &device.id)
    }
}

/// The field of a kind's local path that becomes the device's id.
pub const DEVICE_FIELD: &str = "{device}";

/// How host keys of devices are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeys {
    /// Only devices whose key is already known (ssh's batch default).
    #[default]
    Strict,
    /// A device seen for the first time has its key recorded; a changed
    /// key is refused.
    AcceptNew,
}

impl HostKeys {
    pub fn as_str(self) -> &'static str {
        match self {
            HostKeys::Strict => "strict",
            HostKeys::AcceptNew => "accept-new",
        }
    }
}

/// A pull job's settings (`pull:` in a job).
#[derive(Debug, Clone, PartialEq)]
pub struct Pull {
    /// Devices listed in the config.
    pub devices: Vec<Device>,
    pub discover: Option<Discover>,
    /// In config order.
    pub kinds: Vec<DataKind>,
    /// Devices pulled at once.
    pub concurrency: usize,
    /// A device that answers nothing for this long is given up on for the
    /// round (rsync's `--timeout`).
    pub timeout: Duration,
    /// Further attempts for a device that could not be reached or dropped.
    pub retries: u32,
    /// Bytes per second per device.
    pub bwlimit: Option<u64>,
    /// Bytes per second for all devices together (shared among the
    /// devices pulled at once).
    pub bwlimit_total: Option<u64>,
    pub host_keys: HostKeys,
    pub known_hosts: Option<PathBuf>,
    pub identity_file: Option<PathBuf>,
    /// Further SSH options (`ssh_config`, `connect_timeout`, `transport`).
    pub options: BTreeMap<String, OptionValue>,
    /// Check each pulled kind afterwards.
    pub verify: Option<VerifyMode>,
}

/// Devices pulled at once by default.
pub const CONCURRENCY: usize = 4;
/// The seed's `rsync --timeout=300`.
pub const TIMEOUT: Duration = Duration::from_secs(300);
/// Further attempts by default.
pub const RETRIES: u32 = 2;

impl Pull {
    /// The bandwidth of one device: its own limit, and its share of the
    /// total among the devices pulled at once.
    pub fn device_bwlimit(&self, devices: usize) -> Option<u64> {
        let at_once = self.concurrency.clamp(1, devices.max(1)) as u64;
        let share = self.bwlimit_total.map(|t| (t / at_once).max(1));
        match (self.bwlimit, share) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Reads devices as a discovery command prints them or a discovery URL
/// returns them: one JSON document (a list of devices, an object of ids to
/// devices, or either under `"devices"`), or JSON lines of devices.
///
/// A device is an object with `id` (or the key it is under), an optional
/// `name`, and `url` (`ssh://user@host[:port]`) or `ip`/`host` with
/// optional `port` and `user` (else `discover.user` and `discover.port`).
/// Devices with `"active": false` or `"status": "offline"` are left out.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the line or entry that is not a device.
pub fn parse_devices(text: &str, discover: Option<&Discover>) -> Result<Vec<Device>> {
    let mut out = Vec::new();
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(doc) => entries(&doc, None, discover, &mut out, "the document")?,
        Err(_) => {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                    Error::InvalidInput(format!(
                        "discovery line {}: not JSON ({e}); expected one device per line, \
                         like {{\"id\": \"ETHOSCOPE_004\", \"url\": \"ssh://user@host\"}}",
                        i + 1
                    ))
                })?;
                entries(&v, None, discover, &mut out, &format!("line {}", i + 1))?;
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|d: &Device| seen.insert(d.id.clone()));
    Ok(out)
}

fn entries(
    v: &serde_json::Value,
    key: Option<&str>,
    discover: Option<&Discover>,
    out: &mut Vec<Device>,
    at: &str,
) -> Result<()> {
    use serde_json::Value;
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                entries(item, None, discover, out, &format!("{at}, entry {}", i + 1))?;
            }
            Ok(())
        }
        Value::Object(map) if key.is_none() && map.get("devices").is_some() => {
            entries(&map["devices"], None, discover, out, at)
        }
        Value::Object(map)
            if key.is_none()
                && !map.contains_key("id")
                && !map.is_empty()
                && map.values().all(Value::is_object) =>
        {
            for (k, item) in map {
                entries(item, Some(k), discover, out, &format!("{at}, {k:?}"))?;
            }
            Ok(())
        }
        Value::Object(map) => {
            if map.get("active") == Some(&Value::Bool(false))
                || map
                    .get("status")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case("offline"))
            {
                return Ok(());
            }
            let text = |k: &str| match map.get(k) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let bad = |why: &str| Error::InvalidInput(format!("discovery {at}: {why}"));
            let id = text("id")
                .or_else(|| key.map(str::to_owned))
                .ok_or_else(|| bad("a device without an `id`"))?;
            check_id(&id).map_err(|e| bad(&e))?;
            let url = match (text("url"), text("ip").or_else(|| text("host"))) {
                (Some(u), _) => u,
                (None, Some(host)) => {
                    let user = text("user").or_else(|| discover.and_then(|d| d.user.clone()));
                    let port = text("port")
                        .or_else(|| discover.and_then(|d| d.port.map(|p| p.to_string())));
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host
                    };
                    format!(
                        "ssh://{}{host}{}",
                        user.map(|u| format!("{u}@")).unwrap_or_default(),
                        port.map(|p| format!(":{p}")).unwrap_or_default()
                    )
                }
                (None, None) => {
                    return Err(bad(&format!(
                        "device {id:?} has neither `url` nor `ip`/`host`"
                    )));
                }
            };
            out.push(Device {
                id,
                name: text("name"),
                url: url.trim_end_matches('/').to_owned(),
            });
            Ok(())
        }
        other => Err(Error::InvalidInput(format!(
            "discovery {at}: expected a device object, found {}",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                _ => "something else",
            }
        ))),
    }
}

/// A device id: it names a directory, a status URL and a metrics label.
///
/// # Errors
///
/// Why it cannot be one.
pub fn check_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty()
        || id.starts_with('.')
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "device id {id:?} may hold only letters, digits, `-`, `_` and `.` (and not start \
             with `.`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover() -> Discover {
        Discover {
            command: None,
            url: None,
            user: Some("ethoscope".into()),
            port: None,
            every: DISCOVER_EVERY,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn devices_from_lines_lists_and_node_objects() {
        let lines = "{\"id\": \"ETHOSCOPE_004\", \"url\": \"ssh://e@10.0.0.4/\"}\n\n\
                     {\"id\": 7, \"ip\": \"10.0.0.7\", \"port\": 2222}\n";
        let d = parse_devices(lines, Some(&discover())).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].url, "ssh://e@10.0.0.4");
        assert_eq!(d[1].id, "7");
        assert_eq!(d[1].url, "ssh://ethoscope@10.0.0.7:2222");

        // The node's /devices: ids to devices, offline ones left out.
        let node = r#"{"a1b2": {"name": "ETHOSCOPE_001", "ip": "10.0.0.1", "status": "running"},
                       "c3d4": {"name": "ETHOSCOPE_002", "ip": "10.0.0.2", "status": "offline"},
                       "e5f6": {"name": "ETHOSCOPE_003", "ip": "fe80::3", "active": true}}"#;
        let d = parse_devices(node, Some(&discover())).unwrap();
        assert_eq!(
            d.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["a1b2", "e5f6"]
        );
        assert_eq!(d[0].name.as_deref(), Some("ETHOSCOPE_001"));
        assert_eq!(d[1].url, "ssh://ethoscope@[fe80::3]");

        let list = r#"{"devices": [{"id": "x", "url": "ssh://h"}, {"id": "x", "url": "ssh://g"}]}"#;
        assert_eq!(
            parse_devices(list, None).unwrap().len(),
            1,
            "ids are unique"
        );
        assert_eq!(parse_devices("", None).unwrap(), vec![]);
    }

    #[test]
    fn bad_discovery_output_names_where() {
        let e = parse_devices("{\"id\": \"a\", \"url\": \"ssh://h\"}\nnot json\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_devices(r#"[{"url": "ssh://h"}]"#, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 1") && e.contains("`id`"), "{e}");
        let e = parse_devices(r#"[{"id": "../x", "url": "ssh://h"}]"#, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("may hold only"), "{e}");
        let e = parse_devices(r#"[{"id": "a"}]"#, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither `url`"), "{e}");
        assert!(parse_devices("[3]", None).is_err());
    }

    #[test]
    fn device_selection_as_the_seed() {
        let d = Device {
            id: "a1b2".into(),
            name: Some("ETHOSCOPE_004".into()),
            url: "ssh://h".into(),
        };
        assert!(d.matches("004") && d.matches("ETHOSCOPE_004") && d.matches("a1b2"));
        assert!(!d.matches("04") && !d.matches("005") && !d.matches("b2"));
    }

    #[test]
    fn bandwidth_shares() {
        let mut p = Pull {
            devices: vec![],
            discover: None,
            kinds: vec![],
            concurrency: 4,
            timeout: TIMEOUT,
            retries: RETRIES,
            bwlimit: None,
            bwlimit_total: Some(8 << 20),
            host_keys: HostKeys::Strict,
            known_hosts: None,
            identity_file: None,
            options: BTreeMap::new(),
            verify: None,
        };
        assert_eq!(p.device_bwlimit(10), Some(2 << 20));
        assert_eq!(p.device_bwlimit(2), Some(4 << 20), "two devices share it");
        p.bwlimit = Some(1 << 20);
        assert_eq!(p.device_bwlimit(10), Some(1 << 20));
        p.bwlimit_total = None;
        assert_eq!(p.device_bwlimit(10), Some(1 << 20));
    }
}
