//! Step-by-step progress: one line rewritten in place on a terminal, plain lines otherwise
//! (logs, CI), each with how long the step took.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Reports the steps of a long operation on standard error.
pub struct Progress {
    total: usize,
    done: usize,
    terminal: bool,
    quiet: bool,
    step: Option<(String, Instant)>,
}

impl Progress {
    /// Progress over `total` steps; `quiet` prints nothing.
    pub fn new(total: usize, quiet: bool) -> Self {
        Self {
            total,
            done: 0,
            terminal: std::io::stderr().is_terminal(),
            quiet,
            step: None,
        }
    }

    /// Starts the next step (finishing the previous one).
    pub fn step(&mut self, what: &str) {
        self.finish_step();
        self.done += 1;
        if !self.quiet && self.terminal {
            eprint!("\r\x1b[K[{}/{}] {what}…", self.done, self.total);
            let _ = std::io::stderr().flush();
        }
        self.step = Some((what.to_owned(), Instant::now()));
    }

    /// Ends the last step.
    pub fn finish(&mut self) {
        self.finish_step();
        if !self.quiet && self.terminal {
            eprint!("\r\x1b[K");
        }
    }

    fn finish_step(&mut self) {
        if let Some((what, started)) = self.step.take()
            && !self.quiet
            && !self.terminal
        {
            eprintln!(
                "[{}/{}] {what} ({:.2} s)",
                self.done,
                self.total,
                started.elapsed().as_secs_f64()
            );
        }
    }
}
