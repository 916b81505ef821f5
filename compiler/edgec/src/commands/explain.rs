//! `edgec explain CODE`.

use edgec_core::diagnostic::Code;

use crate::Status;
use crate::output::usage_error;

pub fn run(code: &str) -> Status {
    match Code::parse(code) {
        Some(code) => {
            out_raw!("{}", code.explanation());
            Status::Clean
        }
        None => {
            usage_error(&format!(
                "`{code}` is not an edgec diagnostic code; codes look like `E0101` or `W0306`"
            ));
            Status::Failure
        }
    }
}
