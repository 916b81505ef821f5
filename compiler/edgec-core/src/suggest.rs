//! "Did you mean" suggestions: the route library's, so the compiler and the route checks suggest
//! names the same way.

/// The candidate closest to `name`, when it is close enough to be a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    edge_route::suggest::closest_name(name, candidates).map(str::to_owned)
}
