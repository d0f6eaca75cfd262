//! Object stores (S3 and S3-compatible stores, Azure Blob, Google Cloud
//! Storage) through `object_store`.
//!
//! The [`Target`] trait is synchronous; this module bridges to
//! `object_store`'s async API on one small tokio runtime shared by the
//! process. Writes stream in parts of [`PART_SIZE`] with at most
//! [`PARTS_IN_FLIGHT`] uploads in flight, so memory stays bounded whatever
//! the object's size; an object becomes visible only when its upload
//! completes, which is the atomic commit the trait asks for.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backup_core::registry::TargetOptions;
use backup_core::target::check_key;
use backup_core::{Error, ObjectMeta, ObjectWriter, Result, Target};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, BackoffConfig, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RetryConfig, WriteMultipart,
};

/// Size of one multipart upload part (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;
/// Part uploads in flight at once per object: with [`PART_SIZE`], at most
/// about 40 MiB of an object is in memory.
pub const PARTS_IN_FLIGHT: usize = 4;

/// The option keys backupkit itself reads; every other key goes to the
/// store's builder, which rejects keys it does not know.
const RETRIES: &str = "retries";
const RETRY_TIMEOUT: &str = "retry_timeout";

/// The longest object name the stores take (S3 and GCS: 1024 bytes; Azure:
/// 1024 characters). Longer ones could never be stored, and a request URL
/// past `http::Uri`'s limit makes `object_store` panic.
const MAX_KEY: usize = 1024;
/// The longest endpoint URL accepted.
const MAX_URL: usize = 2048;
/// What every endpoint message suggests.
const URL_EXAMPLE: &str = "expected a URL like http://127.0.0.1:9000";

/// The runtime every object store of this process runs on: two worker
/// threads are plenty for I/O that waits on the network.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("backupkit-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Backend {
            backend: "object store".into(),
            message: format!("cannot start the I/O runtime: {e}"),
            source: None,
        })
}

/// Which cloud a location names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// `s3://bucket/prefix`
    S3,
    /// `az://container/prefix` (also `azure://`)
    Azure,
    /// `gs://bucket/prefix`
    Gcs,
}

impl Cloud {
    fn name(self) -> &'static str {
        match self {
            Cloud::S3 => "S3",
            Cloud::Azure => "Azure Blob",
            Cloud::Gcs => "GCS",
        }
    }
}

/// A repository location in an object store.
pub struct CloudTarget {
    shared: Arc<Shared>,
    /// Key prefix inside the bucket: empty or ending with `/`.
    prefix: String,
}

/// What a target shares with its writers, which outlive borrows.
struct Shared {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix`, for messages.
    location: String,
    /// Option values that may be secrets, scrubbed from every message.
    secrets: Vec<String>,
    runtime: &'static tokio::runtime::Runtime,
}

impl fmt::Debug for CloudTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudTarget")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

/// Whether an option key names a secret (its value is never shown).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "key", "token", "password", "sas", "signature"]
        .iter()
        .any(|s| key.contains(s))
}

/// What a value on its way to `object_store` must look like. Its requests
/// go through two URL parsers (`http::Uri`, then `url::Url`) and panic, deep
/// inside a request, when either rejects the URL it built from endpoints,
/// bucket, region or account names; and they panic on a header value with a
/// line break. So every such value is checked here, before any is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    /// `http(s)://HOST[:PORT][/PATH]`: endpoints.
    Url,
    /// `/PATH`, appended to a fixed host (`container_credentials_relative_uri`).
    UrlPath,
    /// `HOST[:PORT]`, put after `http://` (`GCE_METADATA_HOST`).
    Authority,
    /// Dot-separated DNS labels: regions, account, bucket and tenant names,
    /// which become part of a host name or a URL path.
    HostName,
    /// `[SCHEME://][USER[:PASSWORD]@]HOST[:PORT]`: a proxy. reqwest parses it
    /// and fails cleanly, but without naming the option.
    Proxy,
    /// Free text, line breaks included (a key's JSON or PEM).
    Text,
    /// Anything else: one line, as it may become a header.
    Line,
}

/// Checks one value; `origin` (`option endpoint`, `environment variable
/// AWS_ENDPOINT_URL`) names it in the message, which never shows the value.
fn check_value(kind: ValueKind, origin: &str, value: &str) -> Result<()> {
    let (what, expected, checked) = match kind {
        ValueKind::Url => ("endpoint", URL_EXAMPLE, check_url(value)),
        ValueKind::UrlPath => (
            "path",
            "expected a path like /v2/credentials/ID",
            check_url_path(value),
        ),
        ValueKind::Authority => (
            "host",
            "expected HOST or HOST:PORT, like 169.254.169.254:80",
            check_authority(value),
        ),
        ValueKind::HostName => (
            "name",
            "expected a name like us-east-1 or my-bucket",
            check_host_name(value),
        ),
        ValueKind::Proxy => (
            "proxy",
            "expected a URL like http://proxy:3128 or socks5://proxy:1080",
            check_proxy(value),
        ),
        ValueKind::Text => return Ok(()),
        ValueKind::Line => (
            "value",
            "expected one line",
            if value.chars().any(char::is_control) {
                Err("it contains a control character such as a line break")
            } else {
                Ok(())
            },
        ),
    };
    checked.map_err(|why| {
        Error::InvalidInput(format!("invalid {what} in {origin} ({why}): {expected}"))
    })
}

/// Checks an endpoint: `http://` or `https://`, a host (a DNS name, an IPv4
/// address or a bracketed IPv6 address), an optional port and an optional
/// path of unreserved characters and `%XX` escapes; no user, password,
/// query or fragment. Both parsers of `object_store`'s requests accept such
/// a URL and read it alike. The reason it is refused never quotes it.
fn check_url(value: &str) -> std::result::Result<(), &'static str> {
    if value.is_empty() {
        return Err("it is empty");
    }
    if value.len() > MAX_URL {
        return Err("it is longer than 2048 bytes");
    }
    let Some(rest) = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
    else {
        return Err("it does not start with http:// or https://");
    };
    if rest.contains(['?', '#']) {
        return Err("it has a query or a fragment");
    }
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.contains('@') {
        return Err("it has a user name or password, which an endpoint cannot carry");
    }
    check_authority(authority)?;
    check_path(path)
}

