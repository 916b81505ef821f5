//! Module identity keys: one HMAC-SHA256 key per module, created on the
//! device. SAS tokens are signed and verified with them, and the workload
//! API signs with them on a module's behalf.
//!
//! [`FileKeys`] keeps them in the hub's directory with mode 0600; the
//! PKCS#11 store keeps them on the token, where they never leave it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};

/// An HMAC-SHA256 digest.
pub type Digest = [u8; 32];

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The module has no key yet (it is not in a deployment).
    #[error("module {0} has no identity key; it is not part of the deployment")]
    Unknown(String),
    /// The store could not be read or written.
    #[error("module key store {location}: {message}")]
    Store {
        /// The file or token.
        location: String,
        /// What went wrong.
        message: String,
    },
}

/// Where module keys live.
pub trait KeyStore: Send + Sync {
    /// Creates `module`'s key unless it exists.
    fn ensure(&self, module: &str) -> Result<(), KeyError>;
    /// Deletes `module`'s key, if any (the module left the deployment).
    fn remove(&self, module: &str) -> Result<(), KeyError>;
    /// HMAC-SHA256 of `data` under `module`'s key.
    fn sign(&self, module: &str, data: &[u8]) -> Result<Digest, KeyError>;
    /// Where the keys are, for logs and `edged status`.
    fn location(&self) -> String;
    /// Whether `sign` waits for a device (a PKCS#11 token and the lock of
    /// its one session) instead of computing in memory. Async callers then
    /// sign on a blocking thread, so that a slow token never holds up the
    /// runtime's workers and the connections they serve.
    fn signs_on_device(&self) -> bool {
        false
    }
}

/// Keys as 32 random bytes in `DIR/{module}.key`, mode 0600.
pub struct FileKeys {
    dir: PathBuf,
}

/// The length of a generated key.
const KEY_BYTES: usize = 32;

impl FileKeys {
    /// A store in `dir`, created (mode 0700) if missing.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        fs::create_dir_all(dir).map_err(|error| store_error(dir, &error))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|error| store_error(dir, &error))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, module: &str) -> PathBuf {
        // Module names are checked by the compiler and by the bundle's
        // grammar, so they cannot contain a path separator; the check
        // here keeps a stray name from ever leaving the directory.
        self.dir
            .join(format!("{}.key", module.replace(['/', '\0'], "_")))
    }
}

impl KeyStore for FileKeys {
    fn ensure(&self, module: &str) -> Result<(), KeyError> {
        let path = self.path(module);
        if path.exists() {
            return Ok(());
        }
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(|error| KeyError::Store {
            location: path.display().to_string(),
            message: format!("no randomness: {error}"),
        })?;
        // Written to a temporary name, synced and renamed, so a crash never
        // leaves a short key that every later token would be checked with.
        let partial = path.with_extension("key.part");
        let write = || -> io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)?;
            file.write_all(&key)?;
            file.sync_all()?;
            fs::rename(&partial, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|error| store_error(&path, &error))
    }

    fn remove(&self, module: &str) -> Result<(), KeyError> {
        let path = self.path(module);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(store_error(&path, &error)),
        }
    }

    fn sign(&self, module: &str, data: &[u8]) -> Result<Digest, KeyError> {
        let path = self.path(module);
        let key = match fs::read(&path) {
            Ok(key) => key,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(KeyError::Unknown(module.to_owned()));
            }
            Err(error) => return Err(store_error(&path, &error)),
        };
        if key.len() != KEY_BYTES {
            return Err(KeyError::Store {
                location: path.display().to_string(),
                message: format!("holds {} bytes instead of {KEY_BYTES}", key.len()),
            });
        }
        Ok(hmac_sha256(&key, data))
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Digest {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn store_error(path: &Path, error: &io::Error) -> KeyError {
    KeyError::Store {
        location: path.display().to_string(),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_module_private_and_stable() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let keys = FileKeys::open(&dir.path().join("keys")).expect("store");
        assert!(matches!(keys.sign("a", b"x"), Err(KeyError::Unknown(_))));
        keys.ensure("a").expect("key a");
        keys.ensure("b").expect("key b");
        let first = keys.sign("a", b"x").expect("sign");
        keys.ensure("a").expect("ensure again keeps the key");
        assert_eq!(keys.sign("a", b"x").expect("sign"), first);
        assert_ne!(keys.sign("b", b"x").expect("sign"), first);
        let mode = fs::metadata(dir.path().join("keys/a.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        keys.remove("a").expect("remove");
        assert!(matches!(keys.sign("a", b"x"), Err(KeyError::Unknown(_))));
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let digest = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(digest),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
