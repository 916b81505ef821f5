//! Module keys and the device CA key on a real SoftHSM2 token.
//!
//! SoftHSM reads `SOFTHSM2_CONF` when the module is initialised, and the
//! environment cannot be changed safely inside a running test binary, so
//! the outer test prepares a private token directory and re-runs this binary
//! with `SOFTHSM2_CONF` set to execute the scenarios.

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use edge_hub::certs::{CA_TOKEN_LABEL, CaKeySource, Certificates};
use edge_hub::pkcs11_keys::Pkcs11Keys;
use edge_hub::{KeyError, KeyStore};

mod common;

/// Where Debian's softhsm2 package installs the module.
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "edge-hub-test";
const PIN: &str = "135790";
const SCENARIOS: &str = "softhsm_scenarios";
const DIR_VARIABLE: &str = "EDGE_HUB_SOFTHSM_TEST_DIR";

#[test]
fn keys_on_a_softhsm_token() {
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 module {MODULE} is missing: install it with `apt-get install -y softhsm2 opensc` (CI installs it)"
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let tokens = dir.path().join("tokens");
    fs::create_dir(&tokens).expect("token directory");
    let config = dir.path().join("softhsm2.conf");
    fs::write(
        &config,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("configuration");
    let output = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN, "--pin", PIN])
        .args(["--so-pin", "97531"])
        .env("SOFTHSM2_CONF", &config)
        .output()
        .expect("softhsm2-util is missing: install it with `apt-get install -y softhsm2`");
    assert!(
        output.status.success(),
        "softhsm2-util failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::write(dir.path().join("pin"), format!("{PIN}\n")).expect("PIN file");
    fs::write(dir.path().join("wrong-pin"), "000000").expect("PIN file");
    let output = Command::new(env::current_exe().expect("test binary"))
        .args(["--exact", SCENARIOS, "--ignored", "--nocapture"])
        .args(["--test-threads=1"])
        .env("SOFTHSM2_CONF", &config)
        .env(DIR_VARIABLE, dir.path())
        .output()
        .expect("run the scenarios");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "scenarios failed:\n{stdout}\n{stderr}"
    );
}

