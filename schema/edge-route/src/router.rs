//! Route tables and the router that applies them to messages.

use serde::{Deserialize, Serialize};

use crate::error::{RouteError, RouteErrorKind};
use crate::evaluation::{BodyPathInterner, Evaluation, unresolved_paths};
use crate::message::{Message, MessageContext};
use crate::program::CompiledCondition;
use crate::route_syntax::{Sink, parse_route};
use crate::source_path::{SourcePath, source_prefix_matches};
use crate::type_checker::compile_condition;
use crate::value::Truth;

/// The lowest-urgency priority a route may have; 0 is the most urgent.
pub const LOWEST_PRIORITY: u8 = 9;

/// One entry of a route table as it is embedded in bundles and deployment manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTableEntry {
    /// The route's unique name.
    pub name: String,
    /// The route text, `FROM ... [WHERE ...] INTO ...`.
    pub route: String,
    /// 0 (most urgent) to 9.
    #[serde(default)]
    pub priority: u8,
    /// How long undelivered messages are kept, in seconds; 0 means the hub's default.
    #[serde(default)]
    pub time_to_live_secs: u32,
}

/// A route compiled for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// The route's name.
    pub name: String,
    /// The source path.
    pub source: SourcePath,
    /// The compiled condition; `None` routes every message from the source.
    pub condition: Option<CompiledCondition>,
    /// Where matching messages go.
    pub sink: Sink,
    /// 0 (most urgent) to 9.
    pub priority: u8,
    /// Time to live in seconds.
    pub time_to_live_secs: u32,
}

/// Parses and type-checks one route text; all spans refer to `text`.
pub fn compile_route(
    name: &str,
    text: &str,
    priority: u8,
    time_to_live_secs: u32,
) -> Result<CompiledRoute, Vec<RouteError>> {
    let parsed = parse_route(text).map_err(|error| vec![error])?;
    let condition = parsed
        .condition
        .as_ref()
        .map(|condition| compile_condition(condition, &parsed.source.path.kind))
        .transpose()?;
    if priority > LOWEST_PRIORITY {
        return Err(vec![RouteError::error(
            RouteErrorKind::InvalidPriority { priority },
            0..text.len(),
        )]);
    }
    Ok(CompiledRoute {
        name: name.to_owned(),
        source: parsed.source.path,
        condition,
        sink: parsed.sink.sink,
        priority,
        time_to_live_secs,
    })
}

impl CompiledRoute {
    /// Tells whether the route sends the message in `context` to its sink.
    pub fn matches(&self, context: &MessageContext<'_>) -> bool {
        self.source.matches(&context.message().source)
            && self
                .condition
                .as_ref()
                .is_none_or(|condition| condition.evaluate_in(context) == Truth::True)
    }
}

/// A route that matched a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'r> {
    /// The route's name.
    pub name: &'r str,
    /// Where the message goes.
    pub sink: &'r Sink,
    /// The route's priority.
    pub priority: u8,
    /// The route's time to live in seconds.
    pub time_to_live_secs: u32,
}

/// The errors of one route table entry, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTableError {
    /// The entry's name.
    pub name: String,
    /// Its diagnostics; spans refer to the entry's route text.
    pub errors: Vec<RouteError>,
}

/// Applies a route table to messages.
///
/// Routes usually share a handful of source paths and body paths, so the router matches each
/// distinct source prefix once per message, resolves each distinct body path at most once per
/// message, and lets the routes look the results up by index.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<CompiledRoute>,
    distinct_sources: Vec<String>,
    source_index_of_route: Vec<usize>,
    distinct_body_path_count: usize,
}

/// How many distinct source prefixes are remembered per message without allocating; routes with
/// further prefixes are matched directly.
const CACHED_SOURCE_COUNT: usize = 64;

