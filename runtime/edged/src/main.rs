//! The `edged` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    edged::cli::main()
}
