//! A build that fails part-way leaves neither a partial image nor its staging directory, and
//! an earlier image at the output path is left as it was.
//!
//! The kernel comes from a tiny package made here with `dpkg-deb --build` and placed in the
//! kernel cache, so no download happens; the recipe names a kernel module the package does
//! not hold, so the build fails in the initramfs step, after the root file system, its
//! dm-verity tree and the root hash signature were written.

use std::path::{Path, PathBuf};
use std::process::Command;

use edge_bundle::{FileSigner, generate_keypair};
use edge_image::{ImageSpec, Progress, Sizes, StagedOutput};

const PACKAGE: &str = "linux-image-edgec-test";
const RELEASE: &str = "1.0.0-edgec-test";

/// The smallest file `edge-image` accepts as a static amd64 binary: an ELF header without
/// program headers, so without a program interpreter.
fn static_binary(path: &Path) {
    let mut elf = vec![0_u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[0x12] = 0x3e;
    elf[0x36] = 56;
    std::fs::write(path, elf).unwrap();
}

/// A kernel package with a kernel image and an empty modules tree, in `cache`.
fn kernel_package(work: &Path, cache: &Path) {
    let tree = work.join("package");
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::create_dir_all(tree.join(format!("lib/modules/{RELEASE}/kernel"))).unwrap();
    std::fs::write(
        tree.join(format!("boot/vmlinuz-{RELEASE}")),
        b"not a kernel",
    )
    .unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {PACKAGE}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: edgec tests <tests@edgec.invalid>\nDescription: a kernel package for edge-image tests\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(cache).unwrap();
    let status = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&tree)
        .arg(cache.join(format!("{PACKAGE}_1.0_amd64.deb")))
        .output()
        .expect("dpkg-deb runs");
    assert!(status.status.success(), "{status:?}");
}

fn spec(work: &Path) -> ImageSpec {
    let edged = work.join("edged");
    let init = work.join("edge-init");
    static_binary(&edged);
    static_binary(&init);
    let bundle = work.join("initial.edgebundle");
    std::fs::write(&bundle, b"a bundle").unwrap();
    let cache = work.join("cache");
    kernel_package(work, &cache);
    ImageSpec {
        name: "failing".into(),
        architecture: "amd64".into(),
        kernel_package: PACKAGE.into(),
        modules: vec!["no-such-module".into()],
        sizes: Sizes {
            esp: 1 << 20,
            root: 4 << 20,
            verity: 1 << 20,
            signature: 1 << 20,
            data: 8 << 20,
        },
        boot_tries: 3,
        edged,
        init,
        device_config: String::new(),
        edged_options: Vec::new(),
        initial_bundle: bundle,
        trust_anchors: Vec::new(),
        source_date_epoch: 0,
        cache,
    }
}

fn build(spec: &ImageSpec, output: &Path) -> String {
    let pair = generate_keypair().unwrap();
    let signer = FileSigner::from_pem(&pair.private_pem).unwrap();
    let staged = StagedOutput::new(output).unwrap();
    let error = edge_image::build(spec, &signer, &staged, &mut Progress::new(8, true))
        .expect_err("the module is missing, so the build fails");
    error.to_string()
}

fn entries(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_build_failing_after_the_root_was_written_leaves_no_output() {
    let work = tempfile::tempdir().unwrap();
    let spec = spec(work.path());
    let parent = work.path().join("images");
    let output: PathBuf = parent.join("failing");
    let error = build(&spec, &output);
    assert!(error.contains("module no-such-module"), "{error}");
    assert!(!output.exists());
    assert!(entries(&parent).is_empty(), "{:?}", entries(&parent));
}

#[test]
fn a_failed_build_leaves_an_earlier_image_untouched() {
    let work = tempfile::tempdir().unwrap();
    let spec = spec(work.path());
    let parent = work.path().join("images");
    let output = parent.join("failing");
    std::fs::create_dir_all(&output).unwrap();
    std::fs::write(output.join("manifest.json"), b"{\"earlier\": true}").unwrap();
    std::fs::write(output.join("disk.img"), b"earlier disk").unwrap();
    build(&spec, &output);
    assert_eq!(entries(&parent), ["failing"]);
    assert_eq!(entries(&output), ["disk.img", "manifest.json"]);
    assert_eq!(
        std::fs::read(output.join("disk.img")).unwrap(),
        b"earlier disk"
    );
}
