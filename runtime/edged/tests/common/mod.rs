//! Shared test helpers: keys, device set-ups, hand-made bundles (including
//! malicious ones the real builder would never write) and tree hashing.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use edge_bundle::canonical_json::to_canonical_bytes;
use edge_bundle::{
    Architecture, BundleManifest, FileSigner, PayloadFile, SignatureEntry, SignatureFile, Signer,
    generate_keypair, key_id,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const COMPATIBLE: &str = "contoso,gateway-1";

/// A signing key with its public key file on disk.
pub struct Key {
    pub signer: FileSigner,
    pub public_path: PathBuf,
}

impl Key {
    pub fn new(dir: &Path, name: &str) -> Self {
        let pair = generate_keypair().unwrap();
        let public_path = dir.join(format!("{name}.pub"));
        fs::write(&public_path, &pair.public_pem).unwrap();
        fs::write(dir.join(name), pair.private_pem.as_bytes()).unwrap();
        Self {
            signer: FileSigner::from_pem(&pair.private_pem).unwrap(),
            public_path,
        }
    }
}

/// A device: state directory, configuration file and trust directory.
pub struct TestDevice {
    pub root: tempfile::TempDir,
    pub state: PathBuf,
    pub config: PathBuf,
    pub trust_dir: PathBuf,
}

impl TestDevice {
    /// A device trusting `keys` through its trust directory.
    pub fn new(keys: &[&Key], extra_config: &str) -> Self {
        Self::new_in(tempfile::tempdir().unwrap(), keys, extra_config)
    }

    /// The same inside `root` (a directory on a file system of the test's choosing).
    pub fn new_in(root: tempfile::TempDir, keys: &[&Key], extra_config: &str) -> Self {
        let state = root.path().join("state");
        let trust_dir = root.path().join("trust");
        fs::create_dir_all(&trust_dir).unwrap();
        for (index, key) in keys.iter().enumerate() {
            fs::copy(&key.public_path, trust_dir.join(format!("{index}.pub"))).unwrap();
        }
        let config = root.path().join("device.toml");
        // The hub listens on fixed ports (8883, 443): only the tests that
        // exercise it (hub_sdk.rs, each in its own network namespace or
        // serialized) turn it on, so the others can run in parallel.
        let hub = if extra_config.contains("[hub]") {
            ""
        } else {
            "[hub]\nenabled = false\n"
        };
        fs::write(
            &config,
            format!(
                "compatible = \"{COMPATIBLE}\"\narchitecture = \"amd64\"\n{extra_config}\n{hub}[trust]\ndir = \"{}\"\n",
                trust_dir.display()
            ),
        )
        .unwrap();
        Self {
            root,
            state,
            config,
            trust_dir,
        }
    }

    /// Runs the edged binary against this device.
    pub fn edged(&self, runtime: &str, args: &[&str]) -> Output {
        self.command(runtime, args).output().unwrap()
    }

    pub fn command(&self, runtime: &str, args: &[&str]) -> Command {
        self.command_under(&[], runtime, args)
    }

    /// The same command run by `wrapper` (e.g. `/usr/bin/time -o FILE -f %M`).
    pub fn command_under(&self, wrapper: &[&str], runtime: &str, args: &[&str]) -> Command {
        let edged = env!("CARGO_BIN_EXE_edged");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(edged);
                command
            }
            None => Command::new(edged),
        };
        command
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--device-config")
            .arg(&self.config)
            .arg("--runtime")
            .arg(runtime)
            .args(args)
            .env_remove(edged::failpoint::ENV);
        command
    }

    pub fn state(&self) -> edged::State {
        edged::State::load(&self.state).unwrap()
    }

    pub fn write_bundle(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.root.path().join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `vVERSION.edgebundle`, version `version` of the test deployment signed by
    /// `key` (see [`signed_bundle`]).
    pub fn write_version(&self, key: &Key, version: u64) -> PathBuf {
        self.write_bundle(
            &format!("v{version}.edgebundle"),
            &signed_bundle(key, version),
        )
    }

    /// Opens this device in the test process, with `runtime` running its modules.
    pub fn open(&self, runtime: Box<dyn edged::runtime::ModuleRuntime>) -> edged::Device {
        let config = edged::DeviceConfig::load(&self.config).unwrap();
        let trust = edged::trust::TrustStore::new(&config.trust, &[]);
        edged::Device::open(&self.state, config, trust, runtime)
            .unwrap()
            .0
    }
}

/// Asserts that a command succeeded, showing its output if not.
pub fn succeeded(output: &Output) -> &Output {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The `edgec` binary of this workspace, built once by cargo.
pub fn edgec() -> &'static Path {
    static EDGEC: OnceLock<PathBuf> = OnceLock::new();
    EDGEC.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let output = Command::new(env!("CARGO"))
            .current_dir(&workspace)
            .args([
                "build",
                "-p",
                "edgec",
                "--message-format=json-render-diagnostics",
            ])
            .output()
            .unwrap();
        succeeded(&output);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| {
                message["reason"] == "compiler-artifact" && message["target"]["name"] == "edgec"
            })
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo built no edgec executable")
    })
}