impl Router {
    /// Compiles every entry, reporting all failing entries; routes are kept in priority order,
    /// ties ordered by name.
    pub fn new(entries: &[RouteTableEntry]) -> Result<Self, Vec<RouteTableError>> {
        let mut routes = Vec::with_capacity(entries.len());
        let mut failures = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            if entries[..index]
                .iter()
                .any(|earlier| earlier.name == entry.name)
            {
                failures.push(RouteTableError {
                    name: entry.name.clone(),
                    errors: vec![RouteError::error(
                        RouteErrorKind::DuplicateRouteName {
                            name: entry.name.clone(),
                        },
                        0..entry.route.len(),
                    )],
                });
                continue;
            }
            match compile_route(
                &entry.name,
                &entry.route,
                entry.priority,
                entry.time_to_live_secs,
            ) {
                Ok(route) => routes.push(route),
                Err(errors) => failures.push(RouteTableError {
                    name: entry.name.clone(),
                    errors,
                }),
            }
        }
        if !failures.is_empty() {
            return Err(failures);
        }
        routes
            .sort_by(|left, right| (left.priority, &left.name).cmp(&(right.priority, &right.name)));
        let mut body_paths = BodyPathInterner::default();
        for condition in routes
            .iter_mut()
            .filter_map(|route| route.condition.as_mut())
        {
            condition.intern_body_paths(&mut body_paths);
        }
        let mut distinct_sources: Vec<String> = Vec::new();
        let source_index_of_route = routes
            .iter()
            .map(|route| {
                let prefix = route.source.prefix.to_ascii_lowercase();
                match distinct_sources.iter().position(|known| *known == prefix) {
                    Some(index) => index,
                    None => {
                        distinct_sources.push(prefix);
                        distinct_sources.len() - 1
                    }
                }
            })
            .collect();
        Ok(Self {
            routes,
            distinct_sources,
            source_index_of_route,
            distinct_body_path_count: body_paths.len(),
        })
    }

    /// The compiled routes in evaluation order.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    /// Appends the routes matching `message` to `matches`, in priority order; reusing the
    /// vector between messages avoids allocating per message.
    pub fn route_into<'r>(&'r self, message: &Message, matches: &mut Vec<RouteMatch<'r>>) {
        let context = MessageContext::new(message);
        if self.distinct_body_path_count == 0 {
            self.route_with(&Evaluation::unmemoized(&context), matches);
        } else {
            let resolved = unresolved_paths();
            let evaluation =
                Evaluation::memoized(&context, &resolved, self.distinct_body_path_count);
            self.route_with(&evaluation, matches);
        }
    }

    /// Appends the matching routes; kept apart from [`Router::route_into`] so that tables
    /// without body paths do not pay for clearing the slots of resolved paths.
    fn route_with<'r>(
        &'r self,
        evaluation: &Evaluation<'_, '_>,
        matches: &mut Vec<RouteMatch<'r>>,
    ) {
        let message = evaluation.context().message();
        let mut source_matches: [Option<bool>; CACHED_SOURCE_COUNT] = [None; CACHED_SOURCE_COUNT];
        for (route, &source_index) in self.routes.iter().zip(&self.source_index_of_route) {
            let source_matches = match source_matches.get_mut(source_index) {
                Some(cached) => *cached.get_or_insert_with(|| {
                    source_prefix_matches(&self.distinct_sources[source_index], &message.source)
                }),
                None => route.source.matches(&message.source),
            };
            let selected = source_matches
                && route
                    .condition
                    .as_ref()
                    .is_none_or(|condition| condition.evaluate_with(evaluation) == Truth::True);
            if selected {
                matches.push(RouteMatch {
                    name: &route.name,
                    sink: &route.sink,
                    priority: route.priority,
                    time_to_live_secs: route.time_to_live_secs,
                });
            }
        }
    }

    /// Returns the routes matching `message`, in priority order.
    pub fn route(&self, message: &Message) -> Vec<RouteMatch<'_>> {
        let mut matches = Vec::new();
        self.route_into(message, &mut matches);
        matches
    }
}
