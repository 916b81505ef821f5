//! `edgec build --expires`: the time after which devices refuse a bundle (`schema/BUNDLE.md`,
//! "Expiry"), given as an absolute RFC 3339 UTC time or as a duration counted from the bundle's
//! creation time, `SOURCE_DATE_EPOCH`, so that the same inputs still give the same bytes.

use std::time::{Duration, UNIX_EPOCH};

use super::source_date_epoch::VARIABLE;

/// What `--expires` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// An absolute time, seconds since 1970.
    At(u64),
    /// A lifetime counted from the creation time, and how it was written (for messages).
    After(Duration, String),
}

/// Parses `--expires`: `2030-01-31T00:00:00Z` or a duration with a unit (`90days`, `2w`, `1y`).
pub fn parse(text: &str) -> Result<Expiry, String> {
    let text = text.trim();
    if text.contains('T') && text.ends_with(['Z', 'z']) {
        let time = humantime::parse_rfc3339(text).map_err(|error| {
            format!(
                "`{text}` is not an RFC 3339 UTC time ({error}); write it like 2030-01-31T00:00:00Z"
            )
        })?;
        let since = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("`{text}` is before 1970"))?;
        if since.subsec_nanos() != 0 {
            return Err(format!(
                "`{text}` has a fraction of a second; bundles expire on whole seconds"
            ));
        }
        return Ok(Expiry::At(since.as_secs()));
    }
    let lifetime = humantime::parse_duration(text).map_err(|error| {
        format!(
            "`{text}` is neither a duration ({error}) nor an RFC 3339 UTC time; write a lifetime like 90days or 2w, or a time like 2030-01-31T00:00:00Z"
        )
    })?;
    if lifetime.is_zero() {
        return Err(
            "a lifetime of 0 expires the bundle when it is made; give a longer one".to_owned(),
        );
    }
    if lifetime.subsec_nanos() != 0 {
        return Err(format!(
            "`{text}` has a fraction of a second; bundles expire on whole seconds"
        ));
    }
    Ok(Expiry::After(lifetime, text.to_owned()))
}

/// The expiry in seconds since 1970 for a bundle created at `source_date_epoch` (`None` when the
/// variable is unset). A lifetime needs the variable: counting it from the time of the build
/// would make every build's bytes differ, and counting it from 1970 would expire the bundle long
/// ago. An absolute time must be after the creation time.
pub fn resolve(expiry: &Expiry, source_date_epoch: Option<u64>) -> Result<u64, String> {
    let created = source_date_epoch.unwrap_or(0);
    let at = match expiry {
        Expiry::At(at) => *at,
        Expiry::After(lifetime, text) => {
            let Some(created) = source_date_epoch else {
                return Err(format!(
                    "--expires {text} counts from the bundle's creation time, {VARIABLE}, which is not set; set it (for example to `git log -1 --format=%ct`) or give an absolute time like 2030-01-31T00:00:00Z"
                ));
            };
            created
                .checked_add(lifetime.as_secs())
                .ok_or_else(|| format!("--expires {text} is too far in the future"))?
        }
    };
    if at <= created {
        return Err(format!(
            "--expires {} is not after the bundle's creation time {} ({VARIABLE}={created}); a bundle must expire later than it is made",
            format_time(at),
            format_time(created)
        ));
    }
    Ok(at)
}

/// Seconds since 1970 as RFC 3339 UTC, for messages.
fn format_time(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_times_and_lifetimes_parse() {
        assert_eq!(parse("2030-01-31T00:00:00Z"), Ok(Expiry::At(1_896_048_000)));
        assert_eq!(
            parse("90days"),
            Ok(Expiry::After(
                Duration::from_secs(90 * 86_400),
                "90days".to_owned()
            ))
        );
        assert_eq!(
            parse(" 2w"),
            Ok(Expiry::After(
                Duration::from_secs(14 * 86_400),
                "2w".to_owned()
            ))
        );
        for (bad, expected) in [
            ("soon", "neither a duration"),
            ("30", "neither a duration"),
            ("-5d", "neither a duration"),
            ("0s", "a lifetime of 0"),
            ("1500ms", "fraction of a second"),
            ("2030-02-30T00:00:00Z", "not an RFC 3339 UTC time"),
            ("2030-01-31T00:00:00.5Z", "fraction of a second"),
            ("2030-01-31", "neither a duration"),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }

    #[test]
    fn lifetimes_count_from_the_source_date_epoch_which_must_be_set() {
        let month = Expiry::After(Duration::from_secs(30 * 86_400), "30d".to_owned());
        assert_eq!(resolve(&month, Some(1_700_000_000)), Ok(1_702_592_000));
        let error = resolve(&month, None).unwrap_err();
        assert!(
            error.contains("--expires 30d counts from the bundle's creation time, SOURCE_DATE_EPOCH, which is not set"),
            "{error}"
        );
        assert_eq!(resolve(&Expiry::At(1_800_000_000), None), Ok(1_800_000_000));
        let error = resolve(&Expiry::At(1_700_000_000), Some(1_700_000_000)).unwrap_err();
        assert!(
            error.contains("--expires 2023-11-14T22:13:20Z is not after the bundle's creation time 2023-11-14T22:13:20Z"),
            "{error}"
        );
    }
}
