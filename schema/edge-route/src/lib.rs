//! The IoT Edge routing language: parsing, type checking, schema checks and evaluation.
//!
//! The compiler uses [`parse_route`], [`compile_condition`] and [`check_route`] to reject routes
//! with precise spans before deployment; the on-device runtime uses [`Router`] to evaluate
//! messages with the exact semantics of the Azure IoT Edge hub (three-valued logic, static typing,
//! body queries). Everything here is pure: no I/O, no global state.

mod body_path;
mod builtins;
mod condition_parser;
pub mod conformance;
pub mod describe;
mod error;
mod evaluation;
mod json_document;
mod lexer;
mod message;
mod program;
mod route_syntax;
mod router;
mod schema_check;
mod source_path;
mod static_type;
mod string_literal;
pub mod suggest;
mod syntax;
mod type_checker;
mod value;

pub use body_path::{BodyPath, BodyPathStep};
pub use condition_parser::{MAXIMUM_EXPRESSION_DEPTH, MAXIMUM_NESTING_DEPTH, parse_condition};
pub use error::{Expectation, RouteError, RouteErrorKind, Severity};
pub use message::{MAXIMUM_QUERYABLE_BODY_BYTES, Message, MessageContext};
pub use program::CompiledCondition;
pub use route_syntax::{ParsedRoute, Sink, SinkClause, SourceClause, parse_route};
pub use router::{
    CompiledRoute, LOWEST_PRIORITY, RouteMatch, RouteTableEntry, RouteTableError, Router,
    compile_route,
};
pub use schema_check::{BodySchema, SourceSchema, check_route};
pub use source_path::{SourceKind, SourcePath};
pub use static_type::StaticType;
pub use syntax::{BinaryOperator, Expression, ExpressionKind, Literal, UnaryOperator};
pub use type_checker::compile_condition;
pub use value::{Truth, Value};
