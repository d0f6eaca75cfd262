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
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
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

/// Applies one option to a builder through its own key parser, so users
/// give the keys each cloud documents (`endpoint`, `region`,
/// `access_key_id`, `account_name`, `service_account`, `allow_http`, ...).
fn apply<B, K>(
    builder: B,
    cloud: Cloud,
    key: &str,
    value: &str,
    with: fn(B, K, String) -> B,
) -> Result<B>
where
    K: FromStr,
{
    let parsed = K::from_str(key).map_err(|_| {
        Error::InvalidInput(format!(
            "unknown option {key:?} for {} repositories (see the README's table of options)",
            cloud.name()
        ))
    })?;
    Ok(with(builder, parsed, value.to_owned()))
}

impl CloudTarget {
    /// Opens `s3://bucket/prefix`, `az://container/prefix` or
    /// `gs://bucket/prefix`. Credentials and settings come from the cloud's
    /// standard environment variables, overridden by `options`.
    pub fn open(cloud: Cloud, location: &str, options: &TargetOptions) -> Result<Self> {
        let (scheme, rest) = location
            .split_once("://")
            .ok_or_else(|| Error::InvalidInput(format!("{location:?} is not a URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{location:?} names no bucket (expected {scheme}://BUCKET/PREFIX)"
            )));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            check_key(prefix)?;
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
                        Error::InvalidInput(format!("option {RETRIES}={value:?}: expected a count"))
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

    fn path(&self, key: &str) -> Result<Path> {
        check_key(key)?;
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

    fn key_of(&self, path: &Path) -> Option<String> {
        path.as_ref().strip_prefix(&self.prefix).map(str::to_owned)
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.shared.runtime.block_on(future)
    }

    fn store(&self) -> &dyn ObjectStore {
        self.shared.store.as_ref()
    }

    fn map_err(&self, action: &'static str, key: &str, e: &object_store::Error) -> Error {
        self.shared.map_err(action, key, e)
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
    retry: RetryConfig,
) -> Result<Arc<dyn ObjectStore>> {
    let built: object_store::Result<Arc<dyn ObjectStore>> = match cloud {
        #[cfg(feature = "s3")]
        Cloud::S3 => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let mut b = AmazonS3Builder::from_env().with_url(url).with_retry(retry);
            for (k, v) in options {
                b = apply::<_, AmazonS3ConfigKey>(b, cloud, k, v, AmazonS3Builder::with_config)?;
            }
            check_credentials(cloud, options)?;
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        #[cfg(feature = "azure")]
        Cloud::Azure => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(url.replacen("azure://", "az://", 1))
                .with_retry(retry);
            for (k, v) in options {
                b = apply::<_, AzureConfigKey>(b, cloud, k, v, MicrosoftAzureBuilder::with_config)?;
            }
            check_credentials(cloud, options)?;
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        #[cfg(feature = "gcs")]
        Cloud::Gcs => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry);
            for (k, v) in options {
                b = apply::<_, GoogleConfigKey>(
                    b,
                    cloud,
                    k,
                    v,
                    GoogleCloudStorageBuilder::with_config,
                )?;
            }
            check_credentials(cloud, options)?;
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
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
        Error::InvalidInput(format!(
            "cannot configure the {} repository {url}: {} (set its credentials in the environment or with -o)",
            cloud.name(),
            error_text(&e)
        ))
    })
}

impl Target for CloudTarget {
    fn location(&self) -> String {
        self.shared.location.clone()
    }

    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(CloudWriter {
            path: self.path(key)?,
            key: key.to_owned(),
            shared: Arc::clone(&self.shared),
            first: Vec::new(),
            upload: None,
        }))
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
        let path = self.path(key)?;
        let result = self
            .block_on(self.store().get(&path))
            .map_err(|e| self.map_err("read", key, &e))?;
        Ok(Box::new(CloudReader {
            stream: result.into_stream(),
            current: Bytes::new(),
            runtime: self.shared.runtime,
            key: format!("{}/{key}", self.shared.location),
        }))
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
struct CloudWriter {
    path: Path,
    key: String,
    shared: Arc<Shared>,
    /// Bytes before the first part is full.
    first: Vec<u8>,
    upload: Option<WriteMultipart>,
}

impl CloudWriter {
    fn io_error(&self, action: &'static str, e: &object_store::Error) -> io::Error {
        let mapped = self.shared.map_err(action, &self.key, e);
        io::Error::other(mapped.to_string())
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
            let upload = runtime
                .block_on(self.shared.store.put_multipart(&self.path))
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
        let runtime = self.shared.runtime;
        let result = match self.upload.take() {
            None => {
                let body = PutPayload::from(std::mem::take(&mut self.first));
                runtime
                    .block_on(self.shared.store.put(&self.path, body))
                    .map(drop)
            }
            Some(upload) => runtime.block_on(upload.finish()).map(drop),
        };
        result.map_err(|e| self.shared.map_err("upload", &self.key, &e))
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
