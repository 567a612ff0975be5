//! Where ticket files are kept: a local directory (the default) or a bucket of an S3-compatible
//! object store (through `object_store`), and their locations as announced in
//! `TicketsRendered.location`: `file:///<path>` or `s3://<bucket>/<key>`. The ticket-file adapter
//! writes through it; its `TicketFiles` service and the email adapter read through it.
//!
//! It keeps no list of what it holds (the ticket-file adapter's sled state does) and never
//! deletes. A file is written whole or not at all: in the directory a temporary file, fsync,
//! rename, fsync of the directory; in a bucket one PUT, which S3 makes visible only complete. An
//! order's file written again replaces it with the same bytes (rendering is deterministic).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::{ObjectStoreExt, PutPayload};

/// How long the check of a bucket at start may take: object_store retries a store out of reach
/// for minutes, and a process that cannot store its files should say so at once.
const CHECK_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The location can never be read here: malformed, or in a bucket this process was not
    /// given. Trying again cannot help until the configuration changes.
    #[error("{0}")]
    Elsewhere(String),
    /// Reading or writing failed; it may work later.
    #[error("{0}")]
    Io(String),
}

/// Where one file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An absolute path on this host.
    Local(PathBuf),
    /// An object of a bucket.
    Object { bucket: String, key: String },
}

impl Location {
    /// As announced: `file://` and the absolute path, or `s3://bucket/key`.
    pub fn url(&self) -> String {
        match self {
            Location::Local(path) => format!("file://{}", path.display()),
            Location::Object { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }

    /// Reads an announced location: `file://` and an absolute path, or `s3://bucket/key`, of a
    /// PDF.
    pub fn parse_url(url: &str) -> Result<Location, FileError> {
        let location = if let Some(path) = url.strip_prefix("file://") {
            path.starts_with('/')
                .then(|| Location::Local(PathBuf::from(path)))
        } else if let Some(rest) = url.strip_prefix("s3://") {
            rest.split_once('/')
                .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
                .map(|(bucket, key)| Location::Object {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                })
        } else {
            None
        };
        location.filter(|_| url.ends_with(".pdf")).ok_or_else(|| {
            FileError::Elsewhere(format!(
                "the ticket file's location `{}` is not a file:// or s3:// URL of a PDF",
                url.chars().take(300).collect::<String>()
            ))
        })
    }

    /// As the ticket-file adapter records it: a local file by its path (as records made before
    /// buckets were, so they read the same), an object by its URL.
    pub fn record(&self) -> String {
        match self {
            Location::Local(path) => path.display().to_string(),
            Location::Object { .. } => self.url(),
        }
    }

    /// What `record` wrote.
    pub fn from_record(text: &str) -> Result<Location, FileError> {
        if text.starts_with("s3://") {
            Location::parse_url(text)
        } else {
            Ok(Location::Local(PathBuf::from(text)))
        }
    }
}

/// A bucket of an S3-compatible store, as told at start.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Put before `<event id>/<order id>.pdf` in every key; empty, or ending in `/` to make a
    /// folder of it.
    pub prefix: String,
    /// An S3-compatible server's URL; none: AWS. `http://` only on a loopback address.
    pub endpoint: Option<String>,
    /// None: the builder's (`AWS_REGION`, else us-east-1).
    pub region: Option<String>,
}

/// A bucket, checked reachable with the credentials given.
pub struct Bucket {
    name: String,
    prefix: String,
    /// Where it is, for messages.
    endpoint: String,
    store: AmazonS3,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Bucket(s3://{}/{} at {})",
            self.name, self.prefix, self.endpoint
        )
    }
}

/// Makes ring the process's TLS provider, as tonic, lettre and reqwest 0.12 already use it:
/// object_store's HTTP client (reqwest 0.13, built without a provider of its own) takes the
/// process's. Setting it twice changes nothing.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether `endpoint` is plain HTTP to this host.
fn http_to_loopback(endpoint: &str) -> Option<bool> {
    let rest = endpoint.strip_prefix("http://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    Some(
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
    )
}