#[test]
#[ignore = "run by keys_on_a_softhsm_token in a child process with SOFTHSM2_CONF set"]
fn softhsm_scenarios() {
    let dir = env::var_os(DIR_VARIABLE).expect("run through keys_on_a_softhsm_token");
    let dir = Path::new(&dir);
    let module = Path::new(MODULE);

    let error = Pkcs11Keys::open(module, TOKEN, &dir.join("wrong-pin"))
        .err()
        .expect("a wrong PIN is refused");
    assert!(error.to_string().contains("PIN"), "{error}");
    let error = Pkcs11Keys::open(module, "no-such-token", &dir.join("pin"))
        .err()
        .expect("an unknown token is refused");
    assert!(
        error.to_string().contains(TOKEN),
        "names the tokens present: {error}"
    );

    let keys = Pkcs11Keys::open(module, TOKEN, &dir.join("pin")).expect("open the token");
    assert!(matches!(
        keys.sign("sensor", b"x"),
        Err(KeyError::Unknown(_))
    ));
    keys.ensure("sensor").expect("key for sensor");
    keys.ensure("filter").expect("key for filter");
    let data = b"myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fsensor\n1700000000";
    let first = keys.sign("sensor", data).expect("sign");
    keys.ensure("sensor").expect("ensure again keeps the key");
    assert_eq!(keys.sign("sensor", data).expect("sign"), first);
    assert_ne!(keys.sign("filter", data).expect("sign"), first);
    assert_ne!(keys.sign("sensor", b"other").expect("sign"), first);

    // A second, independent session: the key verifies the digest as an
    // HMAC-SHA256 on the token, and its value cannot be read.
    let context = edge_bundle::pkcs11::load_module(module).expect("module");
    let slot = edge_bundle::pkcs11::find_token(&context, TOKEN).expect("token");
    let session = context.open_ro_session(slot).expect("session");
    // The login is the application's, shared with the store's session.
    match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(error) => panic!("login: {error}"),
    }
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"edged-module-sensor".to_vec()),
        ])
        .expect("find");
    assert_eq!(handles.len(), 1);
    session
        .verify(&Mechanism::Sha256Hmac, handles[0], data, &first)
        .expect("the digest is the token key's HMAC");
    let attributes = session
        .get_attributes(
            handles[0],
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .expect("attributes");
    assert!(
        attributes.contains(&Attribute::Sensitive(true)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::Extractable(false)),
        "{attributes:?}"
    );
    let value = session.get_attributes(handles[0], &[AttributeType::Value]);
    assert!(
        !matches!(value.as_deref(), Ok([Attribute::Value(_)])),
        "the key value is readable: {value:?}"
    );

    // A SAS token signed with the token key verifies with the same store,
    // and not as another module's.
    let resource = "myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fsensor";
    let digest = keys
        .sign("sensor", format!("{resource}\n4000000000").as_bytes())
        .expect("sign");
    let signature = percent_encoding::utf8_percent_encode(
        &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let token = format!("SharedAccessSignature sr={resource}&sig={signature}&se=4000000000");
    // The token signs on a blocking thread of the runtime, as the MQTT
    // listener and the gateway check tokens.
    assert!(keys.signs_on_device());
    let keys: std::sync::Arc<dyn KeyStore> = std::sync::Arc::new(keys);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let parsed = edge_hub::sas::SasToken::parse(&token).expect("a token");
    runtime
        .block_on(parsed.verify(
            "myhub.azure-devices.net",
            "dev1",
            "sensor",
            &keys,
            1_700_000_000,
        ))
        .expect("the token key's signature verifies");
    let forged = token.replace("modules%2Fsensor", "modules%2Ffilter");
    let forged = edge_hub::sas::SasToken::parse(&forged).expect("a token");
    assert!(
        runtime
            .block_on(forged.verify(
                "myhub.azure-devices.net",
                "dev1",
                "filter",
                &keys,
                1_700_000_000
            ))
            .is_err(),
        "the sensor's signature is not the filter's"
    );

    // Keys survive a new session (they are token objects).
    drop(keys);
    let keys = Pkcs11Keys::open(module, TOKEN, &dir.join("pin")).expect("reopen");
    assert_eq!(keys.sign("sensor", data).expect("sign"), first);
    keys.remove("sensor").expect("remove");
    assert!(matches!(
        keys.sign("sensor", data),
        Err(KeyError::Unknown(_))
    ));
    keys.remove("sensor").expect("removing twice is fine");

    // The device CA with its key on the token.
    let source = CaKeySource::Pkcs11 {
        module: module.to_owned(),
        token: TOKEN.to_owned(),
        pin_file: dir.join("pin"),
    };
    let hub = dir.join("hub");
    let certificates = Certificates::open(&hub, "edged", &source).expect("CA on the token");
    assert!(!hub.join("ca/ca.key.pem").exists(), "no CA key file");
    let output = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(hub.join("ca/ca.pem"))
        .args(["-verify_hostname", "edged"])
        .arg(hub.join("server/server.pem"))
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let module_cert = certificates
        .issue_for_module(
            "web",
            "web",
            SystemTime::now() + std::time::Duration::from_secs(3600),
        )
        .expect("a module certificate signed on the token");
    assert!(module_cert.certificate_pem.contains("BEGIN CERTIFICATE"));
    let again = Certificates::open(&hub, "edged", &source).expect("reopen");
    assert_eq!(again.trust_bundle_pem(), certificates.trust_bundle_pem());
    let private = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(CA_TOKEN_LABEL.as_bytes().to_vec()),
        ])
        .expect("find");
    assert_eq!(private.len(), 1, "one CA key, generated once");
    let attributes = session
        .get_attributes(private[0], &[AttributeType::Extractable])
        .expect("attributes");
    assert_eq!(attributes, vec![Attribute::Extractable(false)]);

    // The whole server with both kinds of key on the token: a module's
    // workload socket signs with its token key, and the token agrees.
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let config = edge_hub::HubConfig {
        device_id: "dev1".to_owned(),
        iothub_hostname: "myhub.azure-devices.net".to_owned(),
        gateway_hostname: "edged".to_owned(),
        mqtt_listen: any,
        https_listen: any,
        metrics_listen: None,
        dir: hub.clone(),
        store_limit_bytes: 16 * 1024 * 1024,
        when_full: edge_hub::WhenFull::DropOldest,
        default_time_to_live: std::time::Duration::from_secs(60),
        max_connections: 10,
        leaf_devices: Vec::new(),
    };
    let server = edge_hub::HubServer::start(
        config,
        std::sync::Arc::new(keys),
        source,
        edge_hub::PeerPolicy::SameUser,
    )
    .expect("the hub starts with its keys on the token");
    assert_eq!(server.trust_bundle_pem(), certificates.trust_bundle_pem());
    server
        .deploy(edge_hub::HubDeployment {
            routes: Vec::new(),
            modules: vec!["camera".to_owned()],
            desired: Default::default(),
            default_time_to_live: None,
        })
        .expect("deploy");
    let generation = server
        .hub()
        .identity("camera")
        .expect("deployed")
        .generation_id;
    let socket = server.workload_socket_dir("camera").join("workload.sock");
    let body = serde_json::json!({"keyId": "primary", "algo": "HMACSHA256", "data": "aGVsbG8="});
    let (status, reply) = server.runtime().block_on(common::unix_call(
        &socket,
        "POST",
        &format!("/modules/camera/genid/{generation}/sign?api-version=2020-07-07"),
        &body.to_string(),
    ));
    assert_eq!(status, 200, "{reply}");
    use base64::Engine as _;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(reply["digest"].as_str().expect("digest"))
        .expect("base64");
    let camera = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"edged-module-camera".to_vec()),
        ])
        .expect("find");
    assert_eq!(camera.len(), 1, "deploy made the key on the token");
    session
        .verify(&Mechanism::Sha256Hmac, camera[0], b"hello", &digest)
        .expect("the workload API signed with the token key");
    server.shutdown();
}