/// `HOST[:PORT]`, as in [`check_url`].
fn check_authority(authority: &str) -> std::result::Result<(), &'static str> {
    let port = if let Some(v6) = authority.strip_prefix('[') {
        let (address, after) = v6
            .split_once(']')
            .ok_or("the [IPv6 address] is not closed")?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the [IPv6 address] is not valid");
        }
        match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("only :PORT may follow the [IPv6 address]")?,
            ),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err("it names no host");
        }
        check_host_name(host).map_err(|_| "the host is not a valid host name or IP address")?;
        // A host whose last label is a number is an IPv4 address to
        // `url::Url`, which refuses a bad one (`1.2.3.999`).
        let last = host.rsplit('.').next().unwrap_or(host);
        let numeric = last.bytes().all(|b| b.is_ascii_digit())
            || (last.len() >= 2
                && last[..2].eq_ignore_ascii_case("0x")
                && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        if numeric && host.parse::<std::net::Ipv4Addr>().is_err() {
            return Err("the host is not a valid IPv4 address");
        }
        port
    };
    match port {
        Some(p)
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || p.parse::<u16>().is_err() =>
        {
            Err("the port is not a number from 0 to 65535")
        }
        _ => Ok(()),
    }
}

/// Dot-separated labels of letters, digits, `-` and `_`: a host name, or a
/// name that becomes part of one (bucket, region, account).
fn check_host_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty part between dots");
        }
        if label.len() > 63 {
            return Err("a part between dots is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(
                "it may only have letters, digits, '-' and '_', in parts separated by dots",
            );
        }
        // Punycode labels are decoded (and may be refused) by `url::Url`
        // only; no bucket, region or account name has one.
        if label.len() >= 4 && label[..4].eq_ignore_ascii_case("xn--") {
            return Err("a part starts with xn-- (punycode names are not supported)");
        }
    }
    Ok(())
}

/// An endpoint's path: empty, or `/` and unreserved characters, `/` and
/// `%XX` escapes, without `.` or `..` segments.
fn check_path(path: &str) -> std::result::Result<(), &'static str> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) => i += 1,
            _ => {
                return Err(
                    "the path may only have letters, digits, '-', '.', '_', '~', '/' and %XX escapes",
                );
            }
        }
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err("the path has a . or .. part");
    }
    Ok(())
}

/// A proxy URL: `http`, `https`, `socks5` or `socks5h` (or none: http), an
/// optional user and password (not checked further: never shown) and a host
/// as in [`check_authority`].
fn check_proxy(value: &str) -> std::result::Result<(), &'static str> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it has a space or a control character");
    }
    let rest = match value.split_once("://") {
        Some((scheme, rest)) => {
            if !["http", "https", "socks5", "socks5h"].contains(&scheme) {
                return Err("its scheme is not http, https, socks5 or socks5h");
            }
            rest
        }
        None => value,
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    check_authority(host)
}

/// A path appended to a fixed host, as in [`check_path`].
fn check_url_path(path: &str) -> std::result::Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("it does not start with /");
    }
    if path.len() > MAX_URL {
        return Err("it is longer than 2048 bytes");
    }
    check_path(path)
}

/// The prefix of the environment variables each builder's `from_env` reads.
fn env_prefix(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::S3 => "AWS_",
        Cloud::Azure => "AZURE_",
        Cloud::Gcs => "GOOGLE_",
    }
}

/// Other environment variables `object_store` reads for a cloud: the name,
/// the config key it sets (options override it) or, for one that sets none,
/// its kind.
fn extra_env(cloud: Cloud) -> &'static [(&'static str, Option<&'static str>, ValueKind)] {
    match cloud {
        Cloud::S3 => &[],
        Cloud::Azure => &[
            (
                "IDENTITY_ENDPOINT",
                Some("azure_msi_endpoint"),
                ValueKind::Url,
            ),
            ("AZURITE_BLOB_STORAGE_URL", None, ValueKind::Url),
        ],
        Cloud::Gcs => &[
            ("GCE_METADATA_HOST", None, ValueKind::Authority),
            ("GCE_METADATA_ROOT", None, ValueKind::Authority),
            ("GCE_METADATA_IP", None, ValueKind::Authority),
        ],
    }
}

/// The environment as `object_store` reads it (variables that are UTF-8).
fn store_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// A store's configuration, checked.
struct Config<K> {
    /// The options with their builder keys, in order.
    set: Vec<(K, String)>,
    /// Every value `object_store` will see (options and environment), with
    /// its origin: kept out of messages.
    values: Vec<(String, String)>,
}

/// Parses each option's key with the builder's own parser (so users give
/// the keys each cloud documents: `endpoint`, `region`, `access_key_id`,
/// `account_name`, `service_account`, `allow_http`, ...), and checks every
/// value the builder will see, the environment's too, by its kind.
fn store_config<K: FromStr + Copy + PartialEq>(
    cloud: Cloud,
    options: &[(&str, &str)],
    env: &[(String, String)],
    kind: fn(K) -> ValueKind,
) -> Result<Config<K>> {
    let mut set = Vec::new();
    let mut values = Vec::new();
    for (key, value) in options {
        let parsed = K::from_str(key).map_err(|_| {
            Error::InvalidInput(format!(
                "unknown option {key:?} for {} repositories (see the README's table of options)",
                cloud.name()
            ))
        })?;
        let origin = format!("option {key}");
        check_value(kind(parsed), &origin, value)?;
        set.push((parsed, (*value).to_owned()));
        values.push((origin, (*value).to_owned()));
    }
    for (name, value) in env {
        let extra = extra_env(cloud).iter().find(|(n, ..)| n == name);
        let parsed: Option<K> = match extra {
            Some((_, key, _)) => key.and_then(|k| k.parse().ok()),
            None if name.starts_with(env_prefix(cloud)) => name.to_ascii_lowercase().parse().ok(),
            None => continue,
        };
        let what = match (parsed, extra) {
            // An option replaces it: the builder never uses it.
            (Some(k), _) if set.iter().any(|(s, _)| *s == k) => continue,
            (Some(k), _) => kind(k),
            (None, Some((_, _, kind))) => *kind,
            (None, None) => continue,
        };
        let origin = format!("environment variable {name}");
        check_value(what, &origin, value)?;
        values.push((origin, value.clone()));
    }
    Ok(Config { set, values })
}

/// `object_store`'s text with every given value taken out, and the origins
/// of those it held. Its config errors quote the value (`failed to parse
/// "maybe" as boolean`); longer values are taken out wherever they appear.
fn scrub_values(text: &str, values: &[(String, String)]) -> (String, Vec<String>) {
    let mut by_length: Vec<&(String, String)> =
        values.iter().filter(|(_, v)| !v.is_empty()).collect();
    by_length.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = text.to_owned();
    let mut origins = Vec::new();
    for (origin, value) in by_length {
        let mut held = false;
        for quoted in [
            format!("\"{value}\""),
            format!("{value:?}"),
            format!("'{value}'"),
            format!("`{value}`"),
        ] {
            if out.contains(&quoted) {
                out = out.replace(&quoted, "\"(not shown)\"");
                held = true;
            }
        }
        if value.chars().count() >= 4 && out.contains(value.as_str()) {
            out = out.replace(value.as_str(), "(not shown)");
            held = true;
        }
        if held && !origins.contains(origin) {
            origins.push(origin.clone());
        }
    }
    (out, origins)
}

