//! Trust anchors on a real SoftHSM2 token: signatures are checked on the
//! token, anchors are added through `edged trust add`, and a file written
//! next to the configuration cannot add trust.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process, and every edged command
//! here is its own process, so the private configuration simply goes into
//! the children's environment.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{Key, TestDevice, bundle, files, manifest};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "edged-device";
const PIN: &str = "123456";

#[test]
fn trust_anchors_on_a_pkcs11_token() {
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 module {MODULE} is missing: install it with `apt-get install -y softhsm2 opensc` (CI installs it)"
    );
    let keys = tempfile::tempdir().unwrap();
    let fleet = Key::new(keys.path(), "fleet");
    let rogue = Key::new(keys.path(), "rogue");
    let device = TestDevice::new(&[], "");
    let tokens = device.root.path().join("tokens");
    fs::create_dir(&tokens).unwrap();
    let softhsm_conf = device.root.path().join("softhsm2.conf");
    fs::write(
        &softhsm_conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let output = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            "654321",
        ])
        .env("SOFTHSM2_CONF", &softhsm_conf)
        .output()
        .expect("softhsm2-util is missing: install softhsm2");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pin_file = device.root.path().join("pin");
    fs::write(&pin_file, PIN).unwrap();
    // The token replaces the trust directory.
    let text = fs::read_to_string(&device.config).unwrap();
    let text = text.replace(&format!("dir = \"{}\"\n", device.trust_dir.display()), "");
    fs::write(
        &device.config,
        format!(
            "{text}[trust.pkcs11]\nmodule = \"{MODULE}\"\ntoken = \"{TOKEN}\"\npin_file = \"{}\"\n",
            pin_file.display()
        ),
    )
    .unwrap();
    let edged = |args: &[&str]| {
        device
            .command("none", args)
            .env("SOFTHSM2_CONF", &softhsm_conf)
            .output()
            .unwrap()
    };

    let output = edged(&["trust", "list"]);
    assert_eq!(
        output.status.code(),
        Some(7),
        "an empty token trusts nobody"
    );
    let output = edged(&["trust", "add", fleet.public_path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = edged(&["trust", "list"]);
    let listing = String::from_utf8_lossy(&output.stdout);
    let fleet_id = edge_bundle::key_id(&edge_bundle::Signer::public_key(&fleet.signer));
    assert!(
        listing.contains(&format!("{fleet_id} token edged-anchor-")),
        "{listing}"
    );

    let files = files("hsm");
    let rogue_bundle = device.write_bundle(
        "rogue.edgebundle",
        &bundle(&manifest(1, &files), &files, &[&rogue]),
    );
    let output = edged(&["apply", rogue_bundle.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Dropping a key file into the old trust directory adds no trust.
    fs::copy(&rogue.public_path, device.trust_dir.join("rogue.pub")).unwrap();
    let output = edged(&["apply", rogue_bundle.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));

    let good = device.write_bundle(
        "good.edgebundle",
        &bundle(&manifest(1, &files), &files, &[&fleet]),
    );
    let output = edged(&["apply", good.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(device.state().committed_version, 1);

    let output = device
        .command("none", &["apply", good.to_str().unwrap()])
        .env("SOFTHSM2_CONF", device.root.path().join("missing.conf"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(7),
        "an unreachable token is a trust error: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
