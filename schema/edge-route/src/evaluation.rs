//! What conditions are evaluated against, and the body paths a route table shares.
//!
//! Routes of one table usually read the same few body paths (`$body.machine.temperature` in
//! fifty routes with different thresholds), and walking a path costs member-name comparisons at
//! every step. The router therefore numbers the distinct paths of its table when it is built and,
//! per message, resolves each path at most once into a slot of [`ResolvedPaths`], which lives on
//! the router's stack next to the message context that owns the parsed body. Conditions evaluated
//! on their own have no slots and walk their paths directly.

use std::cell::OnceCell;

use crate::body_path::{BodyPath, node_value};
use crate::json_document::JsonNode;
use crate::message::MessageContext;
use crate::value::Value;

/// How many distinct body paths a router memoizes per message without allocating; paths past
/// this many are walked on every read, which is correct, only slower.
pub(crate) const MEMOIZED_PATH_COUNT: usize = 64;

/// Per-message slots, one per distinct body path of a route table: unset until a condition reads
/// the path, then the node it selects (`None` when the body has no such node).
pub(crate) type ResolvedPaths<'c, 'm> = [OnceCell<Option<&'c JsonNode<'m>>>; MEMOIZED_PATH_COUNT];

/// Creates the unset slots for one message.
pub(crate) fn unresolved_paths<'c, 'm>() -> ResolvedPaths<'c, 'm> {
    [const { OnceCell::new() }; MEMOIZED_PATH_COUNT]
}

/// A message context together with the body paths resolved for it so far.
pub(crate) struct Evaluation<'c, 'm> {
    context: &'c MessageContext<'m>,
    resolved: &'c [OnceCell<Option<&'c JsonNode<'m>>>],
}

impl<'c, 'm> Evaluation<'c, 'm> {
    /// Evaluates without memoized paths, for conditions that are not part of a router.
    pub(crate) fn unmemoized(context: &'c MessageContext<'m>) -> Self {
        Self {
            context,
            resolved: &[],
        }
    }

    /// Evaluates with the slots of a router whose table has `path_count` distinct paths.
    pub(crate) fn memoized(
        context: &'c MessageContext<'m>,
        resolved: &'c ResolvedPaths<'c, 'm>,
        path_count: usize,
    ) -> Self {
        Self {
            context,
            resolved: &resolved[..path_count.min(MEMOIZED_PATH_COUNT)],
        }
    }

    /// The message context.
    pub(crate) fn context(&self) -> &'c MessageContext<'m> {
        self.context
    }
}

/// A body path read by a condition, numbered once a router interns it.
#[derive(Debug, Clone)]
pub(crate) struct BodyQuery {
    path: BodyPath,
    /// The path's slot in the router's [`ResolvedPaths`]; `None` outside a router.
    slot: Option<usize>,
}

impl BodyQuery {
    /// Wraps a path that no router has numbered yet.
    pub(crate) fn new(path: BodyPath) -> Self {
        Self { path, slot: None }
    }

    /// Finds the node the path selects; the outer `None` means the message has no queryable
    /// body, the inner one that the body has no such node.
    pub(crate) fn select<'c, 'm>(
        &self,
        evaluation: &Evaluation<'c, 'm>,
    ) -> Option<Option<&'c JsonNode<'m>>> {
        let document = evaluation.context.body()?;
        let resolve = || self.path.select(document);
        Some(
            match self.slot.and_then(|slot| evaluation.resolved.get(slot)) {
                Some(resolved) => *resolved.get_or_init(resolve),
                None => resolve(),
            },
        )
    }

    /// Reads the path as the hub's body query does; undefined without a queryable body.
    pub(crate) fn read<'c>(&self, evaluation: &Evaluation<'c, '_>) -> Value<'c> {
        self.select(evaluation).map_or(Value::Undefined, node_value)
    }
}

/// Numbers the distinct body paths of a route table while the router is built.
#[derive(Debug, Default)]
pub(crate) struct BodyPathInterner {
    distinct: Vec<BodyPath>,
}

impl BodyPathInterner {
    /// Gives `query` the slot of an equal path seen before, or a new slot. Paths are equal when
    /// their steps are, member names compared case-sensitively as the hub's lookups compare them.
    pub(crate) fn intern(&mut self, query: &mut BodyQuery) {
        let slot = match self.distinct.iter().position(|known| *known == query.path) {
            Some(slot) => slot,
            None => {
                self.distinct.push(query.path.clone());
                self.distinct.len() - 1
            }
        };
        query.slot = Some(slot);
    }

    /// How many distinct paths were interned.
    pub(crate) fn len(&self) -> usize {
        self.distinct.len()
    }
}
