//! The parts of the `edgec` command line that other tools reuse: reading sources from disk and
//! following imports exactly as `edgec check` does (the golden tests load their cases with it).

pub mod load;
