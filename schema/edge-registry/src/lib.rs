//! edgec bundles in OCI registries.
//!
//! [`artifact`] is the layout of a bundle as an OCI artifact (pure, no I/O): what `edgec push`
//! writes and what a device parses and checks before it trusts anything a registry says.
//! [`client`] is a blocking client on oci-client that pushes bundles and image layouts,
//! resolves tags to digests, and fetches a bundle's head and then its payload, resumably, into
//! a directory `edged` applies. `schema/BUNDLE.md` ("In an OCI registry") documents the layout.

pub mod artifact;
pub mod client;
pub mod error;

pub use artifact::{Blob, BundleLayout, LayoutError, PayloadLayer};
pub use client::{
    Credentials, FetchProgress, FetchReport, FetchedHead, PushReport, RegistryClient,
    RegistryOptions, parse_reference,
};
pub use error::{RegistryError, Step};