#[cfg(feature = "s3")]
fn s3_kind(key: object_store::aws::AmazonS3ConfigKey) -> ValueKind {
    use object_store::aws::AmazonS3ConfigKey as K;
    match key {
        K::Endpoint
        | K::S3Endpoint
        | K::MetadataEndpoint
        | K::ContainerCredentialsFullUri
        | K::StsEndpoint => ValueKind::Url,
        K::ContainerCredentialsRelativeUri => ValueKind::UrlPath,
        K::Region | K::DefaultRegion | K::Bucket => ValueKind::HostName,
        K::Client(c) => client_kind(c),
        _ => ValueKind::Line,
    }
}

#[cfg(feature = "azure")]
fn azure_kind(key: object_store::azure::AzureConfigKey) -> ValueKind {
    use object_store::azure::AzureConfigKey as K;
    match key {
        K::Endpoint | K::MsiEndpoint | K::AuthorityHost | K::FabricTokenServiceUrl => {
            ValueKind::Url
        }
        K::AccountName | K::ContainerName | K::AuthorityId => ValueKind::HostName,
        K::Client(c) => client_kind(c),
        _ => ValueKind::Line,
    }
}

#[cfg(feature = "gcs")]
fn gcs_kind(key: object_store::gcp::GoogleConfigKey) -> ValueKind {
    use object_store::gcp::GoogleConfigKey as K;
    match key {
        K::BaseUrl => ValueKind::Url,
        K::Bucket => ValueKind::HostName,
        K::ServiceAccountKey => ValueKind::Text,
        K::Client(c) => client_kind(c),
        _ => ValueKind::Line,
    }
}

/// The HTTP client's keys: one line each, but a PEM certificate and a
/// proxy URL.
#[cfg(any(feature = "s3", feature = "azure", feature = "gcs"))]
fn client_kind(key: object_store::ClientConfigKey) -> ValueKind {
    match key {
        object_store::ClientConfigKey::ProxyCaCertificate => ValueKind::Text,
        object_store::ClientConfigKey::ProxyUrl => ValueKind::Proxy,
        _ => ValueKind::Line,
    }
}

impl CloudTarget {
    /// Opens `s3://bucket/prefix`, `az://container/prefix` or
    /// `gs://bucket/prefix`. Credentials and settings come from the cloud's
    /// standard environment variables, overridden by `options`.
    pub fn open(cloud: Cloud, location: &str, options: &TargetOptions) -> Result<Self> {
        Self::open_in(cloud, location, options, &store_env())
    }

    /// [`CloudTarget::open`] with the environment `object_store` will read.
    fn open_in(
        cloud: Cloud,
        location: &str,
        options: &TargetOptions,
        env: &[(String, String)],
    ) -> Result<Self> {
        // Messages show the location with any password taken out.
        let shown = backup_core::registry::redact(location);
        let (scheme, rest) = location
            .split_once("://")
            .ok_or_else(|| Error::InvalidInput(format!("{shown:?} is not a URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{shown:?} names no bucket (expected {scheme}://BUCKET/PREFIX)"
            )));
        }
        // The bucket becomes part of a host name or of every request's path.
        if let Err(why) = check_host_name(bucket) {
            return Err(Error::InvalidInput(format!(
                "{shown:?}: invalid bucket name: {why} (expected {scheme}://BUCKET/PREFIX)"
            )));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            check_key(prefix)?;
            if prefix.len() >= MAX_KEY {
                return Err(Error::InvalidInput(format!(
                    "{shown:?}: the prefix is longer than the stores' limit of {MAX_KEY} bytes"
                )));
            }
            format!("{prefix}/")
        };

        let mut retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: 8,
            retry_timeout: Duration::from_secs(120),
        };
        let mut secrets = Vec::new();
        let mut store_options = Vec::new();
        for (key, value) in options {
            match key.as_str() {
                RETRIES => {
                    retry.max_retries = value.parse().map_err(|_| {
                        Error::InvalidInput(format!(
                            "option {RETRIES}: expected a count, like 8 (the value is not shown)"
                        ))
                    })?;
                }
                RETRY_TIMEOUT => retry.retry_timeout = crate::parse_duration(key, value)?,
                _ => {
                    // Values of a few characters are no secret worth the
                    // name, and scrubbing them would blank out plain text.
                    if is_secret_key(key) && value.len() >= 4 {
                        secrets.push(value.clone());
                    }
                    store_options.push((key.as_str(), value.as_str()));
                }
            }
        }
        let env_secrets = [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_STORAGE_SAS_KEY",
            "AZURE_STORAGE_TOKEN",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
        ];
        secrets.extend(
            env_secrets
                .iter()
                .filter_map(|v| std::env::var(v).ok())
                .filter(|v| v.len() >= 4),
        );

        let store = build(
            cloud,
            &format!("{scheme}://{bucket}"),
            &store_options,
            env,
            retry,
        )?;
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                location: format!("{scheme}://{bucket}/{prefix}")
                    .trim_end_matches('/')
                    .to_owned(),
                secrets,
                runtime: runtime()?,
            }),
            prefix,
        })
    }

    pub(crate) fn path(&self, key: &str) -> Result<Path> {
        check_key(key)?;
        if self.prefix.len() + key.len() > MAX_KEY {
            return Err(Error::InvalidInput(format!(
                "object key {key:?} is longer than {MAX_KEY} bytes with the prefix"
            )));
        }
        Path::parse(format!("{}{key}", self.prefix))
            .map_err(|e| Error::InvalidInput(format!("invalid object key {key:?}: {e}")))
    }

    /// The path under which to list for a key prefix: its directory part.
    fn dir_path(&self, prefix: &str) -> Result<Option<Path>> {
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let full = format!("{}{dir}", self.prefix);
        let full = full.trim_end_matches('/');
        if full.is_empty() {
            return Ok(None);
        }
        check_key(full)?;
        Path::parse(full)
            .map(Some)
            .map_err(|e| Error::InvalidInput(format!("invalid prefix {prefix:?}: {e}")))
    }

    pub(crate) fn key_of(&self, path: &Path) -> Option<String> {
        path.as_ref().strip_prefix(&self.prefix).map(str::to_owned)
    }

    /// The key prefix inside the bucket: empty or ending with `/`.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.shared.runtime.block_on(future)
    }

    pub(crate) fn store(&self) -> &dyn ObjectStore {
        self.shared.store.as_ref()
    }

    pub(crate) fn map_err(
        &self,
        action: &'static str,
        key: &str,
        e: &object_store::Error,
    ) -> Error {
        self.shared.map_err(action, key, e)
    }

    /// A streaming writer for `key` whose object gets `attributes` (user
    /// metadata, for mirrors) when it is committed.
    pub(crate) fn writer(&self, key: &str, attributes: Attributes) -> Result<CloudWriter> {
        Ok(CloudWriter {
            path: self.path(key)?,
            key: key.to_owned(),
            shared: Arc::clone(&self.shared),
            attributes,
            first: Vec::new(),
            upload: None,
        })
    }
}

