//! All human wording of diagnostics, kept in one place so the compiler can render them.

use crate::error::{Expectation, RouteError, RouteErrorKind};
use crate::static_type::StaticType;

/// Returns the one-line message for a diagnostic.
pub fn message(error: &RouteError) -> String {
    match &*error.kind {
        RouteErrorKind::UnrecognizedCharacter { character } => {
            format!("invalid symbol '{character}'")
        }
        RouteErrorKind::UnterminatedString => "unterminated string".to_owned(),
        RouteErrorKind::UnexpectedToken { found, expected } => {
            format!("unexpected '{found}', expected {}", expectation(*expected))
        }
        RouteErrorKind::UnexpectedEndOfInput { expected } => {
            format!(
                "unexpected end of route, expected {}",
                expectation(*expected)
            )
        }
        RouteErrorKind::UnmatchedClosingParenthesis => "unmatched closing ')'".to_owned(),
        RouteErrorKind::MissingClosingParenthesis => "missing closing ')'".to_owned(),
        RouteErrorKind::NestingTooDeep { limit } => {
            format!("expression nested deeper than {limit} levels")
        }
        RouteErrorKind::TrailingInput => "unexpected text after the end of the route".to_owned(),
        RouteErrorKind::UnknownSink { name } => format!("unknown sink '{name}'"),
        RouteErrorKind::InvalidEndpointAddress { address } => {
            format!("invalid endpoint address '{address}'")
        }
        RouteErrorKind::UnknownFunction { name, .. } => {
            format!("invalid built-in function '{name}'")
        }
        RouteErrorKind::FunctionNotAvailableForSource { name } => {
            format!("built-in function '{name}' is only available for twin change notifications")
        }
        RouteErrorKind::InvalidArguments {
            function, given, ..
        } => {
            format!(
                "invalid arguments to built-in function '{function}': {function}({})",
                type_list(given, ", ")
            )
        }
        RouteErrorKind::InvalidOperands {
            operator,
            given,
            expected,
        } => {
            let arity = if given.len() == 1 { "unary" } else { "binary" };
            format!(
                "invalid operands to {arity} operator '{operator}': have {}, expected {}",
                type_list(given, " and "),
                type_list(expected, " and ")
            )
        }
        RouteErrorKind::InvalidBodyQuery { query } => format!("unsupported $body query '{query}'"),
        RouteErrorKind::InvalidTwinChangePath { path } => {
            format!("unsupported twin_change_includes path '{path}'")
        }
        RouteErrorKind::InvalidPriority { priority } => {
            format!("route priority {priority} is outside 0-9")
        }
        RouteErrorKind::DuplicateRouteName { name } => format!("route name '{name}' is used twice"),
        RouteErrorKind::UnknownBodyField { path, field, .. } => {
            format!("the body schema has no field '{field}' (at '$body.{path}')")
        }
        RouteErrorKind::BodyPathShapeMismatch { path, found } => {
            format!(
                "'$body.{path}' is {} in the body schema and cannot be navigated this way",
                with_article(found)
            )
        }
        RouteErrorKind::MixedTypeBodyComparison {
            path,
            field_type,
            other_type,
        } => {
            format!(
                "'$body.{path}' is {} but is compared with {}",
                with_article(field_type),
                with_article(other_type)
            )
        }
        RouteErrorKind::NumberComparedWithApplicationProperty { property } => {
            format!(
                "numeric body field compared with application property '{property}', which is a string"
            )
        }
        RouteErrorKind::BodyQueryOnNonJsonSource { path } => {
            format!("'$body.{path}' can never be defined: this source's messages are not JSON")
        }
    }
}

/// Returns advice on fixing a diagnostic, when there is any.
pub fn help(error: &RouteError) -> Option<String> {
    Some(match &*error.kind {
        RouteErrorKind::UnterminatedString => "close the string with the quote it starts with".to_owned(),
        RouteErrorKind::NestingTooDeep { .. } => "split the condition or remove redundant parentheses".to_owned(),
        RouteErrorKind::TrailingInput => "a route ends with its sink; remove the extra text".to_owned(),
        RouteErrorKind::UnknownSink { .. } => {
            "use $upstream or BrokeredEndpoint(\"/modules/<module>/inputs/<input>\")".to_owned()
        }
        RouteErrorKind::InvalidEndpointAddress { .. } => {
            "the address must have the form /modules/<module>/inputs/<input>".to_owned()
        }
        RouteErrorKind::UnknownFunction { closest: Some(closest), .. } => format!("did you mean '{closest}'?"),
        RouteErrorKind::FunctionNotAvailableForSource { .. } => {
            "use it in routes FROM /twinChangeNotifications".to_owned()
        }
        RouteErrorKind::InvalidArguments { accepted, .. } => format!("accepted: {}", accepted.join(" or ")),
        RouteErrorKind::InvalidOperands { given, .. } if given.contains(&StaticType::String) => {
            "property values are strings; convert with as_number(...) for arithmetic or numeric comparison"
                .to_owned()
        }
        RouteErrorKind::InvalidBodyQuery { .. } => "body queries look like $body.field.list[0].name".to_owned(),
        RouteErrorKind::UnknownBodyField { closest: Some(closest), .. } => format!("did you mean '{closest}'?"),
        RouteErrorKind::UnknownBodyField { candidates, .. } if !candidates.is_empty() => {
            format!("known fields: {}", candidates.join(", "))
        }
        RouteErrorKind::MixedTypeBodyComparison { .. } => {
            "values of different types are never equal; compare with a value of the field's type".to_owned()
        }
        RouteErrorKind::NumberComparedWithApplicationProperty { property } => {
            format!("use as_number({property}) to compare numerically")
        }
        _ => return None,
    })
}

fn type_list(types: &[StaticType], separator: &str) -> String {
    types
        .iter()
        .map(|static_type| format!("'{}'", static_type.name()))
        .collect::<Vec<_>>()
        .join(separator)
}

fn expectation(expected: Expectation) -> &'static str {
    match expected {
        Expectation::Expression => "an expression",
        Expectation::ClosingParenthesis => "')'",
        Expectation::From => "FROM",
        Expectation::SelectStar => "'*' after SELECT",
        Expectation::SourcePath => "a source path starting with '/'",
        Expectation::PathSegment => "a path segment or '*'",
        Expectation::WhereOrInto => "WHERE or INTO",
        Expectation::Into => "INTO",
        Expectation::Sink => "a sink ($upstream or BrokeredEndpoint(...))",
        Expectation::OpeningParenthesis => "'('",
        Expectation::EndpointAddress => "a quoted endpoint address",
        Expectation::SystemPropertyInBraces => "a $property inside '{ }'",
        Expectation::ClosingBrace => "'}'",
    }
}

/// `a number`, `an object`: the indefinite article English wants before a type name.
fn with_article(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {noun}")
}
