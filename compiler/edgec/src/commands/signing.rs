//! Signing keys for `edgec build`: key files and PKCS#11 tokens.

use std::path::PathBuf;

use edge_bundle::{FileSigner, Pkcs11Signer, Pkcs11Uri, Signer};

/// The PKCS#11 module used when neither `--pkcs11-module` nor `EDGEC_PKCS11_MODULE` names one:
/// SoftHSM2 as Debian installs it, the token the tests and development set-ups use.
const DEFAULT_PKCS11_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[derive(Default, Clone, clap::Args)]
pub struct SigningOptions {
    /// Sign with this PKCS#8 PEM private key (repeat for several signatures).
    #[arg(long = "key", value_name = "KEY.pem")]
    pub keys: Vec<PathBuf>,
    /// Sign in a hardware token: `pkcs11:token=LABEL;object=LABEL` (repeatable).
    #[arg(long = "pkcs11", value_name = "URI")]
    pub pkcs11: Vec<String>,
    /// The PKCS#11 module to load (default: `EDGEC_PKCS11_MODULE`, else SoftHSM2's).
    #[arg(long = "pkcs11-module", value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,
    /// The environment variable holding the token's user PIN.
    #[arg(
        long = "pin-env",
        value_name = "VARIABLE",
        default_value = "EDGEC_PKCS11_PIN"
    )]
    pub pin_variable: String,
}

/// Opens every signer the options name, or says what to fix.
pub fn open_signers(options: &SigningOptions) -> Result<Vec<Box<dyn Signer>>, String> {
    let mut signers: Vec<Box<dyn Signer>> = Vec::new();
    for key in &options.keys {
        let signer = FileSigner::from_file(key)
            .map_err(|error| format!("cannot use signing key: {error}"))?;
        signers.push(Box::new(signer));
    }
    if options.pkcs11.is_empty() {
        return Ok(signers);
    }
    let module = options
        .pkcs11_module
        .clone()
        .or_else(|| std::env::var_os("EDGEC_PKCS11_MODULE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PKCS11_MODULE));
    let pin = std::env::var(&options.pin_variable).map_err(|_| {
        format!("set the token's user PIN in the environment variable `{}` (or name another with --pin-env)", options.pin_variable)
    })?;
    for uri in &options.pkcs11 {
        let uri = Pkcs11Uri::parse(uri).map_err(|error| error.to_string())?;
        let signer = Pkcs11Signer::open(&module, &uri, &pin)
            .map_err(|error| format!("cannot sign with the token: {error}"))?;
        signers.push(Box::new(signer));
    }
    Ok(signers)
}