impl Shared {
    /// Maps a store error to the outcome callers match on, naming the
    /// target and the key, never a credential.
    fn map_err(&self, action: &'static str, key: &str, e: &object_store::Error) -> Error {
        let path = format!("{}/{key}", self.location);
        let text = error_text(e);
        // Some requests (Azure's and GCS's listings among them) come back
        // as `Generic`, with the HTTP status only in the text of the request
        // error they wrap; object_store does not export that error's type.
        // The conformance tests hold this to the wording.
        let denied = matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || text.contains("status code: 401")
            || text.contains("status code: 403");
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                what: "object",
                path,
            },
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => Error::AlreadyExists { path },
            _ if denied => Error::PermissionDenied {
                source: io::Error::new(io::ErrorKind::PermissionDenied, self.scrub(&text)),
                path,
            },
            _ => Error::Backend {
                backend: self.location.clone(),
                message: format!(
                    "{action}{}{key}: {}",
                    if key.is_empty() { "" } else { " " },
                    self.scrub(&text)
                ),
                source: None,
            },
        }
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        // Signed query strings (pre-signed URLs, SAS tokens) never reach a
        // message either.
        for marker in ["sig=", "X-Amz-Signature=", "X-Goog-Signature="] {
            while let Some(i) = out.find(marker) {
                let start = i + marker.len();
                let end = out[start..]
                    .find(['&', ' ', ')', '"'])
                    .map_or(out.len(), |j| start + j);
                out.replace_range(i..end, "<redacted>");
            }
        }
        out
    }
}

/// Refuses to open a store without a credential source given: otherwise
/// `object_store` would fall back to the cloud's instance-metadata endpoint
/// (a link-local address), and a missing credential would show up as a
/// confusing network error. On a cloud VM, `-o metadata_endpoint=...` (S3,
/// GCS) or `-o msi_endpoint=...` (Azure) opts in to the instance identity.
fn check_credentials(cloud: Cloud, options: &[(&str, &str)]) -> Result<()> {
    let (env_prefix, accepted, hint): (&str, &[&str], &str) = match cloud {
        Cloud::S3 => (
            "AWS_",
            &[
                "access_key_id",
                "web_identity_token_file",
                "container_credentials_relative_uri",
                "container_credentials_full_uri",
                "skip_signature",
                "metadata_endpoint",
            ],
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass -o access_key_id=... -o secret_access_key=...",
        ),
        Cloud::Azure => (
            "AZURE_",
            &[
                "account_key",
                "access_key",
                "master_key",
                "sas_key",
                "sas_token",
                "token",
                "bearer_token",
                "client_secret",
                "federated_token_file",
                "use_azure_cli",
                "use_emulator",
                "skip_signature",
                "msi_endpoint",
                "identity_endpoint",
            ],
            "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY, or pass -o account_name=... -o access_key=...",
        ),
        Cloud::Gcs => (
            "GOOGLE_",
            &[
                "service_account",
                "service_account_path",
                "service_account_key",
                "application_credentials",
                "bearer_token",
                "skip_signature",
                "metadata_endpoint",
            ],
            "set GOOGLE_SERVICE_ACCOUNT to a service-account key file, or pass -o service_account=PATH",
        ),
    };
    let normal = |key: &str| {
        let key = key.to_ascii_lowercase();
        ["aws_", "azure_storage_", "azure_", "google_"]
            .iter()
            .find_map(|p| key.strip_prefix(p).map(str::to_owned))
            .unwrap_or(key)
    };
    let from_env = std::env::vars()
        .filter_map(|(k, v)| (k.starts_with(env_prefix) && !v.is_empty()).then(|| normal(&k)));
    let from_options = options
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| normal(k));
    let adc = cloud == Cloud::Gcs
        && std::env::var_os("HOME").is_some_and(|home| {
            std::path::Path::new(&home)
                .join(".config/gcloud/application_default_credentials.json")
                .is_file()
        });
    if adc
        || from_env
            .chain(from_options)
            .any(|k| accepted.contains(&k.as_str()))
    {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "no {} credentials: {hint}",
            cloud.name()
        )))
    }
}

/// The text of a store error on one line: the chain of causes, with a
/// server's XML error body reduced to its code and message.
fn one_line(text: &str) -> String {
    const MAX: usize = 400;
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find(&close)?;
        Some(text[start..end].to_owned())
    };
    let line = match text.find("<?xml").or_else(|| text.find("<Error>")) {
        Some(i) => {
            let detail = [tag("Code"), tag("Message")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            format!("{}{detail}", &text[..i])
        }
        None => text.to_owned(),
    };
    let mut line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > MAX {
        let mut cut = MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// The whole chain of an error, on one line.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    one_line(&backup_core::error_chain(e))
}

#[allow(unused_variables)]
fn build(
    cloud: Cloud,
    url: &str,
    options: &[(&str, &str)],
    env: &[(String, String)],
    retry: RetryConfig,
) -> Result<Arc<dyn ObjectStore>> {
    /// The store, or why not; and the values it was given.
    type Built = (
        object_store::Result<Arc<dyn ObjectStore>>,
        Vec<(String, String)>,
    );
    let (built, values): Built = match cloud {
        #[cfg(feature = "s3")]
        Cloud::S3 => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let config = store_config::<AmazonS3ConfigKey>(cloud, options, env, s3_kind)?;
            check_credentials(cloud, options)?;
            let mut b = AmazonS3Builder::from_env().with_url(url).with_retry(retry);
            for (k, v) in config.set {
                b = b.with_config(k, v);
            }
            (
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
                config.values,
            )
        }
        #[cfg(feature = "azure")]
        Cloud::Azure => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let config = store_config::<AzureConfigKey>(cloud, options, env, azure_kind)?;
            check_credentials(cloud, options)?;
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(url.replacen("azure://", "az://", 1))
                .with_retry(retry);
            for (k, v) in config.set {
                b = b.with_config(k, v);
            }
            (
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
                config.values,
            )
        }
        #[cfg(feature = "gcs")]
        Cloud::Gcs => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let config = store_config::<GoogleConfigKey>(cloud, options, env, gcs_kind)?;
            check_credentials(cloud, options)?;
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry);
            for (k, v) in config.set {
                b = b.with_config(k, v);
            }
            (
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
                config.values,
            )
        }
        #[allow(unreachable_patterns)]
        _ => {
            return Err(Error::Unsupported(format!(
                "{} repositories: this backupkit was built without that feature",
                cloud.name()
            )));
        }
    };
    built.map_err(|e| {
        // A value the builder could not parse is named by its option, never
        // shown.
        let (text, origins) = scrub_values(&backup_core::error_chain(&e), &values);
        let hint = if origins.is_empty() {
            "set its credentials in the environment or with -o".to_owned()
        } else {
            format!("check {}", origins.join(", "))
        };
        Error::InvalidInput(format!(
            "cannot configure the {} repository {url}: {} ({hint})",
            cloud.name(),
            one_line(&text)
        ))
    })
}

