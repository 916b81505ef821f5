//! Signing through PKCS#11 against a real SoftHSM2 token.
//!
//! SoftHSM reads its configuration from `SOFTHSM2_CONF` when the module is
//! initialised. The environment cannot be changed safely inside a running
//! test binary, so the outer test prepares a private token directory and
//! re-runs this binary with `SOFTHSM2_CONF` set to execute the scenarios.

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use edge_bundle::{
    Architecture, BundleBuilder, BundleHeader, Pkcs11Signer, Pkcs11Uri, Signer, SignerError,
    VerifyingKey, verify_bundle,
};
use tempfile::TempDir;

/// Where Debian's softhsm2 package installs the module.
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "edge-fleet";
const EMPTY_TOKEN: &str = "edge-empty";
const KEY: &str = "bundle-signing";
const PIN: &str = "246810";
/// DER of the edwards25519 curve OID 1.3.101.112 for CKA_EC_PARAMS.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
const SCENARIOS: &str = "softhsm_scenarios";
const DIR_VARIABLE: &str = "EDGE_BUNDLE_SOFTHSM_TEST_DIR";

#[test]
fn pkcs11_signing_with_softhsm() {
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 module {MODULE} is missing: install it with `apt-get install -y softhsm2 opensc` (CI installs it)"
    );
    let dir = TempDir::new().unwrap();
    let tokens = dir.path().join("tokens");
    fs::create_dir(&tokens).unwrap();
    let config = dir.path().join("softhsm2.conf");
    fs::write(
        &config,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    for label in [TOKEN, EMPTY_TOKEN] {
        let output = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                "13579",
            ])
            .env("SOFTHSM2_CONF", &config)
            .output()
            .expect("softhsm2-util is missing: install it with `apt-get install -y softhsm2`");
        assert!(
            output.status.success(),
            "softhsm2-util failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = Command::new(env::current_exe().unwrap())
        .args([
            "--exact",
            SCENARIOS,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &config)
        .env(DIR_VARIABLE, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "scenarios failed:\n{stdout}\n{stderr}"
    );
}

#[test]
#[ignore = "run by pkcs11_signing_with_softhsm in a child process with SOFTHSM2_CONF set"]
fn softhsm_scenarios() {
    let dir = env::var_os(DIR_VARIABLE).expect("run through pkcs11_signing_with_softhsm");
    let module = Path::new(MODULE);
    let token_public = generate_key_on_token(module);

    let uri = |token: &str, object: &str| {
        Pkcs11Uri::parse(&format!("pkcs11:token={token};object={object}")).unwrap()
    };
    let error = Pkcs11Signer::open(module, &uri(TOKEN, KEY), "000000")
        .err()
        .unwrap();
    assert!(matches!(error, SignerError::WrongPin { .. }), "{error}");
    let error = Pkcs11Signer::open(module, &uri(EMPTY_TOKEN, KEY), PIN)
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            SignerError::KeyNotFound {
                class: "private",
                ..
            }
        ),
        "{error}"
    );
    let error = Pkcs11Signer::open(module, &uri("no-such-token", KEY), PIN)
        .err()
        .unwrap();
    assert!(
        matches!(error, SignerError::TokenNotFound { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(TOKEN), "{error}");
    let error = Pkcs11Signer::open(
        Path::new("/nonexistent/libpkcs11.so"),
        &uri(TOKEN, KEY),
        PIN,
    )
    .err()
    .unwrap();
    assert!(matches!(error, SignerError::Pkcs11Module { .. }), "{error}");

    let signer = Pkcs11Signer::open(module, &uri(TOKEN, KEY), PIN).unwrap();
    assert_eq!(signer.public_key(), token_public);
    let signature = signer.sign(b"manifest bytes").unwrap();
    token_public
        .verify_strict(b"manifest bytes", &signature)
        .unwrap();

    let image = Path::new(&dir).join("os.img");
    fs::write(&image, b"os image").unwrap();
    let mut builder = BundleBuilder::new(BundleHeader {
        deployment: "hsm-signed".to_owned(),
        compatible: "contoso,gateway".to_owned(),
        architecture: Architecture::Arm64,
        version: 1,
        source_date_epoch: 0,
    })
    .unwrap();
    builder
        .add_os_payload(&edge_bundle::OsImage {
            rootfs: image.clone(),
            verity: image,
            root_hash: "00".repeat(32),
            root_hash_signature: None,
        })
        .unwrap();
    let bundle = builder.build(&[&signer], Vec::new()).unwrap().writer;
    let verified = verify_bundle(bundle.as_slice(), &[token_public], 1).unwrap();
    assert_eq!(
        verified.trusted_key_ids,
        vec![edge_bundle::key_id(&token_public)]
    );
}

/// Generates an ed25519 key pair on the token through PKCS#11 and returns
/// the public key read back from CKA_EC_POINT.
fn generate_key_on_token(module: &Path) -> VerifyingKey {
    let context = Pkcs11::new(module).unwrap();
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).unwrap().label().trim_end() == TOKEN)
        .unwrap();
    let session = context.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(PIN)))
        .unwrap();
    let label = Attribute::Label(KEY.as_bytes().to_vec());
    let (public, _private) = session
        .generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(ED25519_OID.to_vec()),
                label.clone(),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
                label,
            ],
        )
        .unwrap();
    let point = match session
        .get_attributes(public, &[AttributeType::EcPoint])
        .unwrap()
        .as_slice()
    {
        [Attribute::EcPoint(point)] => point.clone(),
        other => panic!("unexpected attributes {other:?}"),
    };
    assert_eq!(
        point[..2],
        [0x04, 0x20],
        "CKA_EC_POINT is a DER OCTET STRING of 32 bytes"
    );
    session.logout().unwrap();
    drop(session);
    VerifyingKey::from_bytes(&point[2..].try_into().unwrap()).unwrap()
}
