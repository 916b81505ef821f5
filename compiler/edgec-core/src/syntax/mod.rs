//! The surface syntax: tree, parser, and the lexical rules they share.

pub mod ast;
pub mod format;
mod lexical;
mod literal;
mod parser;

pub use literal::{DURATION_UNITS, SIZE_UNITS};
pub use parser::{MAXIMUM_NESTING, parse};