impl CloudTarget {
    /// A streamed read of `key` with `options` (a byte range).
    fn get_with(&self, key: &str, options: GetOptions) -> Result<Box<dyn Read + Send>> {
        let path = self.path(key)?;
        let result = self
            .block_on(self.store().get_opts(&path, options))
            .map_err(|e| self.map_err("read", key, &e))?;
        Ok(Box::new(CloudReader {
            stream: result.into_stream(),
            current: Bytes::new(),
            runtime: self.shared.runtime,
            key: format!("{}/{key}", self.shared.location),
        }))
    }
}

impl Target for CloudTarget {
    fn location(&self) -> String {
        self.shared.location.clone()
    }

    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(self.writer(key, Attributes::new())?))
    }

    fn create_new(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.block_on(
            self.store()
                .put_opts(&path, PutPayload::from(data.to_vec()), options),
        )
        .map(drop)
        .map_err(|e| self.map_err("create", key, &e))
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.get_with(key, GetOptions::default())
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        if len == 0 {
            self.stat(key)?;
            return Ok(Box::new(std::io::empty()));
        }
        let range = GetRange::Bounded(offset..offset.saturating_add(len));
        self.get_with(
            key,
            GetOptions {
                range: Some(range),
                ..GetOptions::default()
            },
        )
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = self.dir_path(prefix)?;
        let listed: Vec<object_store::ObjectMeta> = self
            .block_on(self.store().list(dir.as_ref()).try_collect())
            .map_err(|e| self.map_err("list", prefix, &e))?;
        Ok(listed
            .into_iter()
            .filter_map(|o| {
                let key = self.key_of(&o.location)?;
                key.starts_with(prefix).then(|| ObjectMeta {
                    key,
                    size: o.size,
                    modified: Some(o.last_modified.into()),
                })
            })
            .collect())
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.dir_path(prefix)?;
        let listed = self
            .block_on(self.store().list_with_delimiter(dir.as_ref()))
            .map_err(|e| self.map_err("list", prefix, &e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| {
                let key = self.key_of(p)?;
                let name = key.strip_prefix(prefix)?;
                (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn stat(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let meta = self
            .block_on(self.store().head(&path))
            .map_err(|e| self.map_err("stat", key, &e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: meta.size,
            modified: Some(meta.last_modified.into()),
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.block_on(self.store().delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err("delete", key, &e)),
        }
    }
}

/// Streams one object up. Small objects (under one part) go up in one
/// request at commit; larger ones as a multipart upload that completes at
/// commit, or is aborted when the writer is dropped.
pub(crate) struct CloudWriter {
    path: Path,
    key: String,
    shared: Arc<Shared>,
    /// Given to the upload when it starts (multipart) or at commit (one
    /// request).
    attributes: Attributes,
    /// Bytes before the first part is full.
    first: Vec<u8>,
    upload: Option<WriteMultipart>,
}

impl CloudWriter {
    fn io_error(&self, action: &'static str, e: &object_store::Error) -> io::Error {
        let mapped = self.shared.map_err(action, &self.key, e);
        io::Error::other(mapped.to_string())
    }

    /// Completes the object (what [`ObjectWriter::commit`] does), giving the
    /// store's answer: its `ETag`, where the store sends one.
    pub(crate) fn finish(&mut self) -> Result<PutResult> {
        let runtime = self.shared.runtime;
        let result = match self.upload.take() {
            None => {
                let body = PutPayload::from(std::mem::take(&mut self.first));
                let options = PutOptions {
                    attributes: std::mem::take(&mut self.attributes),
                    ..PutOptions::default()
                };
                runtime.block_on(self.shared.store.put_opts(&self.path, body, options))
            }
            Some(upload) => runtime.block_on(upload.finish()),
        };
        result.map_err(|e| self.shared.map_err("upload", &self.key, &e))
    }

    /// The `ETag` of the object as stored now (one `HEAD`), for a store
    /// whose upload answer had none.
    pub(crate) fn head_e_tag(&self) -> Result<Option<String>> {
        self.shared
            .runtime
            .block_on(self.shared.store.head(&self.path))
            .map(|meta| meta.e_tag)
            .map_err(|e| self.shared.map_err("stat", &self.key, &e))
    }
}

impl Write for CloudWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let runtime = self.shared.runtime;
        if self.upload.is_none() {
            if self.first.len() + buf.len() < PART_SIZE {
                self.first.extend_from_slice(buf);
                return Ok(buf.len());
            }
            let options = PutMultipartOptions {
                attributes: self.attributes.clone(),
                ..PutMultipartOptions::default()
            };
            let upload = runtime
                .block_on(self.shared.store.put_multipart_opts(&self.path, options))
                .map_err(|e| self.io_error("upload", &e))?;
            let mut upload = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let first = std::mem::take(&mut self.first);
            // Part uploads are spawned on the runtime: enter it.
            let _guard = runtime.enter();
            upload.write(&first);
            self.upload = Some(upload);
        }
        let upload = self.upload.as_mut().expect("upload started above");
        if let Err(e) = runtime.block_on(upload.wait_for_capacity(PARTS_IN_FLIGHT)) {
            return Err(self.io_error("upload", &e));
        }
        let _guard = runtime.enter();
        upload.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for CloudWriter {
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.finish().map(drop)
    }
}

impl Drop for CloudWriter {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            // Best effort: an upload that cannot be aborted stays invisible
            // and the store's lifecycle rules expire it.
            let _ = self.shared.runtime.block_on(upload.abort());
        }
    }
}

/// Streams one object down, a network chunk at a time.
struct CloudReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    current: Bytes,
    runtime: &'static tokio::runtime::Runtime,
    key: String,
}

impl Read for CloudReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => {
                    return Err(io::Error::other(format!(
                        "reading {}: {}",
                        self.key,
                        error_text(&e)
                    )));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_core::testgen::Gen;

    /// Endpoints `object_store` would panic on (or misread), the brief's
    /// examples first.
    const BAD_ENDPOINTS: &[&str] = &[
        "127.0.0.1:9000",
        "http://",
        "http://[::1",
        "http://a b",
        "",
        "localhost",
        "https://",
        "http:///x",
        "HTTP://x",
        "http:/x",
        "ftp://x",
        "http://user:pw-SECRET@x",
        "http://x?q",
        "http://x#f",
        "http://1.2.3.999",
        "http://999",
        "http://a.0x",
        "http://xn--zz",
        "http://a..b",
        "http://.a",
        "http://a.",
        "http://x:",
        "http://x:99999",
        "http://x:-1",
        "http://x:9000:1",
        "http://[::1]x",
        "http://[zz]",
        "http://[::1%eth0]",
        "http://x/a b",
        "http://x/%zz",
        "http://x/%4",
        "http://x/a\"b",
        "http://x/../y",
        "http://x/./y",
        "http://x/é",
        "http://é",
        "http://x\n",
        "\thttp://x",
        "http://x/a^b",
    ];

    const GOOD_ENDPOINTS: &[&str] = &[
        "http://127.0.0.1:9000",
        "https://s3.amazonaws.com",
        "http://localhost:4566/",
        "http://[::1]:9000",
        "http://[::ffff:127.0.0.1]:1",
        "https://minio.lab.example/s3/prefix",
        "http://my_host-1.lab:0",
        "http://10.0.0.1",
        "https://storage.googleapis.com",
        "http://127.0.0.1:10000/devstoreaccount1",
        "http://h/%41~a-b_c.d/",
    ];

    type Pairs = Vec<(&'static str, &'static str)>;

    /// The clouds this build has, with options that pass the credentials
    /// check without a server.
    #[allow(clippy::vec_init_then_push)] // each push has its feature
    fn clouds() -> Vec<(Cloud, &'static str, Pairs)> {
        let mut all = Vec::new();
        #[cfg(feature = "s3")]
        all.push((
            Cloud::S3,
            "s3://bucket/prefix",
            vec![
                ("access_key_id", "AKIDEXAMPLE"),
                ("secret_access_key", "very-secret-value-123"),
            ],
        ));
        #[cfg(feature = "azure")]
        all.push((
            Cloud::Azure,
            "az://container/prefix",
            vec![("account_name", "acct"), ("access_key", "YWJjZA==")],
        ));
        #[cfg(feature = "gcs")]
        all.push((
            Cloud::Gcs,
            "gs://bucket/prefix",
            vec![("bearer_token", "token-value")],
        ));
        all
    }

    /// The option keys that take an endpoint URL, per cloud (aliases too).
    fn endpoint_keys(cloud: Cloud) -> &'static [&'static str] {
        match cloud {
            Cloud::S3 => &[
                "endpoint",
                "aws_endpoint_url",
                "endpoint_url",
                "aws_endpoint_url_s3",
                "metadata_endpoint",
                "container_credentials_full_uri",
                "endpoint_url_sts",
            ],
            Cloud::Azure => &[
                "endpoint",
                "azure_storage_endpoint",
                "msi_endpoint",
                "identity_endpoint",
                "authority_host",
                "fabric_token_service_url",
            ],
            Cloud::Gcs => &["base_url", "google_base_url"],
        }
    }

    fn options(pairs: &[(&str, &str)]) -> TargetOptions {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Opens with no environment of `object_store`'s own (hermetic).
    fn open(cloud: Cloud, location: &str, pairs: &[(&str, &str)]) -> Result<CloudTarget> {
        CloudTarget::open_in(cloud, location, &options(pairs), &[])
    }

    #[test]
    fn endpoints_are_checked_by_their_shape() {
        for good in GOOD_ENDPOINTS {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in BAD_ENDPOINTS {
            assert!(check_url(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("http://h/{}", "a".repeat(MAX_URL));
        assert!(check_url(&long).is_err());
    }

    /// A random URL-like string: scheme, user, host, port and path, each
    /// plausible or nasty.
    fn url_like(g: &mut Gen) -> String {
        // Mostly listed pieces (half of them good), sometimes random ones.
        let mut part = |good: &[&str]| {
            if g.below(10) == 0 {
                g.string(3)
            } else {
                g.pick(good).to_owned()
            }
        };
        format!(
            "{}{}{}{}{}",
            part(&[
                "http://", "https://", "http://", "", "HTTP://", "http:/", "s3://"
            ]),
            part(&["", "", "", "", "", "user@", "user:pw@", "@"]),
            part(&[
                "127.0.0.1",
                "[::1]",
                "localhost",
                "a.b-c_d",
                "[::ffff:1.2.3.4]",
                "10.1.2.3",
                "",
                "1.2.3.999",
                "xn--zz",
                "[::1",
                "a b",
                "ä",
                "0x7f",
                "999",
                "a..b",
            ]),
            part(&["", "", ":9000", ":0", ":65535", ":", ":99999", ":-1"]),
            part(&[
                "",
                "/",
                "/a/b",
                "/%41",
                "/~x",
                "/a-b_c.d/",
                "/a b",
                "/%zz",
                "/..",
                "/a/./b",
            ]),
        )
    }

    /// Thousands of generated strings: the check never panics, and what it
    /// accepts is a plain ASCII http(s) URL without user, query or fragment.
    #[test]
    fn endpoint_checking_never_panics_and_accepts_only_plain_urls() {
        let mut g = Gen::new(21);
        let mut accepted = 0;
        for i in 0..40_000 {
            let value = if i % 2 == 0 {
                url_like(&mut g)
            } else {
                g.string(8)
            };
            let checks = [
                check_url(&value).is_ok(),
                check_url_path(&value).is_ok(),
                check_authority(&value).is_ok(),
                check_host_name(&value).is_ok(),
            ];
            let _ = check_proxy(&value);
            if checks[0] {
                accepted += 1;
                assert!(
                    value.starts_with("http://") || value.starts_with("https://"),
                    "{value:?}"
                );
            }
            if checks.iter().any(|&ok| ok) {
                assert!(value.len() <= MAX_URL, "{value:?}");
                assert!(
                    value
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"@?#\"<>\\^`{|}".contains(&b)),
                    "{value:?}"
                );
            }
        }
        assert!(
            accepted > 300,
            "the generator reached too few good URLs: {accepted}"
        );
    }

    /// The brief's defect: a bad endpoint in any option that takes one, for
    /// each cloud, is one clear line and a usage error, at construction.
    #[test]
    fn bad_endpoints_fail_at_open_with_one_clear_line() {
        assert!(!clouds().is_empty(), "run with --all-features");
        for (cloud, location, creds) in clouds() {
            for key in endpoint_keys(cloud) {
                for bad in BAD_ENDPOINTS {
                    let mut pairs = creds.clone();
                    pairs.push((key, bad));
                    let err = open(cloud, location, &pairs).unwrap_err();
                    let text = err.to_string();
                    assert!(
                        matches!(err, Error::InvalidInput(_)),
                        "{key}={bad:?}: {text}"
                    );
                    assert!(
                        text.contains(&format!("invalid endpoint in option {key} (")),
                        "{text}"
                    );
                    assert!(text.contains(URL_EXAMPLE), "{text}");
                    assert!(!text.contains('\n'), "{text}");
                    assert!(!text.contains("SECRET"), "{text}");
                    if !URL_EXAMPLE.contains(bad) && bad.len() > 3 {
                        assert!(!text.contains(bad), "{bad:?} shown in {text}");
                    }
                }
            }
            let mut pairs = creds.clone();
            pairs.push((endpoint_keys(cloud)[0], "http://127.0.0.1:9000"));
            assert!(open(cloud, location, &pairs).is_ok());
        }
    }

    /// The variables `object_store` reads are held to the same checks; an
    /// option replaces its variable, which is then not checked.
    #[test]
    fn endpoints_in_the_environment_are_checked() {
        for (cloud, location, creds) in clouds() {
            let vars: &[(&str, &str)] = match cloud {
                Cloud::S3 => &[
                    ("AWS_ENDPOINT_URL", "endpoint"),
                    ("AWS_ENDPOINT", "endpoint"),
                    ("AWS_METADATA_ENDPOINT", "metadata_endpoint"),
                ],
                Cloud::Azure => &[
                    ("AZURE_STORAGE_ENDPOINT", "endpoint"),
                    ("IDENTITY_ENDPOINT", "msi_endpoint"),
                    ("AZURE_AUTHORITY_HOST", "authority_host"),
                    ("AZURITE_BLOB_STORAGE_URL", ""),
                ],
                Cloud::Gcs => &[("GOOGLE_BASE_URL", "base_url")],
            };
            for (var, key) in vars {
                for bad in ["127.0.0.1:9000", "http://[::1", "http://a b", "http://"] {
                    let env = [((*var).to_owned(), bad.to_owned())];
                    let err =
                        CloudTarget::open_in(cloud, location, &options(&creds), &env).unwrap_err();
                    let text = err.to_string();
                    assert!(matches!(err, Error::InvalidInput(_)), "{var}: {text}");
                    assert!(
                        text.contains(&format!("invalid endpoint in environment variable {var}")),
                        "{text}"
                    );
                    assert!(text.contains(URL_EXAMPLE), "{text}");
                    if !key.is_empty() {
                        let mut pairs = creds.clone();
                        pairs.push((key, "http://127.0.0.1:9000"));
                        assert!(
                            CloudTarget::open_in(cloud, location, &options(&pairs), &env).is_ok(),
                            "{var} is replaced by option {key}"
                        );
                    }
                }
            }
            // Variables the builder ignores are not checked.
            let env = [("UNRELATED_ENDPOINT".to_owned(), "127.0.0.1:9000".to_owned())];
            assert!(CloudTarget::open_in(cloud, location, &options(&creds), &env).is_ok());
        }
        #[cfg(feature = "gcs")]
        {
            let env = [("GCE_METADATA_HOST".to_owned(), "a b:80".to_owned())];
            let err = CloudTarget::open_in(
                Cloud::Gcs,
                "gs://b/p",
                &options(&[("bearer_token", "t")]),
                &env,
            )
            .unwrap_err();
            assert!(err.to_string().contains("GCE_METADATA_HOST"), "{err}");
        }
        #[cfg(feature = "s3")]
        {
            let env = [("AWS_SESSION_TOKEN".to_owned(), "tok\nSECRET".to_owned())];
            let err = CloudTarget::open_in(
                Cloud::S3,
                "s3://b/p",
                &options(&[("access_key_id", "a"), ("secret_access_key", "b")]),
                &env,
            )
            .unwrap_err();
            assert!(err.to_string().contains("AWS_SESSION_TOKEN"), "{err}");
            assert!(!err.to_string().contains("SECRET"), "{err}");
        }
    }

    /// The real process environment, as `object_store` reads it: this test
    /// runs itself again in a child process with `AWS_ENDPOINT_URL` set (a
    /// test cannot set its own process's environment safely).
    #[cfg(feature = "s3")]
    #[test]
    fn a_bad_endpoint_in_the_process_environment_fails_cleanly() {
        const CHILD: &str = "BACKUPKIT_TEST_BAD_ENDPOINT_CHILD";
        const NAME: &str = "cloud::tests::a_bad_endpoint_in_the_process_environment_fails_cleanly";
        if std::env::var_os(CHILD).is_some() {
            let err = CloudTarget::open(Cloud::S3, "s3://b/p", &TargetOptions::new()).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::InvalidInput(_)), "{text}");
            assert!(
                text.contains("invalid endpoint in environment variable AWS_ENDPOINT_URL"),
                "{text}"
            );
            assert!(text.contains(URL_EXAMPLE), "{text}");
            return;
        }
        for bad in ["127.0.0.1:9000", "http://[::1", "http://a b", "http://"] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([NAME, "--exact", "--test-threads=1"])
                .env(CHILD, "1")
                .env("AWS_ENDPOINT_URL", bad)
                .env_remove("AWS_ENDPOINT")
                .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
                .env("AWS_SECRET_ACCESS_KEY", "very-secret-value-123")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{bad:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The brief's other defect: no option value reaches a message, whether
    /// backupkit or `object_store` parses it (numbers, booleans, durations,
    /// names, one-line values).
    #[test]
    fn option_values_never_reach_messages() {
        for (cloud, location, creds) in clouds() {
            let mut bad: Vec<(&str, &str)> = vec![
                ("allow_http", "maybe-SECRET"),
                ("retries", "many-SECRET"),
                ("retries", "-SECRET"),
                ("retry_timeout", "soon-SECRET"),
                ("timeout", "SECRET"),
                ("connect_timeout", "SECRET-s"),
                ("pool_idle_timeout", "SECRET"),
                ("pool_max_idle_per_host", "SECRET"),
                ("http2_max_frame_size", "SECRET"),
                ("allow_invalid_certificates", "SECRET"),
                ("user_agent", "agent\u{1}SECRET"),
                ("proxy_url", "a b SECRET"),
            ];
            match cloud {
                Cloud::S3 => bad.extend([
                    ("region", "bad region SECRET"),
                    ("region", "SECRET/x"),
                    ("default_region", ""),
                    ("token", "SECRET\n"),
                    ("access_key_id", "SECRET\r\nX-Injected: 1"),
                    ("checksum_algorithm", "SECRET"),
                    ("conditional_put", "SECRET"),
                    ("virtual_hosted_style_request", "SECRET"),
                    ("unsigned_payload", "SECRET"),
                    ("container_credentials_relative_uri", "SECRET"),
                    ("bucket", "SECRET bucket"),
                ]),
                Cloud::Azure => bad.extend([
                    ("account_name", "bad name SECRET"),
                    ("use_emulator", "SECRET"),
                    ("skip_signature", "SECRET"),
                    ("tenant_id", "SECRET tenant"),
                    ("bearer_token", "SECRET\n"),
                ]),
                Cloud::Gcs => {
                    bad.extend([("skip_signature", "SECRET"), ("bucket", "SECRET/bucket")]);
                }
            }
            for (key, value) in bad {
                let mut pairs = creds.clone();
                pairs.push((key, value));
                let Err(err) = open(cloud, location, &pairs) else {
                    panic!("{cloud:?}: {key}={value:?} accepted");
                };
                let text = err.to_string();
                assert!(matches!(err, Error::InvalidInput(_)), "{key}: {text}");
                assert!(!text.contains("SECRET"), "{key}={value:?}: {text}");
                assert!(text.contains(key), "{key} not named: {text}");
                assert!(!text.contains('\n'), "{text}");
            }
        }
    }

    #[test]
    fn scrubbing_takes_out_values_and_names_their_options() {
        let values = [
            ("option allow_http".to_owned(), "maybe".to_owned()),
            ("option token".to_owned(), "tok-12345".to_owned()),
            ("option region".to_owned(), "eu".to_owned()),
        ];
        let (text, origins) = scrub_values(
            "failed to parse \"maybe\" as boolean; tok-12345 refused; eu and europe",
            &values,
        );
        assert_eq!(
            text,
            "failed to parse \"(not shown)\" as boolean; (not shown) refused; eu and europe"
        );
        assert_eq!(origins, ["option token", "option allow_http"]);
    }

    #[test]
    fn bucket_names_are_checked_and_passwords_never_shown() {
        for (cloud, location, creds) in clouds() {
            let scheme = location.split_once("://").unwrap().0;
            for bucket in [
                "a@b",
                "a?b",
                "a#b",
                "..",
                ".",
                "a..b",
                "a b",
                "a%zz",
                "xn--a",
                "ä",
                "a}b",
                "a:1",
                "key:SECRET@bucket",
            ] {
                let err = open(cloud, &format!("{scheme}://{bucket}/p"), &creds).unwrap_err();
                let text = err.to_string();
                assert!(matches!(err, Error::InvalidInput(_)), "{bucket}: {text}");
                assert!(!text.contains("SECRET"), "{text}");
            }
            let good: &[&str] = match cloud {
                // Azure container names have no dots.
                Cloud::Azure => &["my-container", "c", "a1"],
                _ => &["my-bucket", "my.bucket.v2", "A_b", "b"],
            };
            for bucket in good {
                let location = format!("{scheme}://{bucket}/p");
                if let Err(e) = open(cloud, &location, &creds) {
                    panic!("{location}: {e}");
                }
            }
        }
    }

    #[test]
    fn overlong_prefixes_and_keys_are_refused_before_any_request() {
        for (cloud, location, creds) in clouds() {
            let scheme = location.split_once("://").unwrap().0;
            let long = "a".repeat(MAX_KEY + 10);
            let err = open(cloud, &format!("{scheme}://b/{long}"), &creds).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err}");
            let mut pairs = creds.clone();
            pairs.push((endpoint_keys(cloud)[0], "http://127.0.0.1:9"));
            let t = open(cloud, location, &pairs).unwrap();
            assert!(matches!(t.stat(&long), Err(Error::InvalidInput(_))));
            assert!(matches!(t.get(&long), Err(Error::InvalidInput(_))));
        }
    }

    /// Generated locations, options and environments: opening never panics.
    #[test]
    fn generated_locations_and_options_never_panic() {
        const KEYS: &[&str] = &[
            "endpoint",
            "region",
            "allow_http",
            "retries",
            "retry_timeout",
            "token",
            "bucket",
            "account_name",
            "access_key",
            "bearer_token",
            "base_url",
            "metadata_endpoint",
            "msi_endpoint",
            "authority_host",
            "tenant_id",
            "container_credentials_relative_uri",
            "proxy_url",
            "timeout",
            "user_agent",
            "skip_signature",
            "use_emulator",
            "virtual_hosted_style_request",
        ];
        const VALUES: &[&str] = &[
            "http://127.0.0.1:9000",
            "http://[::1]:1",
            "true",
            "0",
            "1s",
            "us-east-1",
            "/v2/x",
            "YWJjZA==",
        ];
        let mut g = Gen::new(22);
        for (cloud, _, creds) in clouds() {
            for _ in 0..1500 {
                let location = format!(
                    "{}{}{}{}",
                    g.part(&["s3://", "az://", "azure://", "gs://", ""]),
                    g.part(&["bucket", "a.b", "", "xn--q", "a_b"]),
                    g.part(&["/", "", "//"]),
                    g.string(4),
                );
                let mut pairs: Vec<(String, String)> = creds
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                for _ in 0..g.below(4) {
                    let key = g.part(KEYS);
                    let value = if g.below(2) == 0 {
                        url_like(&mut g)
                    } else {
                        g.part(VALUES)
                    };
                    pairs.push((key, value));
                }
                let env = if g.below(4) == 0 {
                    vec![(
                        g.part(&[
                            "AWS_ENDPOINT_URL",
                            "AZURE_STORAGE_ENDPOINT",
                            "GOOGLE_BASE_URL",
                        ]),
                        url_like(&mut g),
                    )]
                } else {
                    Vec::new()
                };
                let options: TargetOptions = pairs.into_iter().collect();
                let _ = CloudTarget::open_in(cloud, &location, &options, &env);
            }
        }
    }

    /// What the checks accept, `object_store` can send: requests to a closed
    /// port on loopback through generated endpoint paths, buckets and
    /// prefixes fail with an error, never a panic.
    #[test]
    fn accepted_endpoints_make_requests_without_panicking() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut g = Gen::new(23);
        for (cloud, location, creds) in clouds() {
            let scheme = location.split_once("://").unwrap().0;
            let mut sent = 0;
            for _ in 0..10_000 {
                if sent == 60 {
                    break;
                }
                let endpoint = format!(
                    "http://{}:{port}{}",
                    g.part(&["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"]),
                    g.part(&["", "/", "/a/b", "/%41", "/~x/", "/a-b_c.d"]),
                );
                let location = format!(
                    "{scheme}://{}/{}",
                    g.part(&["bucket", "a.b", "a_b", "B-1"]),
                    g.part(&["", "p", "p/q", "é", "a b", "%", "日本"]),
                );
                let mut pairs = creds.clone();
                pairs.extend([
                    (endpoint_keys(cloud)[0], endpoint.as_str()),
                    ("allow_http", "true"),
                    ("retries", "0"),
                    ("retry_timeout", "1s"),
                ]);
                let Ok(t) = open(cloud, &location, &pairs) else {
                    continue;
                };
                sent += 1;
                let key = g.part(&["k", "a/b", "snapshots/x y", "é/ü", "%2F"]);
                assert!(t.stat(&key).is_err(), "{endpoint} {location}");
                assert!(t.list("").is_err(), "{endpoint} {location}");
            }
            assert_eq!(sent, 60, "{cloud:?}: too few generated targets opened");
        }
    }
}
