//! The pure core of the edgec compiler: parsing, checking and emitting `.edge` programs.
//!
//! Nothing here touches the file system, the environment or the terminal; the `edgec` binary does
//! that and hands this crate bytes. Errors are data ([`diagnostic::Diagnostic`]), and all their
//! wording lives in [`diagnostic::wording`].

pub mod source;
pub mod span;
pub mod syntax;
