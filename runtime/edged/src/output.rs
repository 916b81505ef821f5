//! A command's output on stdout. `println!` panics when stdout is a closed
//! pipe (`edged status | head -1`); edged writes through here instead, and
//! a closed pipe ends the command quietly (see [`Error::Output`]).

use std::io::Write;

use crate::error::{Error, Result};

/// Writes `text` to stdout and flushes it.
pub fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Error::Output)
}

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) -> Result<()> {
    print(&format!("{text}\n"))
}
