//! Named crash points, so tests can prove that a crash at any of them
//! loses nothing that was promised.
//!
//! A failpoint is armed by naming it in the `EDGED_FAILPOINT` environment
//! variable; when execution reaches it, the process aborts on the spot, as a
//! power cut would stop it. `NAME:pause=DURATION` (`health-wait:pause=3s`)
//! stops there for that long instead, so that tests can act while the
//! process is in the middle of a transaction. `NAME:at=N` aborts the N-th
//! time the point is reached, so that a test can crash a process at a
//! chosen moment of a busy run rather than at the first hit. Unarmed
//! failpoints cost one comparison. Only builds with the `enabled` feature (tests) read the
//! variable at all; the named points stay in the code of every build as
//! calls that do nothing.
//!
//! Each crate lists its own points with [`failpoints!`], which makes an
//! enum implementing [`Point`].

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable that arms one failpoint by name.
pub const ENV: &str = "EDGED_FAILPOINT";

/// Whether this build arms failpoints at all (the `enabled` feature, which
/// only tests turn on).
pub const COMPILED_IN: bool = cfg!(feature = "enabled");

/// A set of named failpoints.
pub trait Point: Copy + PartialEq + 'static {
    /// Every point of the set.
    const ALL: &'static [Self];
    /// The name used in `EDGED_FAILPOINT`.
    fn name(self) -> &'static str;
}

/// Declares an enum of failpoints, `Variant => "name": "doc",` per point,
/// with `ALL` and `name()` as inherent items and as [`Point`].
#[macro_export]
macro_rules! failpoints {
    ($(#[$meta:meta])* $vis:vis enum $enum:ident { $($variant:ident => $name:literal: $doc:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        $vis enum $enum {
            $(#[doc = $doc] $variant,)*
        }

        #[allow(dead_code)]
        impl $enum {
            /// Every failpoint, in the order they are declared.
            pub const ALL: &'static [Self] = &[$($enum::$variant,)*];

            /// The name used in `EDGED_FAILPOINT`.
            pub fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name,)*
                }
            }
        }

        impl $crate::Point for $enum {
            const ALL: &'static [Self] = $enum::ALL;

            fn name(self) -> &'static str {
                $enum::name(self)
            }
        }
    };
}

/// Looks a failpoint up by its name.
pub fn by_name<P: Point>(name: &str) -> Option<P> {
    P::ALL.iter().copied().find(|point| point.name() == name)
}

/// What an armed failpoint does when it is reached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Abort the process, as a power cut would stop it.
    Abort,
    /// Stop there for a while, then go on.
    Pause(Duration),
    /// Pass this many times minus one, then abort.
    AbortAt(u64),
}

/// Parses an `EDGED_FAILPOINT` value, `NAME`, `NAME:pause=DURATION` or
/// `NAME:at=N` (N at least 1), into the name and the action.
pub fn parse(text: &str) -> Option<(&str, Action)> {
    let Some((name, action)) = text.split_once(':') else {
        return Some((text, Action::Abort));
    };
    if let Some(pause) = action.strip_prefix("pause=") {
        let duration = humantime::parse_duration(pause).ok()?;
        return Some((name, Action::Pause(duration)));
    }
    let at: u64 = action.strip_prefix("at=")?.parse().ok()?;
    (at >= 1).then_some((name, Action::AbortAt(at)))
}

/// The armed failpoint's name and action, read once from the environment;
/// never one in a build without the `enabled` feature.
fn armed() -> Option<&'static (String, Action)> {
    static ARMED: OnceLock<Option<(String, Action)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = COMPILED_IN.then(|| std::env::var(ENV).ok()).flatten()?;
            parse(&value).map(|(name, action)| (name.to_owned(), action))
        })
        .as_ref()
}

/// Aborts or pauses the process if `point` is the armed failpoint.
pub fn hit<P: Point>(point: P) {
    let Some((name, action)) = armed() else {
        return;
    };
    if name != point.name() {
        return;
    }
    // How often the armed point was reached, this time included.
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let reached = REACHED.fetch_add(1, Ordering::Relaxed) + 1;
    match action {
        Action::AbortAt(at) if reached < *at => {}
        Action::Abort | Action::AbortAt(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "edged: failpoint {name} reached, aborting"
            );
            std::process::abort();
        }
        Action::Pause(duration) => {
            let _ = writeln!(
                std::io::stderr(),
                "edged: failpoint {name} reached, pausing for {}",
                humantime::format_duration(*duration)
            );
            std::thread::sleep(*duration);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    failpoints! {
        enum Sample {
            First => "first": "The first point.",
            Second => "second": "The second point.",
        }
    }

    #[test]
    fn names_round_trip() {
        for point in Sample::ALL {
            assert_eq!(by_name::<Sample>(point.name()), Some(*point));
        }
        assert_eq!(by_name::<Sample>("third"), None);
    }

    #[test]
    fn values_arm_an_abort_or_a_pause() {
        assert_eq!(parse("first"), Some(("first", Action::Abort)));
        assert_eq!(
            parse("first:pause=1m30s"),
            Some(("first", Action::Pause(Duration::from_secs(90))))
        );
        assert_eq!(parse("first:at=300"), Some(("first", Action::AbortAt(300))));
        assert_eq!(parse("first:pause=soon"), None);
        assert_eq!(parse("first:at=0"), None);
        assert_eq!(parse("first:at=many"), None);
        assert_eq!(parse("first:sleep=1s"), None);
    }
}
