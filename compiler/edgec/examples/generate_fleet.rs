//! Writes a large, realistic and valid fleet for benchmarking `edgec check`:
//!
//! ```text
//! cargo run --release -p edgec --example generate_fleet -- OUT_DIR [SITES]
//! ```
//!
//! Every site is one file with one deployment of 20 modules and 40 routes (half of them with
//! `WHERE` conditions on the declared message schemas), importing hardware profiles and schemas
//! shared by the whole fleet. The default of 500 sites gives 500 deployments, 10,000 modules and
//! 20,000 routes. The output is deterministic: the same arguments always write the same bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DEFAULT_SITES: usize = 500;
const MODULES_PER_SITE: usize = 20;

const HARDWARE: &str = r#"// Hardware profiles shared by every site.
hardware gateway_x86 {
  arch = amd64
  cpus = 8
  memory = 16GiB
  storage = 128GiB
  security = pkcs11("fleet-gateway")
  compatible = "edgec,gateway-x86-64,v1"
}

hardware gateway_arm {
  arch = arm64
  cpus = 4
  memory = 8GiB
  storage = 64GiB
  security = tpm
  compatible = "edgec,gateway-arm64,v1"
}
"#;

const SCHEMAS: &str = r#"// Message schemas shared by every site.
schema Reading {
  siteId: string
  sensor: string
  timestamp: string
  temperature: float
  pressure: float(0..5000)
  humidity: int(0..100)
  quality: "good" | "suspect" | "bad"
  vibration: { rms: float, peak: float }
}

schema Alert {
  siteId: string
  severity: "info" | "warning" | "critical"
  kind: string
  value: float
  message: string?
}
"#;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let (directory, sites) = match arguments.as_slice() {
        [directory] => (PathBuf::from(directory), DEFAULT_SITES),
        [directory, sites] => match sites.parse() {
            Ok(sites) => (PathBuf::from(directory), sites),
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    match write_fleet(&directory, sites) {
        Ok(()) => {
            println!(
                "wrote {sites} deployments, {} modules and {} routes to {}",
                sites * MODULES_PER_SITE,
                sites * MODULES_PER_SITE * 2,
                directory.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: cannot write the fleet: {error}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: generate_fleet OUT_DIR [SITES]");
    ExitCode::from(2)
}

fn write_fleet(directory: &Path, sites: usize) -> std::io::Result<()> {
    // The fleet-wide files live in `common/`: the hardware profile and schemas every site imports.
    let common = directory.join("common");
    let site_directory = directory.join("sites");
    std::fs::create_dir_all(&common)?;
    std::fs::create_dir_all(&site_directory)?;
    std::fs::write(common.join("hardware.edge"), HARDWARE)?;
    std::fs::write(common.join("schemas.edge"), SCHEMAS)?;
    for site in 0..sites {
        let path = site_directory.join(format!("site-{site:04}.edge"));
        std::fs::write(path, site_source(site))?;
    }
    Ok(())
}

/// One site: imports, 20 modules and the deployment that runs them.
fn site_source(site: usize) -> String {
    let mut source = format!(
        "// Site {site:04}: a chain of {MODULES_PER_SITE} processing modules.\n\
         import \"../common/hardware.edge\"\n\
         import \"../common/schemas.edge\"\n"
    );
    for index in 0..MODULES_PER_SITE {
        source.push('\n');
        source.push_str(&module_source(site, index));
    }
    source.push('\n');
    source.push_str(&deployment_source(site));
    source
}

fn module_name(site: usize, index: usize) -> String {
    format!("s{site:04}-m{index:02}")
}

/// A module with a pinned image, environment, limits, one input, two typed outputs and a twin.
fn module_source(site: usize, index: usize) -> String {
    let name = module_name(site, index);
    let role = ["sensor", "filter", "analytics", "bridge"][index % 4];
    let digest = digest(&name);
    let mut source = format!(
        "module {name} {{\n  \
           image = \"fleet.azurecr.io/{role}:2.{minor}.{index}@sha256:{digest}\"\n  \
           restart = {restart}\n",
        minor = site % 7,
        restart = ["always", "on-failure"][index % 2]
    );
    if index > 0 {
        let _ = writeln!(source, "  after = [{}]", module_name(site, index - 1));
    }
    let _ = write!(
        source,
        "  env {{\n    \
             SITE_ID = \"site-{site:04}\"\n    \
             MODULE_INDEX = {index}\n    \
             LOG_LEVEL = \"info\"\n  \
           }}\n  \
           limits {{\n    \
             memory = 128MiB\n    \
             cpus = 0.1\n  \
           }}\n  \
           input in\n  \
           output readings: Reading\n  \
           output alerts: Alert\n  \
           twin {{\n    \
             interval: int(1..3600) = {interval}\n    \
             threshold: float(-50..150) = {threshold}.5\n    \
             mode: \"auto\" | \"manual\" | \"off\" = \"auto\"\n    \
             calibration {{\n      \
               offset: float = 0.0\n      \
               gain: float(0.1..10) = 1.0\n    \
             }}\n  \
           }}\n\
         }}\n",
        interval = 1 + (site + index) % 60,
        threshold = 20 + index,
    );
    source
}

/// The site's deployment: its modules, a forwarding route from each module to the next (every
/// other one filtered on the reading's body) and an alert route from each module upstream.
fn deployment_source(site: usize) -> String {
    let modules: Vec<String> = (0..MODULES_PER_SITE)
        .map(|index| module_name(site, index))
        .collect();
    let target = ["gateway_x86", "gateway_arm"][site % 2];
    let mut source = format!(
        "deployment site_{site:04} {{\n  \
           target = {target}\n  \
           version = {version}\n  \
           modules = [\n{modules}  ]\n",
        version = 1 + site % 5,
        modules = modules
            .iter()
            .map(|module| format!("    {module},\n"))
            .collect::<String>(),
    );
    for (index, module) in modules.iter().enumerate() {
        let next = &modules[(index + 1) % MODULES_PER_SITE];
        let condition = match index % 4 {
            0 => " WHERE $body.temperature > 25.5 AND $body.quality = 'good'".to_owned(),
            2 => format!(" WHERE $body.vibration.rms >= {index}.0 OR $body.humidity < 80"),
            _ => String::new(),
        };
        let _ = writeln!(
            source,
            "  route forward{index:02} = r#\"FROM /messages/modules/{module}/outputs/readings{condition} \
             INTO BrokeredEndpoint(\"/modules/{next}/inputs/in\")\"#"
        );
        let _ = write!(
            source,
            "  route alerts{index:02} = \"FROM /messages/modules/{module}/outputs/alerts \
             WHERE $body.severity = 'critical' INTO $upstream\" {{\n    \
               priority = {priority}\n    \
               ttl = 1d\n  \
             }}\n",
            priority = index % 3,
        );
    }
    source.push_str("  edge_hub {\n    store_and_forward_ttl = 2h\n  }\n}\n");
    source
}

/// A deterministic stand-in for an image digest: 64 hex digits derived from the module's name
/// with FNV-1a, so that every module is pinned (no W0214) and runs are reproducible.
fn digest(name: &str) -> String {
    let mut digest = String::with_capacity(64);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0..4u8 {
        for byte in name.bytes().chain([round]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let _ = write!(digest, "{hash:016x}");
    }
    digest
}
