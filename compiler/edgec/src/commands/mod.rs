//! One module per subcommand.

pub mod build;
pub mod check;
pub mod expiry;
pub mod explain;
pub mod fmt;
pub mod image;
pub mod import;
pub mod keys;
pub mod registry;
pub mod route;
pub mod signing;
pub mod source_date_epoch;
pub mod verity;
