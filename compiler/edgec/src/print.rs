//! Printing that never panics: `println!` panics when a reader such as `head` closes the pipe
//! early, and a closed pipe is not an error worth a crash. These macros write and ignore the
//! result. Declared first in `main.rs` with `#[macro_use]`, so every module can use them.

/// `println!` to standard output, ignoring a closed pipe.
macro_rules! out {
    ($($argument:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($argument)*);
    }};
}

/// `print!` to standard output, ignoring a closed pipe.
macro_rules! out_raw {
    ($($argument:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($argument)*);
    }};
}

/// `eprintln!` to standard error, ignoring a closed pipe.
macro_rules! err {
    ($($argument:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($argument)*);
    }};
}

/// `eprint!` to standard error, ignoring a closed pipe.
macro_rules! err_raw {
    ($($argument:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr().lock(), $($argument)*);
    }};
}
