//! "Did you mean" suggestions.

/// The candidate closest to `name` by edit distance (case-insensitive), when it is close enough
/// to be a plausible typo: at most a third of the name's length, and at least one edit allowed.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lowered = name.to_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|candidate| *candidate != name)
        .map(|candidate| {
            (
                edit_distance(&lowered, &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by(|left, right| left.0.cmp(&right.0).then_with(|| left.1.cmp(right.1)))
        .map(|(_, candidate)| candidate.to_owned())
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
fn edit_distance(left: &str, right: &str) -> usize {
    let left: Vec<char> = left.chars().collect();
    let right: Vec<char> = right.chars().collect();
    let mut previous_previous = vec![0; right.len() + 1];
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for i in 1..=left.len() {
        let mut current = vec![i; right.len() + 1];
        for j in 1..=right.len() {
            let substitution = previous[j - 1] + usize::from(left[i - 1] != right[j - 1]);
            current[j] = substitution.min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && left[i - 1] == right[j - 2] && left[i - 2] == right[j - 1] {
                current[j] = current[j].min(previous_previous[j - 2] + 1);
            }
        }
        previous_previous = std::mem::replace(&mut previous, current);
    }
    previous[right.len()]
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggests_a_near_name_and_nothing_for_a_far_one() {
        assert_eq!(
            closest("restrat", ["restart", "image"]),
            Some("restart".to_owned())
        );
        assert_eq!(
            closest("SimulatedTempSensor", ["SimulatedTemperatureSensor"]),
            None
        );
        assert_eq!(
            closest("fliter", ["filter", "sensor"]),
            Some("filter".to_owned())
        );
        assert_eq!(closest("zzz", ["filter"]), None);
    }
}