impl Bucket {
    /// The bucket of `settings`, with what `builder` carries besides (credentials: `from_env`
    /// reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and the rest), checked with one
    /// request: a listing of at most one key under the prefix. A bucket that does not exist,
    /// credentials refused or a store out of reach fail here, named.
    pub async fn connect(
        builder: AmazonS3Builder,
        settings: &S3Settings,
    ) -> Result<Bucket, FileError> {
        let invalid = |why: String| FileError::Elsewhere(why);
        if settings.bucket.is_empty() {
            return Err(invalid("the S3 bucket's name is empty".into()));
        }
        // Keys must come out as written: object_store drops a leading `/` and refuses `//`.
        let sample = format!(
            "{}00000000-0000-0000-0000-000000000000/00000000-0000-0000-0000-000000000000.pdf",
            settings.prefix
        );
        if object_store::path::Path::parse(&sample)
            .ok()
            .is_none_or(|p| p.as_ref() != sample)
        {
            return Err(invalid(format!(
                "the S3 key prefix `{}` would not make keys as written: no leading `/`, no `//`, \
                 no `.` or `..` segments",
                settings.prefix
            )));
        }
        install_tls_provider();
        let mut builder = builder.with_bucket_name(&settings.bucket);
        // The flag, else what the environment gave the builder (`AWS_ENDPOINT_URL_S3`,
        // `AWS_ENDPOINT`): the same rule for plain HTTP either way.
        let endpoint = settings.endpoint.clone().or_else(|| {
            use object_store::aws::AmazonS3ConfigKey as Key;
            builder
                .get_config_value(&Key::S3Endpoint)
                .or_else(|| builder.get_config_value(&Key::Endpoint))
        });
        if let Some(endpoint) = &endpoint {
            match http_to_loopback(endpoint) {
                Some(true) => builder = builder.with_allow_http(true),
                Some(false) => {
                    return Err(invalid(format!(
                        "the S3 endpoint `{endpoint}` is plain HTTP to another host: use https://"
                    )));
                }
                None => {}
            }
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        let endpoint = endpoint.unwrap_or_else(|| "AWS".to_string());
        let store = builder.build().map_err(|e| {
            invalid(format!(
                "S3 bucket `{}` at {endpoint}: {e}",
                settings.bucket
            ))
        })?;
        let bucket = Bucket {
            name: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            endpoint,
            store,
        };
        bucket.check().await?;
        Ok(bucket)
    }

    /// `connect` with what the standard AWS environment variables say besides: credentials
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, else a container's or
    /// an instance's role) and defaults the settings override (`AWS_REGION`, `AWS_ENDPOINT`). For
    /// the binaries, once, at start; no settings, no bucket.
    pub async fn connect_from_env(
        settings: Option<S3Settings>,
    ) -> Result<Option<Bucket>, FileError> {
        match settings {
            Some(s) => Ok(Some(
                Bucket::connect(AmazonS3Builder::from_env(), &s).await?,
            )),
            None => Ok(None),
        }
    }

    async fn check(&self) -> Result<(), FileError> {
        let one = PaginatedListOptions {
            max_keys: Some(1),
            ..Default::default()
        };
        let prefix = (!self.prefix.is_empty()).then_some(self.prefix.as_str());
        let listed =
            tokio::time::timeout(CHECK_WITHIN, self.store.list_paginated(prefix, one)).await;
        let (name, endpoint) = (&self.name, &self.endpoint);
        let e = match listed {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => {
                return Err(FileError::Io(format!(
                    "S3 bucket `{name}` at {endpoint}: no answer within {CHECK_WITHIN:?}"
                )));
            }
        };
        // object_store reports a failed listing as a generic error; S3's error code, in the
        // answer it quotes, says what went wrong.
        let has = |codes: &[&str]| {
            codes
                .iter()
                .any(|c| e.contains(&format!("<Code>{c}</Code>")))
        };
        let why = if has(&[
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
        ]) || e.contains("403 Forbidden")
        {
            "credentials refused (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        } else if has(&["NoSuchBucket"]) {
            "no such bucket"
        } else {
            "cannot be listed"
        };
        Err(FileError::Io(format!(
            "S3 bucket `{name}` at {endpoint}: {why}: {}",
            s3_answer(&e)
        )))
    }

    /// `s3://bucket/prefix`, for logs.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.name, self.prefix)
    }
}

/// What an S3 error says, for a log: its code and message when it quotes S3's answer, else the
/// error cut short. Never the rest of the answer: on a signature mismatch S3 echoes the signed
/// request, which holds the session token.
fn s3_answer(e: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = e.find(&open)? + open.len();
        let end = e[start..].find(&format!("</{name}>"))? + start;
        Some(e[start..end].to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => {
            let cut = e.find('<').unwrap_or(e.len()).min(300);
            let head = e
                .char_indices()
                .take_while(|(i, _)| *i < cut)
                .map(|(_, c)| c);
            head.collect()
        }
    }
}

/// Where new files go (the bucket if there is one, else the directory) and where files are
/// read from.
#[derive(Debug)]
pub struct Files {
    dir: Option<PathBuf>,
    bucket: Option<Bucket>,
}

