//! A blocking registry client for bundles and image layouts.
//!
//! [`RegistryClient`] wraps `oci-client` on a current-thread tokio runtime of its own, as edged's
//! Docker runtime wraps bollard, so the synchronous compiler and device runtime call it like any
//! other function. Every call runs under the client's deadline (if one is set), and every read
//! from the network under its read timeout, so a stalled registry fails the call instead of
//! hanging it. File reads and writes inside the runtime are plain blocking calls: the runtime
//! runs one call at a time and has nothing else to schedule.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use edge_bundle::display::{escaped, escaped_message};
use edge_bundle::{BundleManifest, Sha256Digest, SignatureFile, TarGuard};
use futures_util::StreamExt as _;
use image_reference::Reference;
use oci_client::client::{BlobResponse, Certificate, CertificateEncoding, ClientConfig};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};

use crate::artifact::{BundleLayout, MANIFEST_MEDIA_TYPE, MAX_HEAD_BLOB_BYTES};
use crate::error::RegistryError;

/// The size of the pieces a blob is read from its file in and uploaded as (one `PATCH` each):
/// the most of a blob held in memory at once.
const UPLOAD_CHUNK: usize = 4 << 20;

/// A registry user and password. Its `Debug` form leaves the password out.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password (or token).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// The CA certificates (PEM) to trust instead of the system's, for a private registry.
    pub ca_pem: Option<Vec<u8>>,
    /// Basic credentials; `None` is anonymous access.
    pub credentials: Option<Credentials>,
    /// How long a TCP connection and TLS handshake may take.
    pub connect_timeout: Duration,
    /// How long one read from the network may wait: a registry that sends nothing for this long
    /// fails the request (which a fetch then retries).
    pub read_timeout: Duration,
    /// The longest one call (a push, a fetch) may take altogether, retries included; `None`
    /// leaves only the read timeout, for transfers whose length nobody can bound in advance.
    pub deadline: Option<Duration>,
    /// How many times a blob download that broke off is retried (resuming where it stopped)
    /// within one call.
    pub retries: u32,
    /// The first pause between retries; it doubles each time, up to 8 s.
    pub retry_backoff: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            ca_pem: None,
            credentials: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            deadline: None,
            retries: 5,
            retry_backoff: Duration::from_millis(250),
        }
    }
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReport {
    /// The digest of the pushed manifest.
    pub manifest_digest: Sha256Digest,
    /// The blobs uploaded.
    pub blobs_uploaded: usize,
    /// The blobs the registry already had (answered to `HEAD`), not uploaded again.
    pub blobs_present: usize,
    /// The bytes of the uploaded blobs.
    pub bytes_uploaded: u64,
}

/// A bundle's manifest, config and signatures, fetched and checked against their digests, but
/// not verified: the device checks the signatures over `bundle_json` before it fetches any
/// payload with [`RegistryClient::fetch_payload`].
#[derive(Clone, Debug)]
pub struct FetchedHead {
    /// Where it was fetched from; payload blobs are fetched from the same repository.
    pub reference: Reference,
    /// The digest of the registry manifest.
    pub manifest_digest: Sha256Digest,
    /// The registry manifest, already checked against `manifest`'s payload listing.
    pub layout: BundleLayout,
    /// The exact bytes of `bundle.json`.
    pub bundle_json: Vec<u8>,
    /// `bundle.json` parsed (grammar checked, signatures not).
    pub manifest: BundleManifest,
    /// The exact bytes of `bundle.sig.json`.
    pub signatures: Vec<u8>,
}

/// What a payload fetch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Blobs downloaded (in whole or resumed).
    pub blobs_fetched: usize,
    /// Blobs taken from the device (`have`) or found complete in the target from an earlier
    /// call.
    pub blobs_reused: usize,
    /// The bytes downloaded by this call.
    pub bytes_fetched: u64,
}

/// Where a payload fetch is, after each piece of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchProgress {
    /// The blob being downloaded.
    pub digest: Sha256Digest,
    /// Its bytes on disk so far (a resumed blob starts above zero).
    pub blob_bytes: u64,
    /// Its size.
    pub blob_size: u64,
    /// The bytes this call downloaded so far, all blobs together.
    pub bytes_fetched: u64,
}

/// A blocking client for one set of [`RegistryOptions`].
pub struct RegistryClient {
    runtime: tokio::runtime::Runtime,
    client: oci_client::Client,
    auth: RegistryAuth,
    options: RegistryOptions,
}

/// Parses `host[:port]/repository:tag` (or `@sha256:…`): the registry must be named and a tag
/// or digest given, since a bundle reference that silently meant Docker Hub or `latest` would
/// push or fetch somewhere nobody intended.
pub fn parse_reference(text: &str) -> Result<Reference, RegistryError> {
    let invalid = |reason: &str| RegistryError::InvalidReference {
        reference: escaped(text),
        reason: reason.to_owned(),
    };
    let reference = Reference::parse(text).map_err(|error| invalid(&error.to_string()))?;
    let names_registry = text
        .split_once('/')
        .is_some_and(|(first, _)| first == reference.registry());
    if !names_registry {
        return Err(invalid(
            "it must name the registry: host[:port]/repository:tag",
        ));
    }
    if reference.tag().is_none() && reference.digest().is_none() {
        return Err(invalid("it must have a :tag or an @sha256: digest"));
    }
    Ok(reference)
}

