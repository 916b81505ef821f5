//! Emitters: from a checked [`crate::check::Program`] to the artefacts edgec writes.

pub mod manifest;
pub mod pin;
pub mod route_table;
