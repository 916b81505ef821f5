//! Stable diagnostic codes. A code never changes meaning once released; its explanation lives in
//! `compiler/edgec-core/explanations/CODE.md` and its example is tested. `E`/`W` codes are the
//! compiler's own; `R` codes come from the route language library `edge-route`, whose code
//! strings are the same.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

macro_rules! codes {
    ($($code:ident),* $(,)?) => {
        /// Every diagnostic code. The first letter gives the severity.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($code),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$code),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$code => stringify!($code)),* }
            }

            /// The long explanation shown by `edgec explain`.
            pub fn explanation(self) -> &'static str {
                match self {
                    $(Code::$code => include_str!(concat!("../../explanations/", stringify!($code), ".md"))),*
                }
            }
        }
    };
}

codes![
    E0001, E0002, E0003, E0004, E0005, E0006, E0007, E0008, E0009, E0010, E0011, E0012, W0013,
    E0014, E0015, E0101, E0102, E0103, E0104, E0105, E0106, E0107, E0108, E0109, E0110, E0111,
    E0112, E0201, E0202, E0203, E0204, E0205, E0206, E0207, E0208, E0209, E0210, E0211, E0212,
    E0213, W0214, E0302, E0303, E0304, E0305, W0306, W0307, R0001, R0002, R0003, R0004, R0005,
    R0006, R0007, R0008, R0009, R0010, R0011, R0012, R0013, R0014, R0015, R0016, R0101, R0102,
    R0103, R0104, R0105,
];

impl Code {
    /// `W` codes are warnings, and so are the route language's warnings about conditions that can
    /// never be true (`R0104`, `R0105`); everything else is an error.
    pub fn severity(self) -> Severity {
        if self.as_str().starts_with('W') || matches!(self, Code::R0104 | Code::R0105) {
            Severity::Warning
        } else {
            Severity::Error
        }
    }

    /// Parses `E0101` (case-insensitive).
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL
            .iter()
            .copied()
            .find(|code| code.as_str().eq_ignore_ascii_case(text.trim()))
    }
}
