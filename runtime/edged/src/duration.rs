//! Durations as people write them (`30s`, `1m30s`, `500ms`), the way the
//! edgec language writes them, checked against the range that makes sense
//! for each setting. A number of seconds as a float can be infinite,
//! negative or not a number, and `Duration::from_secs_f64` panics on all
//! three, so edged never takes one.

use std::time::Duration;

/// A duration setting's name and the range it must lie in.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The setting, as the user writes it (`health.window`, `--interval`).
    pub name: &'static str,
    /// The shortest allowed.
    pub min: Duration,
    /// The longest allowed.
    pub max: Duration,
}

impl Bounds {
    /// Parses `text` and checks it is within the bounds.
    pub fn parse(&self, text: &str) -> Result<Duration, String> {
        let duration = humantime::parse_duration(text).map_err(|error| {
            format!(
                "{}: {text:?} is not a duration ({error}); write a number with a unit, like \"30s\", \"1m30s\" or \"500ms\"",
                self.name
            )
        })?;
        self.check(duration)
    }

    /// Checks an already parsed duration.
    pub fn check(&self, duration: Duration) -> Result<Duration, String> {
        if duration < self.min || duration > self.max {
            return Err(format!(
                "{} must be between {} and {}, not {}",
                self.name,
                humantime::format_duration(self.min),
                humantime::format_duration(self.max),
                humantime::format_duration(duration)
            ));
        }
        Ok(duration)
    }
}

/// Deserializes a duration written as a string with a unit; the range is
/// checked by the configuration's own validation, which names the key.
pub fn deserialize<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a duration with a unit, like \"30s\", \"1m30s\" or \"500ms\"")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text).map_err(|error| {
                E::custom(format!(
                    "{text:?} is not a duration ({error}); write a number with a unit, like \"30s\", \"1m30s\" or \"500ms\""
                ))
            })
        }
    }
    deserializer.deserialize_str(Visitor)
}

/// [`deserialize`] for an optional setting (with `#[serde(default)]`, absent is `None`).
pub fn deserialize_some<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Bounds = Bounds {
        name: "--interval",
        min: Duration::from_millis(10),
        max: Duration::from_secs(3600),
    };

    #[test]
    fn durations_need_units_and_stay_in_range() {
        assert_eq!(INTERVAL.parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(INTERVAL.parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(INTERVAL.parse("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["inf", "NaN", "-1s", "-1", "1", "", "soon"] {
            let error = INTERVAL.parse(bad).unwrap_err();
            assert!(error.contains("is not a duration"), "{bad}: {error}");
        }
        let error = INTERVAL.parse("0s").unwrap_err();
        assert_eq!(error, "--interval must be between 10ms and 1h, not 0s");
        let error = INTERVAL.parse("100000000000000h").unwrap_err();
        assert!(error.contains("--interval"), "{error}");
        assert!(INTERVAL.parse("2h").unwrap_err().contains("not 2h"));
    }
}