impl Files {
    /// New files in `bucket` if given, else in `dir` (made if missing); `dir` must be UTF-8, as
    /// announced locations are text. Files at a local path are read whatever `dir` is, so
    /// records written before a move to a bucket still read.
    pub fn new(dir: Option<&Path>, bucket: Option<Bucket>) -> Result<Files, FileError> {
        let dir = match dir {
            Some(dir) if bucket.is_none() => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| FileError::Io(format!("cannot make {}: {e}", dir.display())))?;
                let dir = std::path::absolute(dir)
                    .map_err(|e| FileError::Io(format!("{}: {e}", dir.display())))?;
                if dir.to_str().is_none() {
                    return Err(FileError::Elsewhere(format!(
                        "the file directory {} is not UTF-8",
                        dir.display()
                    )));
                }
                Some(dir)
            }
            _ => None,
        };
        Ok(Files { dir, bucket })
    }

    /// Where new files go, for logs: the directory, or `s3://bucket/prefix`.
    pub fn target(&self) -> String {
        match (&self.bucket, &self.dir) {
            (Some(bucket), _) => bucket.url(),
            (None, Some(dir)) => dir.display().to_string(),
            (None, None) => "nowhere".into(),
        }
    }

    /// Where an order's file goes: one per order under its event, so a second render of an
    /// order replaces its file rather than adding one.
    pub fn location_of(&self, event_id: &str, order_id: &str) -> Result<Location, FileError> {
        let safe = |s: &str| {
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        };
        if !safe(event_id) || !safe(order_id) {
            return Err(FileError::Elsewhere(format!(
                "ids must be UUIDs to name a file: event {event_id:?}, order {order_id:?}"
            )));
        }
        match (&self.bucket, &self.dir) {
            (Some(bucket), _) => Ok(Location::Object {
                bucket: bucket.name.clone(),
                key: format!("{}{event_id}/{order_id}.pdf", bucket.prefix),
            }),
            (None, Some(dir)) => Ok(Location::Local(
                dir.join(event_id).join(format!("{order_id}.pdf")),
            )),
            (None, None) => Err(FileError::Elsewhere(
                "no directory or bucket to write files to".into(),
            )),
        }
    }

    /// The bucket a location names, if it is this process's.
    fn bucket_of(&self, bucket: &str) -> Result<&Bucket, FileError> {
        match &self.bucket {
            Some(b) if b.name == bucket => Ok(b),
            Some(b) => Err(FileError::Elsewhere(format!(
                "the ticket file is in S3 bucket `{bucket}`, not in `{}`, the one this adapter \
                 is given (--files-s3-bucket)",
                b.name
            ))),
            None => Err(FileError::Elsewhere(format!(
                "the ticket file is in S3 bucket `{bucket}`, and this adapter is given no \
                 bucket (--files-s3-bucket)"
            ))),
        }
    }

    /// Writes `pdf` whole at `location`.
    pub async fn write(&self, location: &Location, pdf: Vec<u8>) -> Result<(), FileError> {
        match location {
            Location::Local(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || write_file(&path, &pdf))
                    .await
                    .map_err(|e| FileError::Io(e.to_string()))?
            }
            Location::Object { bucket, key } => {
                let bucket = self.bucket_of(bucket)?;
                let path = object_store::path::Path::from(key.as_str());
                bucket
                    .store
                    .put(&path, PutPayload::from(pdf))
                    .await
                    .map(|_| ())
                    .map_err(|e| FileError::Io(format!("{}: {e}", location.url())))
            }
        }
    }

    /// The file at `location`, refused unread if over `max_bytes`.
    pub async fn read(&self, location: &Location, max_bytes: u64) -> Result<Vec<u8>, FileError> {
        let url = location.url();
        let too_big = |bytes: u64| {
            FileError::Io(format!(
                "ticket file {url} has {bytes} bytes, over {max_bytes}"
            ))
        };
        match location {
            Location::Local(path) => {
                let path = path.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let bytes = std::fs::metadata(&path)?.len();
                    if bytes > max_bytes {
                        return Ok(Err(bytes));
                    }
                    std::fs::read(&path).map(Ok)
                })
                .await
                .map_err(|e| FileError::Io(e.to_string()))?;
                match read {
                    Ok(Ok(pdf)) => Ok(pdf),
                    Ok(Err(bytes)) => Err(too_big(bytes)),
                    Err(e) => Err(FileError::Io(format!("ticket file {url}: {e}"))),
                }
            }
            Location::Object { bucket, key } => {
                let bucket = self.bucket_of(bucket)?;
                let io = |e: object_store::Error| FileError::Io(format!("ticket file {url}: {e}"));
                let got = bucket
                    .store
                    .get(&object_store::path::Path::from(key.as_str()))
                    .await
                    .map_err(io)?;
                if got.meta.size > max_bytes {
                    return Err(too_big(got.meta.size));
                }
                Ok(got.bytes().await.map_err(io)?.to_vec())
            }
        }
    }
}