/// A device configured with `extra_config` that trusts a fresh `edgec
/// keygen` key made in `dir`; returns it with the private key's path, for
/// `edgec build --key`.
pub fn device_trusting_edgec_key(dir: &Path, extra_config: &str) -> (TestDevice, PathBuf) {
    let key = dir.join("fleet");
    succeeded(
        &Command::new(edgec())
            .arg("keygen")
            .arg("--output")
            .arg(&key)
            .output()
            .unwrap(),
    );
    let device = TestDevice::new(&[], extra_config);
    fs::copy(dir.join("fleet.pub"), device.trust_dir.join("fleet.pub")).unwrap();
    (device, key)
}

/// Writes `source` as `PROJECT/plant.edge`, builds and signs it with
/// `edgec build --key KEY --allow-unpinned` (`SOURCE_DATE_EPOCH=0`) and
/// returns the bundle of its deployment `plant`. The tests name module images
/// by tag only (images built into the local Docker, or none at all with the
/// fake runtime), which a bundle build refuses unless told to allow it.
pub fn build_plant(project: &Path, source: &str, key: &Path) -> PathBuf {
    let file = project.join("plant.edge");
    fs::write(&file, source).unwrap();
    let output = project.join("build");
    succeeded(
        &Command::new(edgec())
            .arg("build")
            .arg(&file)
            .arg("--output")
            .arg(&output)
            .arg("--key")
            .arg(key)
            .arg("--allow-unpinned")
            .env("SOURCE_DATE_EPOCH", "0")
            .output()
            .unwrap(),
    );
    output.join("plant.edgebundle")
}

/// Version `version` of the test deployment (payload `files("vVERSION")`), signed by `key`.
pub fn signed_bundle(key: &Key, version: u64) -> Vec<u8> {
    let payload = files(&format!("v{version}"));
    bundle(&manifest(version, &payload), &payload, &[key])
}

/// The IoT Edge manifest of a deployment without user modules.
pub fn empty_iot_edge_manifest() -> Value {
    json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {}}}}})
}

/// A manifest for `files` (path under payload/ → content).
pub fn manifest(version: u64, files: &BTreeMap<String, Vec<u8>>) -> BundleManifest {
    BundleManifest {
        format_version: 1,
        deployment: "plant".to_owned(),
        compatible: COMPATIBLE.to_owned(),
        architecture: Architecture::Amd64,
        version,
        created: "1970-01-01T00:00:00Z".to_owned(),
        expires: None,
        iot_edge_manifest: empty_iot_edge_manifest(),
        route_table: json!([]),
        images: Vec::new(),
        registry_images: Vec::new(),
        os: None,
        payload: files
            .iter()
            .map(|(path, content)| PayloadFile {
                path: path.clone(),
                sha256: hex::encode(Sha256::digest(content)),
                size: content.len() as u64,
            })
            .collect(),
    }
}

/// Some payload files.
pub fn files(seed: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        "payload/config/app.json".to_owned(),
        format!("{{\"seed\":\"{seed}\"}}").into_bytes(),
    );
    files.insert(
        "payload/data/blob.bin".to_owned(),
        seed.repeat(3000).into_bytes(),
    );
    files
}

/// Signs canonical manifest bytes with each signer.
pub fn signatures(manifest_bytes: &[u8], signers: &[&Key]) -> Vec<u8> {
    let mut entries: Vec<SignatureEntry> = signers
        .iter()
        .map(|key| SignatureEntry {
            key_id: key_id(&key.signer.public_key()),
            algorithm: "ed25519".to_owned(),
            signature: hex::encode(key.signer.sign(manifest_bytes).unwrap().to_bytes()),
        })
        .collect();
    entries.sort_by(|left, right| left.key_id.cmp(&right.key_id));
    let file = SignatureFile {
        format_version: 1,
        signatures: entries,
    };
    to_canonical_bytes(&serde_json::to_value(file).unwrap())
}

/// One raw tar entry, written exactly as given.
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Option<Vec<u8>>,
    /// The size written into the header, if different from the data.
    pub header_size: Option<u64>,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
            header_size: None,
        }
    }

    pub fn special(name: &str, kind: tar::EntryType, link: Option<&str>) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            kind,
            data: Vec::new(),
            link: link.map(|link| link.as_bytes().to_vec()),
            header_size: None,
        }
    }
}

