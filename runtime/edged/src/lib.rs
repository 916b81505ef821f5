//! `edged`, the edgec device runtime: verifies signed bundles against trust
//! anchors in the device's security element, installs them into the
//! inactive of two slots, switches atomically, runs the modules on Docker
//! and rolls back by itself when the new deployment is unhealthy.
//!
//! See `runtime/README.md` for the state directory layout and the
//! transaction.

// `print!` and `eprint!` panic on a closed pipe: output goes through
// `output`, everything else through `tracing`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deployment;
pub mod device;
pub mod docker;
pub mod durable;
pub mod duration;
pub mod error;
pub mod failpoint;
pub mod fetched;
pub mod hub;
pub mod hub_server;
pub mod inbox;
pub mod intake;
pub mod layout_tar;
pub mod lock;
pub mod logging;
pub mod os_update;
pub mod output;
pub mod poll;
pub mod pull;
pub mod runtime;
pub mod state;
pub mod status;
pub mod stop;
pub mod supervision;
pub mod trust;
pub mod update;
pub mod view;
pub mod writer;

pub use config::DeviceConfig;
pub use device::{Applied, Device, Verdict};
pub use error::{Error, Result};
pub use state::{Slot, State};