impl RegistryClient {
    /// A client; nothing is contacted until a call.
    pub fn new(options: RegistryOptions) -> Result<Self, RegistryError> {
        // reqwest is built without a crypto provider of its own: the workspace uses ring, and a
        // process-wide default must exist before the first client. Another part of the process
        // may have installed it already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| RegistryError::Setup {
                detail: format!("cannot start the I/O runtime: {error}"),
            })?;
        let mut config = ClientConfig {
            read_timeout: Some(options.read_timeout),
            connect_timeout: Some(options.connect_timeout),
            // A bundle layout has no image index; nothing here picks a platform.
            platform_resolver: None,
            max_concurrent_upload: 1,
            ..ClientConfig::default()
        };
        if let Some(pem) = &options.ca_pem {
            config.tls_certs_only = vec![Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            }];
        }
        let auth = match &options.credentials {
            Some(credentials) => {
                RegistryAuth::Basic(credentials.user.clone(), credentials.password.clone())
            }
            None => RegistryAuth::Anonymous,
        };
        // A PEM file without a certificate would leave no trusted root at all, and every
        // connection would fail as an unknown issuer; say so here instead.
        if let Some(pem) = &options.ca_pem {
            check_ca_pem(pem)?;
        }
        // Not `Client::new`: on a configuration it cannot use, that logs a warning and returns
        // a client with the default configuration, without the CA and the timeouts.
        let client =
            oci_client::Client::try_from(config).map_err(|error| RegistryError::Setup {
                detail: escaped_message(&error.to_string()),
            })?;
        Ok(Self {
            runtime,
            client,
            auth,
            options,
        })
    }

    /// Pushes a bundle file as the artifact layout of `schema/BUNDLE.md` and tags it
    /// `reference`. The bundle's `bundle.json` and `bundle.sig.json` are parsed first (grammar
    /// and well-formed signatures, as `edgec inspect` reads them) and the tar must hold exactly
    /// the listed payload; blobs the repository already has are not uploaded again. Payload
    /// files are streamed from the bundle file in [`UPLOAD_CHUNK`] pieces, hashed on the way,
    /// so a 1 GiB OS image never sits in memory.
    pub fn push_bundle(
        &self,
        bundle: &Path,
        reference: &Reference,
    ) -> Result<PushReport, RegistryError> {
        let contents = read_bundle(bundle)?;
        let layout = BundleLayout::of_bundle(
            &contents.manifest,
            &contents.bundle_json,
            &contents.signatures,
        )
        .map_err(|source| RegistryError::Layout {
            reference: bundle.display().to_string(),
            source,
        })?;
        let target = oci_reference(reference);
        let manifest_bytes = layout.to_manifest_bytes();
        self.run("push", reference, async {
            self.store_auth(&target).await;
            let mut report = PushReport {
                manifest_digest: Sha256Digest::of(&manifest_bytes),
                blobs_uploaded: 0,
                blobs_present: 0,
                bytes_uploaded: 0,
            };
            for blob in layout.blobs() {
                let source = if blob.digest == layout.config.digest {
                    BlobSource::Memory(contents.bundle_json.clone())
                } else if blob.digest == layout.signatures.digest {
                    BlobSource::Memory(contents.signatures.clone())
                } else {
                    let offset = contents
                        .offsets
                        .get(&blob.digest)
                        .copied()
                        .expect("every payload digest has an entry in the bundle");
                    BlobSource::File {
                        path: bundle.to_owned(),
                        offset,
                    }
                };
                self.push_blob(
                    &target,
                    reference,
                    blob.digest,
                    blob.size,
                    source,
                    &mut report,
                )
                .await?;
            }
            self.push_manifest(
                &target,
                reference,
                manifest_bytes.clone(),
                MANIFEST_MEDIA_TYPE,
            )
            .await?;
            tracing::info!(
                reference = %reference.whole(),
                digest = %report.manifest_digest.oci(),
                uploaded = report.blobs_uploaded,
                present = report.blobs_present,
                bytes = report.bytes_uploaded,
                "pushed bundle"
            );
            Ok(report)
        })
    }

    /// Pushes an OCI image layout (`oci-layout`, `index.json` with one image manifest,
    /// `blobs/sha256/…`, the format of a bundle's `payload/images/<module>`) as an ordinary
    /// image tagged `reference`.
    pub fn push_image_layout(
        &self,
        directory: &Path,
        reference: &Reference,
    ) -> Result<PushReport, RegistryError> {
        let image = read_image_layout(directory)?;
        let target = oci_reference(reference);
        self.run("push", reference, async {
            self.store_auth(&target).await;
            let mut report = PushReport {
                manifest_digest: Sha256Digest::of(&image.manifest),
                blobs_uploaded: 0,
                blobs_present: 0,
                bytes_uploaded: 0,
            };
            for (digest, size) in &image.blobs {
                let source = BlobSource::File {
                    path: blob_path(directory, digest),
                    offset: 0,
                };
                self.push_blob(&target, reference, *digest, *size, source, &mut report)
                    .await?;
            }
            self.push_manifest(
                &target,
                reference,
                image.manifest.clone(),
                &image.media_type,
            )
            .await?;
            Ok(report)
        })
    }

    /// The digest of the manifest `reference` names (a `HEAD` request, or a `GET` where the
    /// registry sends no digest header). For a multi-platform image this is the index's digest,
    /// which is what a pinned reference names.
    pub fn resolve(&self, reference: &Reference) -> Result<Sha256Digest, RegistryError> {
        let target = oci_reference(reference);
        self.run("resolve", reference, async {
            let digest = self
                .client
                .fetch_manifest_digest(&target, &self.auth)
                .await
                .map_err(|error| {
                    classify(
                        error,
                        reference.registry(),
                        &format!("manifest {}", shown(reference)),
                    )
                })?;
            sha256_of_header(&digest, reference)
        })
    }

    /// Fetches a bundle's registry manifest, `bundle.json` and `bundle.sig.json`, each bounded
    /// ([`crate::artifact::MAX_MANIFEST_BYTES`], [`MAX_HEAD_BLOB_BYTES`]) and checked against its digest, and
    /// checks the manifest's layers against the payload listing of that `bundle.json`. Nothing
    /// of the payload is fetched.
    pub fn fetch_head(&self, reference: &Reference) -> Result<FetchedHead, RegistryError> {
        let target = oci_reference(reference);
        self.run("fetch", reference, async {
            self.store_auth(&target).await;
            let registry = reference.registry();
            // oci-client reads a manifest response whole; the bound is applied to what it
            // returns, and the read timeout and deadline bound how long a registry can keep
            // sending.
            let (manifest_bytes, digest) = self
                .client
                .pull_manifest_raw(&target, &self.auth, &[MANIFEST_MEDIA_TYPE])
                .await
                .map_err(|error| {
                    classify(error, registry, &format!("manifest {}", shown(reference)))
                })?;
            let manifest_digest = sha256_of_header(&digest, reference)?;
            if Sha256Digest::of(&manifest_bytes) != manifest_digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {}", shown(reference)),
                    expected: manifest_digest,
                    actual: Sha256Digest::of(&manifest_bytes),
                });
            }
            let layout_error = |source| RegistryError::Layout {
                reference: shown(reference),
                source,
            };
            let layout = BundleLayout::parse(&manifest_bytes).map_err(layout_error)?;
            let bundle_json = self
                .fetch_small_blob(&target, registry, layout.config, "bundle.json")
                .await?;
            let manifest =
                BundleManifest::from_canonical_bytes(&bundle_json).map_err(|source| {
                    RegistryError::Bundle {
                        what: format!("bundle.json of {}", shown(reference)),
                        source,
                    }
                })?;
            layout.check_listing(&manifest).map_err(layout_error)?;
            let signatures = self
                .fetch_small_blob(&target, registry, layout.signatures, "bundle.sig.json")
                .await?;
            SignatureFile::parse(&signatures).map_err(|source| RegistryError::Bundle {
                what: format!("bundle.sig.json of {}", shown(reference)),
                source,
            })?;
            Ok(FetchedHead {
                reference: reference.clone(),
                manifest_digest,
                layout,
                bundle_json,
                manifest,
                signatures,
            })
        })
    }

    /// Fetches the payload of `head` into `into`: writes `into/bundle.json`,
    /// `into/bundle.sig.json` and `into/blobs/sha256/<hex>` for every digest of the signed
    /// payload listing (not of the unsigned registry manifest). A blob `have` returns a path for
    /// is hard-linked from there (copied across file systems) once its size and digest check; a
    /// complete blob already in `into` is kept; any other is downloaded to `<hex>.partial`,
    /// resumed with a range request from the partial's length (after a broken transfer within
    /// this call, retried with back-off, or left by an earlier call), checked against its digest
    /// and size, flushed to disk and renamed into place. A blob that fails its digest is deleted.
    pub fn fetch_payload(
        &self,
        head: &FetchedHead,
        have: &dyn Fn(&Sha256Digest) -> Option<PathBuf>,
        into: &Path,
        progress: &mut dyn FnMut(&FetchProgress),
    ) -> Result<FetchReport, RegistryError> {
        let reference = &head.reference;
        let target = oci_reference(reference);
        let blobs_dir = into.join("blobs").join("sha256");
        fs::create_dir_all(&blobs_dir)
            .map_err(|error| RegistryError::io("create", &blobs_dir, error))?;
        write_durably(&into.join("bundle.json"), &head.bundle_json)?;
        write_durably(&into.join("bundle.sig.json"), &head.signatures)?;
        self.run("fetch", reference, async {
            self.store_auth(&target).await;
            let mut report = FetchReport::default();
            let mut done: Vec<Sha256Digest> = Vec::new();
            for file in &head.manifest.payload {
                let digest = Sha256Digest::from_hex(&file.sha256)
                    .expect("a parsed bundle.json lists hex digests");
                if done.contains(&digest) {
                    continue;
                }
                done.push(digest);
                let destination = blobs_dir.join(digest.hex());
                let what = format!("blob {} ({})", digest.oci(), escaped(&file.path));
                if file_matches(&destination, digest, file.size)? {
                    report.blobs_reused += 1;
                    continue;
                }
                if let Some(source) = have(&digest)
                    && file_matches(&source, digest, file.size)?
                {
                    link_or_copy(&source, &destination)?;
                    report.blobs_reused += 1;
                    continue;
                }
                self.download(
                    &target,
                    reference,
                    digest,
                    file.size,
                    &destination,
                    &what,
                    &mut report,
                    progress,
                )
                .await?;
                report.blobs_fetched += 1;
            }
            sync_directory(&blobs_dir)?;
            Ok(report)
        })
    }

    /// Runs `operation` on the runtime under the deadline.
    fn run<T>(
        &self,
        operation: &str,
        reference: &Reference,
        future: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        match self.options.deadline {
            None => self.runtime.block_on(future),
            Some(deadline) => self
                .runtime
                .block_on(async { tokio::time::timeout(deadline, future).await })
                .unwrap_or_else(|_| {
                    Err(RegistryError::Timeout {
                        operation: format!("{operation} of {}", shown(reference)),
                        after: deadline,
                    })
                }),
        }
    }

    async fn store_auth(&self, target: &oci_client::Reference) {
        self.client
            .store_auth_if_needed(target.resolve_registry(), &self.auth)
            .await;
    }

    /// Uploads one blob unless the repository has it.
    async fn push_blob(
        &self,
        target: &oci_client::Reference,
        reference: &Reference,
        digest: Sha256Digest,
        size: u64,
        source: BlobSource,
        report: &mut PushReport,
    ) -> Result<(), RegistryError> {
        let registry = reference.registry();
        let what = format!("blob {}", digest.oci());
        let present = self
            .client
            .blob_exists(target, &digest.oci())
            .await
            .map_err(|error| classify(error, registry, &what))?;
        if present {
            report.blobs_present += 1;
            return Ok(());
        }
        let pushed = match source {
            BlobSource::Memory(bytes) => self.client.push_blob(target, bytes, &digest.oci()).await,
            BlobSource::File { path, offset } => {
                let file =
                    File::open(&path).map_err(|error| RegistryError::io("read", &path, error))?;
                let stream = file_stream(file, offset, size, digest);
                self.client
                    .push_blob_stream(target, stream, &digest.oci(), Some(size))
                    .await
            }
        };
        pushed.map_err(|error| classify(error, registry, &what))?;
        report.blobs_uploaded += 1;
        report.bytes_uploaded += size;
        Ok(())
    }

    async fn push_manifest(
        &self,
        target: &oci_client::Reference,
        reference: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let content_type = media_type.parse().map_err(|_| RegistryError::Registry {
            registry: reference.registry().to_owned(),
            detail: format!("media type {} is not a header value", escaped(media_type)),
            transient: false,
        })?;
        self.client
            .push_manifest_raw(target, bytes, content_type)
            .await
            .map_err(|error| {
                classify(
                    error,
                    reference.registry(),
                    &format!("manifest {}", shown(reference)),
                )
            })?;
        Ok(())
    }

    /// Downloads `bundle.json` or `bundle.sig.json`: at most [`MAX_HEAD_BLOB_BYTES`], exactly
    /// the descriptor's size, matching its digest.
    async fn fetch_small_blob(
        &self,
        target: &oci_client::Reference,
        registry: &str,
        blob: crate::artifact::Blob,
        name: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("{name} (blob {})", blob.digest.oci());
        if blob.size > MAX_HEAD_BLOB_BYTES {
            return Err(RegistryError::TooLarge {
                what,
                limit: MAX_HEAD_BLOB_BYTES,
            });
        }
        let mut stream = match self
            .client
            .pull_blob_stream_partial(target, &blob.digest.oci().as_str(), 0, None)
            .await
            .map_err(|error| classify(error, registry, &what))?
        {
            BlobResponse::Full(stream) | BlobResponse::Partial(stream) => stream,
        };
        let mut bytes = Vec::with_capacity(usize::try_from(blob.size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| broken(registry, &what, &error))?;
            if bytes.len() as u64 + chunk.len() as u64 > blob.size {
                return Err(RegistryError::TooLarge {
                    what,
                    limit: blob.size,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let actual = Sha256Digest::of(&bytes);
        if actual != blob.digest || bytes.len() as u64 != blob.size {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: blob.digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Downloads one payload blob to `destination` through `<hex>.partial`, retrying a broken
    /// transfer from where it stopped.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        target: &oci_client::Reference,
        reference: &Reference,
        digest: Sha256Digest,
        size: u64,
        destination: &Path,
        what: &str,
        report: &mut FetchReport,
        progress: &mut dyn FnMut(&FetchProgress),
    ) -> Result<(), RegistryError> {
        let partial = destination.with_file_name(format!("{}.partial", digest.hex()));
        let mut backoff = self.options.retry_backoff;
        let mut attempt = 0;
        loop {
            let outcome = self
                .download_attempt(
                    target, reference, digest, size, &partial, what, report, progress,
                )
                .await;
            match outcome {
                Ok(()) => break,
                Err(error) if error.is_transient() && attempt < self.options.retries => {
                    attempt += 1;
                    tracing::warn!(blob = %digest.oci(), attempt, %error, "blob download broke off; resuming");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(8));
                }
                Err(error) => return Err(error),
            }
        }
        let actual = hash_file(&partial)?;
        if actual != digest {
            fs::remove_file(&partial)
                .map_err(|error| RegistryError::io("remove", &partial, error))?;
            return Err(RegistryError::DigestMismatch {
                what: format!("{what} from {}", shown(reference)),
                expected: digest,
                actual,
            });
        }
        File::open(&partial)
            .and_then(|file| file.sync_all())
            .map_err(|error| RegistryError::io("flush", &partial, error))?;
        fs::rename(&partial, destination)
            .map_err(|error| RegistryError::io("rename", &partial, error))?;
        Ok(())
    }

    /// One request for the rest of a blob: appends what arrives to `partial`.
    #[allow(clippy::too_many_arguments)]
    async fn download_attempt(
        &self,
        target: &oci_client::Reference,
        reference: &Reference,
        digest: Sha256Digest,
        size: u64,
        partial: &Path,
        what: &str,
        report: &mut FetchReport,
        progress: &mut dyn FnMut(&FetchProgress),
    ) -> Result<(), RegistryError> {
        let registry = reference.registry();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .map_err(|error| RegistryError::io("write", partial, error))?;
        let mut offset = file
            .metadata()
            .map_err(|error| RegistryError::io("read", partial, error))?
            .len();
        if offset > size {
            offset = 0;
        }
        if offset == size && size > 0 {
            return Ok(());
        }
        // A request from offset 0 is a range request too ("bytes=0-"), so oci-client never
        // verifies the stream itself and the digest is checked once, on the whole file.
        let response = self
            .client
            .pull_blob_stream_partial(target, &digest.oci().as_str(), offset, None)
            .await
            .map_err(|error| classify(error, registry, what))?;
        let mut stream = match response {
            BlobResponse::Partial(stream) => stream,
            // The registry ignored the range and sends the whole blob: start over.
            BlobResponse::Full(stream) => {
                offset = 0;
                stream
            }
        };
        if offset > 0 {
            tracing::info!(blob = %digest.oci(), offset, "resuming a blob download");
        }
        let written = |error| RegistryError::io("write", partial, error);
        file.set_len(offset).map_err(written)?;
        file.seek(SeekFrom::Start(offset)).map_err(written)?;
        let mut position = offset;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| broken(registry, what, &error))?;
            if position + chunk.len() as u64 > size {
                drop(file);
                let _ = fs::remove_file(partial);
                return Err(RegistryError::TooLarge {
                    what: what.to_owned(),
                    limit: size,
                });
            }
            file.write_all(&chunk).map_err(written)?;
            position += chunk.len() as u64;
            report.bytes_fetched += chunk.len() as u64;
            progress(&FetchProgress {
                digest,
                blob_bytes: position,
                blob_size: size,
                bytes_fetched: report.bytes_fetched,
            });
        }
        if position < size {
            return Err(RegistryError::Registry {
                registry: registry.to_owned(),
                detail: format!("{what}: the transfer ended after {position} of {size} bytes"),
                transient: true,
            });
        }
        Ok(())
    }
}

/// Where an upload's bytes come from.
enum BlobSource {
    Memory(Vec<u8>),
    File { path: PathBuf, offset: u64 },
}

/// `size` bytes of `file` from `offset`, in [`UPLOAD_CHUNK`] pieces, hashed on the way: a file
/// that does not hold what its digest promises fails the upload before it is committed.
fn file_stream(
    file: File,
    offset: u64,
    size: u64,
    digest: Sha256Digest,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<Bytes>> + Send + 'static {
    struct State {
        file: File,
        offset: u64,
        left: u64,
        hasher: Sha256,
        failed: bool,
    }
    let state = State {
        file,
        offset,
        left: size,
        hasher: Sha256::new(),
        failed: false,
    };
    futures_util::stream::unfold(state, move |mut state| async move {
        if state.left == 0 || state.failed {
            return None;
        }
        let length = usize::try_from(state.left)
            .unwrap_or(UPLOAD_CHUNK)
            .min(UPLOAD_CHUNK);
        let mut buffer = vec![0u8; length];
        let read = state
            .file
            .seek(SeekFrom::Start(state.offset))
            .and_then(|_| state.file.read_exact(&mut buffer));
        if let Err(error) = read {
            state.failed = true;
            return Some((Err(OciDistributionError::IoError(error)), state));
        }
        state.hasher.update(&buffer);
        state.offset += length as u64;
        state.left -= length as u64;
        if state.left == 0 {
            let actual = hex::encode(state.hasher.clone().finalize());
            if actual != digest.hex() {
                state.failed = true;
                return Some((
                    Err(OciDistributionError::IoError(io::Error::other(format!(
                        "the bundle's bytes for {} hash to sha256:{actual}",
                        digest.oci()
                    )))),
                    state,
                ));
            }
        }
        Some((Ok(Bytes::from(buffer)), state))
    })
}

/// The head of a bundle file and where its payload entries start.
struct BundleContents {
    bundle_json: Vec<u8>,
    signatures: Vec<u8>,
    manifest: BundleManifest,
    /// The offset in the file of each payload digest's bytes.
    offsets: BTreeMap<Sha256Digest, u64>,
}

/// Reads a bundle file's `bundle.json` and `bundle.sig.json` (parsed as `edgec inspect` reads
/// them) and finds each payload entry, which must be exactly the listed ones, of the listed
/// sizes. The payload bytes are hashed while they are uploaded.
fn read_bundle(path: &Path) -> Result<BundleContents, RegistryError> {
    let malformed = |source| RegistryError::Bundle {
        what: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(|error| RegistryError::io("read", path, error))?;
    // Once the file is open, what cannot be read is the bundle's own fault: not a tar, or cut
    // short.
    let read_error = |error| malformed(edge_bundle::BundleError::Read(error));
    let mut archive = tar::Archive::new(TarGuard::new(io::BufReader::new(file)));
    let mut entries = archive.entries().map_err(read_error)?;
    let mut head = Vec::new();
    for name in [
        edge_bundle::manifest::MANIFEST_PATH,
        edge_bundle::manifest::SIGNATURES_PATH,
    ] {
        let not_bundle = || {
            malformed(edge_bundle::BundleError::MalformedManifest(format!(
                "the bundle does not start with {name}"
            )))
        };
        let mut entry = entries.next().ok_or_else(not_bundle)?.map_err(read_error)?;
        let entry_path = entry
            .path()
            .map_err(read_error)?
            .to_string_lossy()
            .into_owned();
        if entry_path != name {
            return Err(not_bundle());
        }
        if entry.size() > MAX_HEAD_BLOB_BYTES {
            return Err(RegistryError::TooLarge {
                what: format!("{name} in {}", path.display()),
                limit: MAX_HEAD_BLOB_BYTES,
            });
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(read_error)?;
        head.push(bytes);
    }
    let signatures = head.pop().expect("two head entries");
    let bundle_json = head.pop().expect("two head entries");
    let manifest = BundleManifest::from_canonical_bytes(&bundle_json).map_err(malformed)?;
    SignatureFile::parse(&signatures).map_err(malformed)?;
    let mut offsets = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(read_error)?;
        let entry_path = entry
            .path()
            .map_err(read_error)?
            .to_string_lossy()
            .into_owned();
        let listed = manifest.payload_file(&entry_path).ok_or_else(|| {
            malformed(edge_bundle::BundleError::UnlistedEntry(entry_path.clone()))
        })?;
        if entry.size() != listed.size {
            return Err(malformed(edge_bundle::BundleError::SizeMismatch {
                path: entry_path,
                expected: listed.size,
                actual: entry.size(),
            }));
        }
        let digest =
            Sha256Digest::from_hex(&listed.sha256).expect("a parsed bundle.json lists hex digests");
        offsets.entry(digest).or_insert(entry.raw_file_position());
        if !seen.insert(entry_path.clone()) {
            return Err(malformed(edge_bundle::BundleError::DuplicateEntry(
                entry_path,
            )));
        }
    }
    if seen.len() != manifest.payload.len() {
        return Err(malformed(edge_bundle::BundleError::MalformedManifest(
            format!(
                "the bundle holds {} of the {} listed payload files",
                seen.len(),
                manifest.payload.len()
            ),
        )));
    }
    Ok(BundleContents {
        bundle_json,
        signatures,
        manifest,
        offsets,
    })
}

/// An image layout's manifest and the blobs it needs (config first, then layers).
struct ImageLayout {
    manifest: Vec<u8>,
    media_type: String,
    blobs: Vec<(Sha256Digest, u64)>,
}

fn read_image_layout(directory: &Path) -> Result<ImageLayout, RegistryError> {
    let index_path = directory.join("index.json");
    let invalid = |detail: String| RegistryError::Bundle {
        what: directory.display().to_string(),
        source: edge_bundle::BundleError::MalformedManifest(detail),
    };
    let index = read_json(&index_path)?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let [descriptor] = manifests.as_slice() else {
        return Err(invalid(format!(
            "index.json lists {} manifests; an image layout to push has exactly one",
            manifests.len()
        )));
    };
    let digest = descriptor_digest(descriptor, &invalid)?;
    let manifest_path = blob_path(directory, &digest);
    let manifest = fs::read(&manifest_path)
        .map_err(|error| RegistryError::io("read", &manifest_path, error))?;
    if Sha256Digest::of(&manifest) != digest {
        return Err(RegistryError::DigestMismatch {
            what: format!("image manifest {}", manifest_path.display()),
            expected: digest,
            actual: Sha256Digest::of(&manifest),
        });
    }
    let value: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|error| invalid(format!("the image manifest is not JSON: {error}")))?;
    let media_type = value["mediaType"]
        .as_str()
        .or_else(|| descriptor["mediaType"].as_str())
        .unwrap_or(MANIFEST_MEDIA_TYPE)
        .to_owned();
    let mut blobs = Vec::new();
    let layers = value["layers"].as_array().cloned().unwrap_or_default();
    for blob in std::iter::once(&value["config"]).chain(layers.iter()) {
        let digest = descriptor_digest(blob, &invalid)?;
        let size = blob["size"]
            .as_u64()
            .ok_or_else(|| invalid(format!("the descriptor of {} has no size", digest.oci())))?;
        if !blobs.iter().any(|(seen, _)| *seen == digest) {
            blobs.push((digest, size));
        }
    }
    Ok(ImageLayout {
        manifest,
        media_type,
        blobs,
    })
}

fn descriptor_digest(
    descriptor: &serde_json::Value,
    invalid: &dyn Fn(String) -> RegistryError,
) -> Result<Sha256Digest, RegistryError> {
    descriptor["digest"]
        .as_str()
        .and_then(Sha256Digest::from_oci)
        .ok_or_else(|| invalid("a descriptor has no sha256 digest".to_owned()))
}

fn read_json(path: &Path) -> Result<serde_json::Value, RegistryError> {
    let bytes = fs::read(path).map_err(|error| RegistryError::io("read", path, error))?;
    serde_json::from_slice(&bytes)
        .map_err(|error| RegistryError::io("parse", path, io::Error::other(error)))
}

fn blob_path(directory: &Path, digest: &Sha256Digest) -> PathBuf {
    directory.join("blobs").join("sha256").join(digest.hex())
}

/// The oci-client form of a reference: registry, repository, and the digest if there is one
/// (else the tag).
fn oci_reference(reference: &Reference) -> oci_client::Reference {
    let (registry, repository) = (reference.registry().to_owned(), reference.repository());
    match (reference.tag(), reference.digest()) {
        (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
            registry,
            repository,
            tag.to_owned(),
            digest.to_owned(),
        ),
        (_, Some(digest)) => {
            oci_client::Reference::with_digest(registry, repository, digest.to_owned())
        }
        (tag, None) => oci_client::Reference::with_tag(
            registry,
            repository,
            tag.unwrap_or(image_reference::DEFAULT_TAG).to_owned(),
        ),
    }
}

/// A reference as messages show it.
fn shown(reference: &Reference) -> String {
    escaped(&reference.whole())
}

fn sha256_of_header(digest: &str, reference: &Reference) -> Result<Sha256Digest, RegistryError> {
    Sha256Digest::from_oci(digest).ok_or_else(|| RegistryError::Registry {
        registry: reference.registry().to_owned(),
        detail: format!(
            "the manifest digest of {} is {}, not sha256",
            shown(reference),
            escaped(digest)
        ),
        transient: false,
    })
}

/// A stream that broke off in the middle: the link, worth a retry.
fn broken(registry: &str, what: &str, error: &io::Error) -> RegistryError {
    RegistryError::Registry {
        registry: registry.to_owned(),
        detail: format!("{what}: the transfer broke off: {}", error_chain(error)),
        transient: true,
    }
}

/// An oci-client error as the step that failed.
fn classify(error: OciDistributionError, registry: &str, what: &str) -> RegistryError {
    let registry_name = registry.to_owned();
    match error {
        OciDistributionError::AuthenticationFailure(detail) => RegistryError::Auth {
            registry: registry_name,
            detail: escaped(&detail),
        },
        OciDistributionError::UnauthorizedError { .. } => RegistryError::Auth {
            registry: registry_name,
            detail: format!("401 Unauthorized for {what}"),
        },
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
            registry: registry_name,
            what: what.to_owned(),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            use oci_client::errors::OciErrorCode;
            let codes: Vec<&OciErrorCode> =
                envelope.errors.iter().map(|error| &error.code).collect();
            let detail = envelope
                .errors
                .iter()
                .map(|error| format!("{:?}: {}", error.code, escaped(&error.message)))
                .collect::<Vec<_>>()
                .join("; ");
            if codes.iter().any(|code| {
                matches!(
                    code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                RegistryError::NotFound {
                    registry: registry_name,
                    what: what.to_owned(),
                }
            } else if codes
                .iter()
                .any(|code| matches!(code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                RegistryError::Auth {
                    registry: registry_name,
                    detail,
                }
            } else {
                RegistryError::Registry {
                    registry: registry_name,
                    detail: format!("{what}: {detail}"),
                    transient: codes
                        .iter()
                        .any(|code| matches!(code, OciErrorCode::Toomanyrequests)),
                }
            }
        }
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 | 403 => RegistryError::Auth {
                registry: registry_name,
                detail: format!("{code} for {what}"),
            },
            404 => RegistryError::NotFound {
                registry: registry_name,
                what: what.to_owned(),
            },
            _ => RegistryError::Registry {
                registry: registry_name,
                detail: format!("{what}: HTTP {code}: {}", escaped(&message)),
                transient: code >= 500 || code == 429,
            },
        },
        OciDistributionError::RequestError(error) => {
            let status = error.status().map(|status| status.as_u16());
            let chain = error_chain(&error);
            if matches!(status, Some(401 | 403)) {
                RegistryError::Auth {
                    registry: registry_name,
                    detail: format!("{} for {what}", status.unwrap_or_default()),
                }
            } else if status == Some(404) {
                RegistryError::NotFound {
                    registry: registry_name,
                    what: what.to_owned(),
                }
            } else if has_tls_cause(&error) {
                RegistryError::Tls {
                    registry: registry_name,
                    detail: chain,
                }
            } else if error.is_timeout() {
                RegistryError::Registry {
                    registry: registry_name,
                    detail: format!("{what}: the registry did not answer in time ({chain})"),
                    transient: true,
                }
            } else if error.is_connect() {
                RegistryError::Connect {
                    registry: registry_name,
                    detail: chain,
                }
            } else {
                RegistryError::Registry {
                    registry: registry_name,
                    detail: format!("{what}: {chain}"),
                    transient: status.is_none_or(|status| status >= 500),
                }
            }
        }
        OciDistributionError::DigestError(error) => RegistryError::Registry {
            registry: registry_name,
            detail: format!("{what}: {error}"),
            transient: false,
        },
        OciDistributionError::IoError(error) => RegistryError::Registry {
            registry: registry_name,
            detail: format!("{what}: {}", error_chain(&error)),
            transient: false,
        },
        other => RegistryError::Registry {
            registry: registry_name,
            detail: format!("{what}: {}", escaped(&other.to_string())),
            transient: false,
        },
    }
}

/// Whether a rustls error is among the causes. The connector stack (reqwest, hyper-util,
/// tokio-rustls) boxes the rustls error into an `io::Error` whose `source` skips it, and does
/// not always pass the box on, so the messages rustls writes for its error kinds are matched
/// too.
fn has_tls_cause(error: &(dyn std::error::Error + 'static)) -> bool {
    const TLS_MESSAGES: [&str; 5] = [
        "invalid peer certificate",
        "peer is incompatible",
        "peer misbehaved",
        "received fatal alert",
        "no certificates presented",
    ];
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if current.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = current.downcast_ref::<io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        let text = current.to_string();
        if TLS_MESSAGES.iter().any(|message| text.contains(message)) {
            return true;
        }
        cause = current.source();
    }
    false
}

/// An error and its causes, `: `-joined and escaped; reqwest's own message alone says only
/// "error sending request".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        cause = current.source();
    }
    escaped_message(&parts.join(": "))
}

