//! The formats an edgec OS image's init shares with the image builder: the GPT layout
//! ([`gpt`]), boot counting in partition attributes ([`boot`]), and the init configuration
//! and root hash signature ([`config`]), and the document `edged status --json` prints, which the
//! init reads ([`status`]). The init itself is this crate's binary.

pub mod boot;
pub mod config;
pub mod gpt;
pub mod status;
