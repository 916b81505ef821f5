//! `SOURCE_DATE_EPOCH` (reproducible-builds.org): the one time that enters what `edgec build`
//! and `edgec image build` write, so that the same sources give the same bytes.

use std::ffi::OsStr;

/// The environment variable.
pub const VARIABLE: &str = "SOURCE_DATE_EPOCH";

/// The build time from the environment, in seconds since 1970; 0 when the variable is unset.
pub fn from_environment() -> Result<u64, String> {
    parse(std::env::var_os(VARIABLE).as_deref())
}

/// The build time from the environment, or `None` when the variable is unset, for what must not
/// silently count from 1970 (a relative `--expires`).
pub fn from_environment_if_set() -> Result<Option<u64>, String> {
    let value = std::env::var_os(VARIABLE);
    value.as_deref().map(|value| parse(Some(value))).transpose()
}

/// Parses the variable's value: decimal digits, surrounding white space allowed. Anything else
/// (a sign, a fraction, an empty or non-UTF-8 value) is refused rather than read as 0, as the
/// specification asks. The largest time is 2106-02-07, because the squashfs, cpio and FAT
/// time stamps of an image are 32-bit seconds.
pub fn parse(value: Option<&OsStr>) -> Result<u64, String> {
    let Some(value) = value else {
        return Ok(0);
    };
    let refuse = || {
        format!(
            "{VARIABLE} must be a whole number of seconds since 1970 (at most {}), not `{}`",
            u32::MAX,
            value.to_string_lossy()
        )
    };
    let text = value.to_str().ok_or_else(refuse)?.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(refuse());
    }
    let seconds: u32 = text.parse().map_err(|_| refuse())?;
    Ok(u64::from(seconds))
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn parse_text(text: &str) -> Result<u64, String> {
        parse(Some(OsStr::new(text)))
    }

    #[test]
    fn unset_means_the_epoch_and_digits_are_seconds() {
        assert_eq!(parse(None), Ok(0));
        assert_eq!(parse_text("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_text(" 42\n"), Ok(42));
        assert_eq!(parse_text("4294967295"), Ok(u64::from(u32::MAX)));
    }

    #[test]
    fn anything_but_digits_is_refused() {
        for bad in ["", " ", "+5", "-1", "1.5", "1e9", "now", "4294967296"] {
            let error = parse_text(bad).unwrap_err();
            assert!(
                error.starts_with("SOURCE_DATE_EPOCH must be"),
                "{bad}: {error}"
            );
        }
        assert!(parse(Some(OsStr::from_bytes(b"17\xff"))).is_err());
    }
}