/// The CA file must hold at least one certificate.
fn check_ca_pem(pem: &[u8]) -> Result<(), RegistryError> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN CERTIFICATE-----") {
        Ok(())
    } else {
        Err(RegistryError::Setup {
            detail: "the CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        })
    }
}

/// Whether `path` exists and holds `size` bytes hashing to `digest`.
fn file_matches(path: &Path, digest: Sha256Digest, size: u64) -> Result<bool, RegistryError> {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_file() && metadata.len() == size => {
            Ok(hash_file(path)? == digest)
        }
        Ok(_) => Ok(false),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(RegistryError::io("read", path, error)),
    }
}

fn hash_file(path: &Path) -> Result<Sha256Digest, RegistryError> {
    let mut file = File::open(path).map_err(|error| RegistryError::io("read", path, error))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|error| RegistryError::io("read", path, error))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(
        Sha256Digest::from_hex(&hex::encode(hasher.finalize()))
            .expect("a SHA-256 is 64 hex digits"),
    )
}

/// Puts `source`'s content at `destination`: a hard link where both are on one file system,
/// else a copy flushed to disk; either way through a temporary name and a rename, so
/// `destination` is whole or absent.
fn link_or_copy(source: &Path, destination: &Path) -> Result<(), RegistryError> {
    let temporary = destination.with_extension("link");
    let _ = fs::remove_file(&temporary);
    if fs::hard_link(source, &temporary).is_err() {
        fs::copy(source, &temporary).map_err(|error| RegistryError::io("copy", source, error))?;
        File::open(&temporary)
            .and_then(|file| file.sync_all())
            .map_err(|error| RegistryError::io("flush", &temporary, error))?;
    }
    fs::rename(&temporary, destination)
        .map_err(|error| RegistryError::io("rename", &temporary, error))
}

/// Writes `bytes` to `path` through a temporary file that is flushed before it is renamed,
/// then flushes the directory, so a crash leaves the old file or the new one.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let temporary = path.with_extension("json.tmp");
    let mut file =
        File::create(&temporary).map_err(|error| RegistryError::io("write", &temporary, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| RegistryError::io("write", &temporary, error))?;
    fs::rename(&temporary, path).map_err(|error| RegistryError::io("rename", &temporary, error))?;
    sync_directory(path.parent().unwrap_or(Path::new(".")))
}

fn sync_directory(directory: &Path) -> Result<(), RegistryError> {
    File::open(directory)
        .and_then(|file| file.sync_all())
        .map_err(|error| RegistryError::io("flush", directory, error))
}
