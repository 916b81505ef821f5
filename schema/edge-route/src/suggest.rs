//! "Did you mean" suggestions for misspelt names, shared with the compiler so that a misspelt
//! module, attribute or body field is suggested the same way everywhere.

/// Returns the candidate closest to `name` by case-insensitive edit distance, if it is close
/// enough to be a plausible typo: at most a third of the name's length, and at least one edit.
/// `name` itself is never suggested; ties go to the alphabetically first candidate, so the
/// suggestion does not depend on the order candidates come in.
pub fn closest_name<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lowered = name.to_lowercase();
    let allowed = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|candidate| *candidate != name)
        .map(|candidate| {
            (
                edit_distance(&lowered, &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= allowed)
        .min()
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over characters, with a swap of two adjacent characters counted as one
/// edit (the commonest typo).
fn edit_distance(left: &str, right: &str) -> usize {
    let left: Vec<char> = left.chars().collect();
    let right: Vec<char> = right.chars().collect();
    let mut before_previous = vec![0; right.len() + 1];
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for i in 1..=left.len() {
        let mut current = vec![i; right.len() + 1];
        for j in 1..=right.len() {
            let substitution = previous[j - 1] + usize::from(left[i - 1] != right[j - 1]);
            current[j] = substitution.min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && left[i - 1] == right[j - 2] && left[i - 2] == right[j - 1] {
                current[j] = current[j].min(before_previous[j - 2] + 1);
            }
        }
        before_previous = std::mem::replace(&mut previous, current);
    }
    previous[right.len()]
}

#[cfg(test)]
mod tests {
    use super::closest_name;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            closest_name("temprature", ["temperature", "humidity"]),
            Some("temperature")
        );
        assert_eq!(closest_name("xyz", ["temperature"]), None);
        assert_eq!(
            closest_name("restrat", ["restart", "image"]),
            Some("restart")
        );
        assert_eq!(
            closest_name("SimulatedTempSensor", ["SimulatedTemperatureSensor"]),
            None
        );
        assert_eq!(closest_name("fliter", ["filter", "sensor"]), Some("filter"));
    }

    #[test]
    fn never_suggests_the_name_itself_and_breaks_ties_alphabetically() {
        assert_eq!(closest_name("filter", ["filter"]), None);
        assert_eq!(closest_name("cat", ["cut", "bat"]), Some("bat"));
    }
}
