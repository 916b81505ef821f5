//! `edgec keygen`, `edgec verify` and `edgec inspect`.

use std::io::Write;
use std::path::{Path, PathBuf};

use edge_bundle::canonical_json::to_pretty_bytes;
use edge_bundle::{generate_keypair, inspect_bundle, load_public_key_pem, verify_bundle};

use crate::Status;
use crate::output::usage_error;

/// Writes `KEY` (private, mode 0600) and `KEY.pub`. Existing files are never overwritten: a
/// lost signing key cannot be recovered.
pub fn keygen(output: &Path) -> Status {
    let public = public_key_path(output);
    for path in [output, public.as_path()] {
        if path.exists() {
            usage_error(&format!(
                "`{}` already exists; remove it or choose another name",
                path.display()
            ));
            return Status::Failure;
        }
    }
    let pair = match generate_keypair() {
        Ok(pair) => pair,
        Err(error) => {
            usage_error(&error.to_string());
            return Status::Failure;
        }
    };
    if let Err(error) = write_new(output, pair.private_pem.as_bytes(), 0o600)
        .and_then(|()| write_new(&public, pair.public_pem.as_bytes(), 0o644))
    {
        let _ = std::fs::remove_file(output);
        usage_error(&format!("cannot write the key pair: {error}"));
        return Status::Failure;
    }
    out!("wrote {} and {}", output.display(), public.display());
    out!("key id {}", pair.key_id);
    Status::Clean
}

fn public_key_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Creates a file that must not exist yet, with `mode`, and flushes it to disk.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

pub fn verify(bundle: &Path, trusted: &[PathBuf], threshold: usize) -> Status {
    let mut keys = Vec::new();
    for path in trusted {
        let key = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read trusted key `{}`: {error}", path.display()))
            .and_then(|pem| {
                load_public_key_pem(&pem).map_err(|error| format!("`{}`: {error}", path.display()))
            });
        match key {
            Ok(key) => keys.push(key),
            Err(message) => {
                usage_error(&message);
                return Status::Failure;
            }
        }
    }
    let file = match std::fs::File::open(bundle) {
        Ok(file) => file,
        Err(error) => {
            usage_error(&format!("cannot read `{}`: {error}", bundle.display()));
            return Status::Failure;
        }
    };
    match verify_bundle(std::io::BufReader::new(file), &keys, threshold) {
        Ok(verified) => {
            out!(
                "{}: valid, deployment `{}` version {}, signed by {}",
                bundle.display(),
                verified.manifest.deployment,
                verified.manifest.version,
                verified.trusted_key_ids.join(", ")
            );
            Status::Clean
        }
        Err(error) => {
            err!("{}: NOT valid: {error}", bundle.display());
            Status::Errors
        }
    }
}

pub fn inspect(bundle: &Path, json: bool) -> Status {
    let inspection = match std::fs::File::open(bundle)
        .map_err(|error| error.to_string())
        .and_then(|file| {
            inspect_bundle(std::io::BufReader::new(file)).map_err(|error| error.to_string())
        }) {
        Ok(inspection) => inspection,
        Err(message) => {
            usage_error(&format!("cannot inspect `{}`: {message}", bundle.display()));
            return Status::Failure;
        }
    };
    let manifest = &inspection.manifest;
    if json {
        let value = serde_json::json!({
            "manifest": serde_json::to_value(manifest).unwrap_or_default(),
            "manifestDigest": inspection.manifest_digest.to_string(),
            "signatureKeyIds": inspection.signature_key_ids,
        });
        out_raw!("{}", String::from_utf8_lossy(&to_pretty_bytes(&value)));
        return Status::Clean;
    }
    out!("deployment    {}", manifest.deployment);
    out!("version       {}", manifest.version);
    out!(
        "target        {} ({})",
        manifest.compatible,
        manifest.architecture.as_str()
    );
    out!("created       {}", manifest.created);
    out!(
        "expires       {}",
        manifest.expires.as_deref().unwrap_or("never")
    );
    out!("digest        sha256:{}", inspection.manifest_digest);
    out!("signatures    {}", inspection.signature_key_ids.join(", "));
    for image in &manifest.images {
        out!(
            "image         {} → {} ({})",
            image.module,
            image.reference,
            image.path
        );
    }
    for image in &manifest.registry_images {
        out!("registry      {} → {}", image.module, image.reference);
    }
    for file in &manifest.payload {
        out!(
            "payload       {} {} bytes sha256:{}",
            file.path,
            file.size,
            file.sha256
        );
    }
    Status::Clean
}