/// Writes `pdf` at `path` whole: a temporary file beside it, fsync, rename, fsync of the
/// directory. Blocking.
fn write_file(path: &Path, pdf: &[u8]) -> Result<(), FileError> {
    use std::io::Write;
    let io = |e: std::io::Error| FileError::Io(format!("ticket file {}: {e}", path.display()));
    let dir = path.parent().expect("a file path has a parent");
    std::fs::create_dir_all(dir).map_err(io)?;
    let temporary = path.with_extension("pdf.tmp");
    {
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(pdf).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&temporary, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = "0190a5c8-0000-7000-8000-000000000001";
    const ORDER: &str = "0190a5c8-0000-7000-8000-000000000002";

    #[test]
    fn an_s3_answer_is_logged_as_its_code_and_message_only() {
        let e = "Generic S3 error: Error performing list request: Client error with status \
                 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                 <Message>The request signature does not match</Message><CanonicalRequest>GET\n\
                 x-amz-security-token:SECRET-SESSION-TOKEN</CanonicalRequest></Error>";
        let said = s3_answer(e);
        assert_eq!(
            said,
            "SignatureDoesNotMatch: The request signature does not match"
        );
        assert_eq!(s3_answer("connection refused"), "connection refused");
        assert!(!s3_answer(&format!("{} <x>SECRET", "a".repeat(400))).contains("SECRET"));
    }

    #[test]
    fn locations_read_back_as_written() {
        let local = Location::Local(PathBuf::from("/srv/files/e/o.pdf"));
        assert_eq!(local.url(), "file:///srv/files/e/o.pdf");
        assert_eq!(local.record(), "/srv/files/e/o.pdf");
        let object = Location::Object {
            bucket: "tickets".into(),
            key: "prod/e/o.pdf".into(),
        };
        assert_eq!(object.url(), "s3://tickets/prod/e/o.pdf");
        for l in [&local, &object] {
            assert_eq!(&Location::parse_url(&l.url()).unwrap(), l);
            assert_eq!(&Location::from_record(&l.record()).unwrap(), l);
        }
        for bad in [
            "file://relative/o.pdf",
            "file:///srv/o.txt",
            "s3://bucket-only.pdf",
            "s3:///key.pdf",
            "http://host/o.pdf",
        ] {
            assert!(
                matches!(Location::parse_url(bad), Err(FileError::Elsewhere(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn plain_http_only_to_this_host() {
        for (endpoint, loopback) in [
            ("http://127.0.0.1:9000", Some(true)),
            ("http://localhost:9000/", Some(true)),
            ("http://[::1]:9000", Some(true)),
            ("http://s3.example.com", Some(false)),
            ("http://10.0.0.1:9000", Some(false)),
            ("https://s3.example.com", None),
        ] {
            assert_eq!(http_to_loopback(endpoint), loopback, "{endpoint}");
        }
    }

    #[tokio::test]
    async fn a_directory_holds_one_whole_file_per_order() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(Some(&dir.path().join("files")), None).unwrap();
        let location = files.location_of(EVENT, ORDER).unwrap();
        let Location::Local(path) = &location else {
            panic!("{location:?}")
        };
        assert_eq!(
            *path,
            std::path::absolute(dir.path().join("files"))
                .unwrap()
                .join(EVENT)
                .join(format!("{ORDER}.pdf"))
        );
        files
            .write(&location, b"%PDF-1.7 one".to_vec())
            .await
            .unwrap();
        files
            .write(&location, b"%PDF-1.7 two".to_vec())
            .await
            .unwrap();
        assert_eq!(files.read(&location, 100).await.unwrap(), b"%PDF-1.7 two");
        assert!(!path.with_extension("pdf.tmp").exists());
        assert!(matches!(
            files.read(&location, 5).await,
            Err(FileError::Io(e)) if e.contains("over 5")
        ));
        assert!(files.location_of("../etc", ORDER).is_err());
        assert!(files.location_of(EVENT, "x/y").is_err());
        let elsewhere = Location::Object {
            bucket: "tickets".into(),
            key: "e/o.pdf".into(),
        };
        assert!(matches!(
            files.read(&elsewhere, 100).await,
            Err(FileError::Elsewhere(e)) if e.contains("given no bucket")
        ));
    }
}