/// Writes a tar of raw entries; names bypass the tar crate's path checks.
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        {
            let old = header.as_old_mut();
            old.name = [0; 100];
            old.name[..entry.name.len()].copy_from_slice(&entry.name);
            if let Some(link) = &entry.link {
                old.linkname = [0; 100];
                old.linkname[..link.len()].copy_from_slice(link);
            }
        }
        header.set_entry_type(entry.kind);
        header.set_mode(0o644);
        header.set_size(entry.header_size.unwrap_or(entry.data.len() as u64));
        header.set_cksum();
        builder.append(&header, entry.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A complete bundle: head entries plus the listed files, signed by `signers`.
pub fn bundle(
    manifest: &BundleManifest,
    files: &BTreeMap<String, Vec<u8>>,
    signers: &[&Key],
) -> Vec<u8> {
    let manifest_bytes = manifest.to_canonical_bytes().unwrap();
    let mut entries = vec![
        RawEntry::file("bundle.json", &manifest_bytes),
        RawEntry::file("bundle.sig.json", &signatures(&manifest_bytes, signers)),
    ];
    entries.extend(
        files
            .iter()
            .map(|(path, content)| RawEntry::file(path, content)),
    );
    raw_tar(&entries)
}

/// Head entries of a signed manifest, for bundles with hand-made payloads.
pub fn head(manifest: &BundleManifest, signers: &[&Key]) -> Vec<RawEntry> {
    let manifest_bytes = manifest.to_canonical_bytes().unwrap();
    vec![
        RawEntry::file("bundle.json", &manifest_bytes),
        RawEntry::file("bundle.sig.json", &signatures(&manifest_bytes, signers)),
    ]
}

/// Hashes a directory tree: every path, its type, link target and content.
pub fn tree_hash(root: &Path) -> String {
    let mut hasher = Sha256::new();
    if root.exists() {
        hash_into(root, root, &mut hasher);
    }
    hex::encode(hasher.finalize())
}

fn hash_into(root: &Path, path: &Path, hasher: &mut Sha256) {
    let metadata = fs::symlink_metadata(path).unwrap();
    let relative = path
        .strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    hasher.update(relative.as_bytes());
    hasher.update([0]);
    if metadata.is_dir() {
        hasher.update(b"d");
        let mut children: Vec<PathBuf> = fs::read_dir(path)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        children.sort();
        for child in children {
            hash_into(root, &child, hasher);
        }
    } else if metadata.file_type().is_symlink() {
        hasher.update(b"l");
        hasher.update(fs::read_link(path).unwrap().to_string_lossy().as_bytes());
    } else {
        hasher.update(b"f");
        hasher.update(fs::read(path).unwrap());
    }
    hasher.update([0]);
}

/// Checks the crash invariant: no transaction, no leftovers, and the active
/// slot holds a complete deployment matching the record.
pub fn assert_consistent(device: &TestDevice, allowed_versions: &[Option<u64>]) {
    let state = device.state();
    assert!(
        state.transaction.is_none(),
        "transaction left open: {state:?}"
    );
    for slot in ["a", "b"] {
        for leftover in ["staging", "retired"] {
            let path = device.state.join("slots").join(slot).join(leftover);
            assert!(!path.exists(), "{} left behind", path.display());
        }
    }
    assert!(!device.state.join("state.json.tmp").exists());
    let version = state.active.as_ref().map(|active| active.version);
    assert!(
        allowed_versions.contains(&version),
        "on version {version:?}, allowed {allowed_versions:?}"
    );
    if let Some(active) = &state.active {
        let dir = device
            .state
            .join("slots")
            .join(active.slot.name())
            .join("deployment");
        let manifest = edged::intake::check_installed(&dir).unwrap();
        assert_eq!(manifest.digest().unwrap().hex(), active.manifest_digest);
        assert_eq!(manifest.version, active.version);
    }
}

/// A signed version-10 bundle with an OS payload whose root hash is `root_hash` (the tree's
/// own when `None`) and signed or not.
pub fn os_bundle(key: &Key, root_hash: Option<&str>, signed: bool) -> Vec<u8> {
    let rootfs: Vec<u8> = (0..16 * 4096).map(|index| (index % 251) as u8).collect();
    let tree = edge_verity::build_from_bytes(&rootfs, &edge_verity::Params::derived()).unwrap();
    let mut payload = files("v10");
    payload.insert("payload/os/rootfs.img".to_owned(), rootfs);
    payload.insert("payload/os/verity.img".to_owned(), tree.bytes().to_vec());
    let mut signed_manifest = manifest(10, &payload);
    let listing = |path: &str| signed_manifest.payload_file(path).unwrap().clone();
    signed_manifest.os = Some(edge_bundle::OsPayload {
        rootfs: listing("payload/os/rootfs.img"),
        verity: listing("payload/os/verity.img"),
        root_hash: root_hash.map_or_else(|| tree.root_hash().to_string(), str::to_owned),
        root_hash_signature: signed.then(|| "ab".repeat(64)),
    });
    bundle(&signed_manifest, &payload, &[key])
}

/// Writes what a registry fetch writes for a bundle (`DIR/bundle.json`, `DIR/bundle.sig.json`,
/// `DIR/blobs/sha256/<hex>` once per distinct content) from a bundle file's bytes, and returns
/// `DIR`.
pub fn fetched_dir(dir: &Path, bundle: &[u8]) -> PathBuf {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut archive = tar::Archive::new(bundle);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        let target = if path == "bundle.json" || path == "bundle.sig.json" {
            dir.join(&path)
        } else {
            blobs.join(hex::encode(Sha256::digest(&content)))
        };
        fs::write(target, content).unwrap();
    }
    dir.to_owned()
}

/// The blob files left in a fetched directory, by name.
pub fn blobs_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
