//! Image recipes (`recipes/images/*.toml`). The fleet itself stays in `.edge`: a recipe names a
//! `.edge` program, and the hardware profile and deployment in it, by name; TOML only carries the
//! knobs of the image (kernel package, partition sizes, boot tries, how edged runs).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{DEFAULT_MODULES, ImageError, Sizes};

/// A recipe as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The image's name (the default output directory).
    pub name: String,
    /// The `.edge` program holding the hardware profile and the deployment (relative to the
    /// recipe).
    pub program: PathBuf,
    /// The hardware profile the image is for: its architecture picks the kernel and partition
    /// types, its `compatible` string goes into edged's device configuration.
    pub hardware: String,
    /// The deployment whose signed bundle is installed on first boot.
    pub deployment: String,
    /// The Debian kernel package.
    pub kernel: String,
    /// Kernel modules the init loads, in order (default: [`DEFAULT_MODULES`]).
    #[serde(default)]
    pub modules: Option<Vec<String>>,
    /// Boots an updated slot gets to reach "healthy" before the other slot is booted again.
    #[serde(default = "three")]
    pub boot_tries: u8,
    /// Partition sizes in MiB.
    pub partitions: Partitions,
    /// How edged runs on the device.
    #[serde(default)]
    pub edged: Edged,
}

fn three() -> u8 {
    3
}

/// Partition sizes, in MiB.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    /// The EFI system partition.
    pub esp_mib: u64,
    /// Each root slot (must hold the squashfs).
    pub root_mib: u64,
    /// Each dm-verity hash partition (about 1/120 of the root).
    pub verity_mib: u64,
    /// The data partition (edged's state).
    pub data_mib: u64,
}

/// edged's settings on the device.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edged {
    /// `docker`, or `none` where the image has no container engine (modules are not run).
    #[serde(default = "docker")]
    pub runtime: String,
    /// The health window before a deployment is committed, a duration with its unit (`"30s"`,
    /// `"500ms"`), written into the image's `device.toml` as `[health] window`.
    #[serde(default = "thirty_seconds")]
    pub health_window: String,
    /// Extra trust anchors for bundles (PEM public keys, relative to the recipe), besides the
    /// keys the image is signed with.
    #[serde(default)]
    pub trust: Vec<PathBuf>,
}

impl Default for Edged {
    fn default() -> Self {
        Self {
            runtime: docker(),
            health_window: thirty_seconds(),
            trust: Vec::new(),
        }
    }
}

fn docker() -> String {
    "docker".into()
}

fn thirty_seconds() -> String {
    "30s".into()
}

impl Recipe {
    /// Reads and checks a recipe; relative paths in it become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let text = std::fs::read_to_string(path).map_err(ImageError::io("read", path))?;
        let mut recipe: Recipe = toml::from_str(&text)
            .map_err(|error| ImageError::Recipe(format!("{}: {error}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new(""));
        recipe.program = base.join(&recipe.program);
        for anchor in &mut recipe.edged.trust {
            *anchor = base.join(&*anchor);
        }
        if !(1..=15).contains(&recipe.boot_tries) {
            return Err(ImageError::Recipe(format!(
                "{}: boot_tries must be between 1 and 15 (4 bits in the partition table), not {}",
                path.display(),
                recipe.boot_tries
            )));
        }
        if let Err(error) = humantime::parse_duration(&recipe.edged.health_window) {
            return Err(ImageError::Recipe(format!(
                "{}: edged.health_window {:?} is not a duration ({error}); write a number with a unit, like \"30s\" or \"500ms\"",
                path.display(),
                recipe.edged.health_window
            )));
        }
        if !matches!(recipe.edged.runtime.as_str(), "docker" | "none") {
            return Err(ImageError::Recipe(format!(
                "{}: edged.runtime must be \"docker\" or \"none\", not {:?}",
                path.display(),
                recipe.edged.runtime
            )));
        }
        Ok(recipe)
    }

    /// The modules to load.
    pub fn modules(&self) -> Vec<String> {
        self.modules.clone().unwrap_or_else(|| {
            DEFAULT_MODULES
                .iter()
                .map(|name| (*name).to_owned())
                .collect()
        })
    }

    /// Partition sizes in bytes.
    pub fn sizes(&self) -> Sizes {
        let mib = |value: u64| value << 20;
        Sizes {
            esp: mib(self.partitions.esp_mib),
            root: mib(self.partitions.root_mib),
            verity: mib(self.partitions.verity_mib),
            signature: mib(1),
            data: mib(self.partitions.data_mib),
        }
    }

    /// `/etc/edged/device.toml` for this image.
    pub fn device_config(&self, compatible: &str, architecture: &str) -> String {
        format!(
            "compatible = {compatible:?}\narchitecture = {architecture:?}\n\n[trust]\ndir = \"/etc/edged/trust.d\"\n\n[health]\nwindow = {:?}\n\n[os]\ndisk = \"/dev/vda\"\nboot_tries = {}\n",
            self.edged.health_window, self.boot_tries
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_recipes_load() {
        let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/images");
        for name in ["qemu-x86_64.toml", "arm64.toml"] {
            let recipe = Recipe::load(&recipes.join(name)).unwrap();
            assert!(recipe.program.is_file(), "{}", recipe.program.display());
            assert!(recipe.sizes().root >= 32 << 20);
        }
    }

    #[test]
    fn out_of_range_tries_and_unknown_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        let base = "name = \"x\"\nprogram = \"p.edge\"\nhardware = \"h\"\ndeployment = \"d\"\nkernel = \"k\"\n[partitions]\nesp_mib = 1\nroot_mib = 1\nverity_mib = 1\ndata_mib = 1\n";
        std::fs::write(&path, format!("boot_tries = 16\n{base}")).unwrap();
        assert!(
            Recipe::load(&path)
                .unwrap_err()
                .to_string()
                .contains("boot_tries")
        );
        std::fs::write(&path, format!("colour = 1\n{base}")).unwrap();
        assert!(
            Recipe::load(&path)
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
    }
}
