//! Static type checking of conditions and their lowering into evaluable [`Node`]s.
//!
//! The rules are the hub's: binary operators require both operands to have the same type (body
//! values match any concrete type), arithmetic needs numbers, `||` needs strings, `AND`/`OR` take
//! booleans, nulls and undefined, and built-ins must match one of their signatures. After an error
//! the offending expression is given the body-value type, which every operator accepts, so one
//! mistake produces one diagnostic instead of a cascade.

use std::ops::Range;

use crate::body_path::BodyPath;
use crate::builtins::{BUILTINS, Builtin};
use crate::error::{RouteError, RouteErrorKind};
use crate::evaluation::BodyQuery;
use crate::message::lower_property_name;
use crate::program::{
    ArithmeticOperator, ComparisonOperator, ComparisonRule, CompiledCondition, LogicalOperator,
    LogicalRule, Node,
};
use crate::source_path::SourceKind;
use crate::static_type::StaticType;
use crate::suggest::closest_name;
use crate::syntax::{BinaryOperator, Expression, ExpressionKind, Literal, UnaryOperator};

/// Type-checks a condition for a route with the given source and compiles it.
pub fn compile_condition(
    condition: &Expression,
    source: &SourceKind,
) -> Result<CompiledCondition, Vec<RouteError>> {
    let mut checker = TypeChecker {
        source,
        errors: Vec::new(),
    };
    let (root, root_type) = checker.lower(condition);
    if checker.errors.is_empty() {
        Ok(CompiledCondition {
            root,
            result_is_null: root_type == StaticType::Null,
        })
    } else {
        Err(checker.errors)
    }
}

struct TypeChecker<'s> {
    source: &'s SourceKind,
    errors: Vec<RouteError>,
}

/// The text after `$` or `{$` that makes a property a body query, in any case.
const BODY_PREFIX: &str = "body.";

fn body_query_path(name: &str) -> Option<&str> {
    let prefix = name.get(..BODY_PREFIX.len())?;
    prefix
        .eq_ignore_ascii_case(BODY_PREFIX)
        .then(|| &name[BODY_PREFIX.len()..])
}

impl TypeChecker<'_> {
    /// Records an error and returns the poison result used to avoid cascading diagnostics.
    fn fail(&mut self, error: RouteError) -> (Node, StaticType) {
        self.errors.push(error);
        (Node::Undefined, StaticType::Dynamic)
    }

    fn lower(&mut self, expression: &Expression) -> (Node, StaticType) {
        match &expression.kind {
            ExpressionKind::Literal(literal) => lower_literal(literal),
            ExpressionKind::ApplicationProperty { name } => (
                Node::ApplicationProperty(lower_property_name(name)),
                StaticType::String,
            ),
            ExpressionKind::DollarProperty { name } => {
                self.lower_dollar_property(name, &expression.span)
            }
            ExpressionKind::EscapedSystemProperty { name, name_span } => {
                self.lower_escaped_system_property(name, name_span)
            }
            ExpressionKind::FunctionCall {
                name,
                name_span,
                arguments,
                argument_text,
            } => self.lower_call(name, name_span, arguments, argument_text, &expression.span),
            ExpressionKind::Unary {
                operator,
                operator_span,
                operand,
            } => self.lower_unary(*operator, operator_span, operand),
            ExpressionKind::Binary {
                operator,
                operator_span,
                left,
                right,
            } => self.lower_binary(*operator, operator_span, left, right),
        }
    }

    fn body_path(&mut self, path_text: &str, span: &Range<usize>) -> Option<BodyPath> {
        let path = BodyPath::parse(path_text);
        if path.is_none() {
            self.errors.push(RouteError::error(
                RouteErrorKind::InvalidBodyQuery {
                    query: path_text.to_owned(),
                },
                span.clone(),
            ));
        }
        path
    }

    fn lower_dollar_property(&mut self, name: &str, span: &Range<usize>) -> (Node, StaticType) {
        let has_brackets = name.contains(['[', ']']);
        if let Some(path_text) = body_query_path(name) {
            let Some(path) = self.body_path(path_text, span) else {
                return (Node::Undefined, StaticType::Dynamic);
            };
            if has_brackets {
                return (Node::Body(BodyQuery::new(path)), StaticType::Dynamic);
            }
            return (
                Node::ApplicationPropertyOrBody {
                    application: lower_property_name(&format!("${name}")),
                    path: BodyQuery::new(path),
                },
                StaticType::Dynamic,
            );
        }
        if has_brackets {
            return (Node::Undefined, StaticType::Undefined);
        }
        (
            Node::ApplicationOrSystemProperty {
                application: lower_property_name(&format!("${name}")),
                system: lower_property_name(name),
            },
            StaticType::String,
        )
    }

    fn lower_escaped_system_property(
        &mut self,
        name: &str,
        span: &Range<usize>,
    ) -> (Node, StaticType) {
        if let Some(path_text) = body_query_path(name) {
            return match self.body_path(path_text, span) {
                Some(path) => (Node::Body(BodyQuery::new(path)), StaticType::Dynamic),
                None => (Node::Undefined, StaticType::Dynamic),
            };
        }
        if name.contains(['[', ']']) {
            return (Node::Undefined, StaticType::Undefined);
        }
        (
            Node::SystemProperty(lower_property_name(name)),
            StaticType::String,
        )
    }

    fn lower_unary(
        &mut self,
        operator: UnaryOperator,
        operator_span: &Range<usize>,
        operand: &Expression,
    ) -> (Node, StaticType) {
        let (node, operand_type) = self.lower(operand);
        match (operator, operand_type) {
            (UnaryOperator::Negate, StaticType::Number | StaticType::Dynamic) => {
                (Node::Negate(Box::new(node)), operand_type)
            }
            (UnaryOperator::Not, StaticType::Null) => (Node::Bool(true), StaticType::Bool),
            (UnaryOperator::Not, StaticType::Bool | StaticType::Dynamic) => {
                (Node::Not(Box::new(node)), StaticType::Bool)
            }
            (UnaryOperator::Negate, _) | (UnaryOperator::Not, _) => {
                let expected = match operator {
                    UnaryOperator::Negate => StaticType::Number,
                    UnaryOperator::Not => StaticType::Bool,
                };
                self.operand_error(
                    operator.symbol(),
                    operator_span,
                    operand,
                    vec![operand_type],
                    vec![expected],
                )
            }
        }
    }

    fn operand_error(
        &mut self,
        operator: &'static str,
        operator_span: &Range<usize>,
        offending: &Expression,
        given: Vec<StaticType>,
        expected: Vec<StaticType>,
    ) -> (Node, StaticType) {
        self.fail(
            RouteError::error(
                RouteErrorKind::InvalidOperands {
                    operator,
                    given,
                    expected,
                },
                operator_span.clone(),
            )
            .with_secondary_span(offending.span.clone()),
        )
    }

    fn lower_binary(
        &mut self,
        operator: BinaryOperator,
        operator_span: &Range<usize>,
        left: &Expression,
        right: &Expression,
    ) -> (Node, StaticType) {
        let (left_node, left_type) = self.lower(left);
        let (right_node, right_type) = self.lower(right);
        let either_dynamic = left_type == StaticType::Dynamic || right_type == StaticType::Dynamic;
        let given = vec![left_type, right_type];
        let (left_box, right_box) = (Box::new(left_node), Box::new(right_node));
        match operator {
            BinaryOperator::Add
            | BinaryOperator::Subtract
            | BinaryOperator::Multiply
            | BinaryOperator::Divide
            | BinaryOperator::Remainder => {
                if let Some(offending) =
                    operand_not_of_type(StaticType::Number, (left, left_type), (right, right_type))
                {
                    return self.operand_error(
                        operator.symbol(),
                        operator_span,
                        offending,
                        given,
                        vec![StaticType::Number, StaticType::Number],
                    );
                }
                let result = if either_dynamic {
                    StaticType::Dynamic
                } else {
                    StaticType::Number
                };
                (
                    Node::Arithmetic {
                        operator: arithmetic_operator(operator),
                        left: left_box,
                        right: right_box,
                    },
                    result,
                )
            }
            BinaryOperator::Concatenate => {
                if let Some(offending) =
                    operand_not_of_type(StaticType::String, (left, left_type), (right, right_type))
                {
                    return self.operand_error(
                        operator.symbol(),
                        operator_span,
                        offending,
                        given,
                        vec![StaticType::String, StaticType::String],
                    );
                }
                let arguments = [(*left_box, left_type), (*right_box, right_type)]
                    .into_iter()
                    .map(|(node, node_type)| null_as_empty(node, node_type))
                    .collect();
                (
                    Node::Call {
                        builtin: Builtin::Concat,
                        arguments,
                    },
                    StaticType::String,
                )
            }
            BinaryOperator::Coalesce => {
                if !right_type.matches(left_type) {
                    return self.operand_error(
                        operator.symbol(),
                        operator_span,
                        right,
                        given,
                        vec![left_type, left_type],
                    );
                }
                let result = if either_dynamic {
                    StaticType::Dynamic
                } else {
                    left_type
                };
                (
                    Node::Coalesce {
                        left: left_box,
                        right: right_box,
                    },
                    result,
                )
            }
            BinaryOperator::And | BinaryOperator::Or => self.lower_logical(
                operator,
                operator_span,
                (left, left_box, left_type),
                (right, right_box, right_type),
            ),
            comparison => {
                if !right_type.matches(left_type) {
                    return self.operand_error(
                        operator.symbol(),
                        operator_span,
                        right,
                        given,
                        vec![left_type, left_type],
                    );
                }
                let rule = if either_dynamic {
                    ComparisonRule::BodyValues
                } else {
                    match left_type {
                        StaticType::String => ComparisonRule::Strings,
                        StaticType::Number => ComparisonRule::Numbers,
                        StaticType::Bool => ComparisonRule::Bools,
                        StaticType::Null => ComparisonRule::Nulls,
                        StaticType::Undefined | StaticType::Dynamic => ComparisonRule::Undefined,
                    }
                };
                (
                    Node::Compare {
                        operator: comparison_operator(comparison),
                        rule,
                        left: left_box,
                        right: right_box,
                    },
                    StaticType::Bool,
                )
            }
        }
    }

    fn lower_logical(
        &mut self,
        operator: BinaryOperator,
        operator_span: &Range<usize>,
        (left, left_node, left_type): (&Expression, Box<Node>, StaticType),
        (right, right_node, right_type): (&Expression, Box<Node>, StaticType),
    ) -> (Node, StaticType) {
        let logical_operand = |operand_type: StaticType| {
            matches!(
                operand_type,
                StaticType::Null | StaticType::Bool | StaticType::Undefined | StaticType::Dynamic
            )
        };
        // The hub accepts any right operand when the left one is a body value.
        let left_valid = logical_operand(left_type);
        let right_valid = logical_operand(right_type) || left_type == StaticType::Dynamic;
        if !left_valid || !right_valid {
            let offending = if left_valid { right } else { left };
            return self.operand_error(
                operator.symbol(),
                operator_span,
                offending,
                vec![left_type, right_type],
                vec![StaticType::Bool, StaticType::Bool],
            );
        }
        let logical = if operator == BinaryOperator::And {
            LogicalOperator::And
        } else {
            LogicalOperator::Or
        };
        if left_type == StaticType::Dynamic || right_type == StaticType::Dynamic {
            return (
                Node::Logical {
                    operator: logical,
                    rule: LogicalRule::BodyValues,
                    left: left_node,
                    right: right_node,
                },
                StaticType::Bool,
            );
        }
        let (left_null, right_null) = (
            left_type == StaticType::Null,
            right_type == StaticType::Null,
        );
        match logical {
            LogicalOperator::And if left_null || right_null => (Node::Null, StaticType::Null),
            LogicalOperator::Or if left_null && right_null => (Node::Null, StaticType::Null),
            LogicalOperator::Or if left_null => (*right_node, StaticType::Bool),
            LogicalOperator::Or if right_null => (*left_node, StaticType::Bool),
            _ => (
                Node::Logical {
                    operator: logical,
                    rule: LogicalRule::ThreeValued,
                    left: left_node,
                    right: right_node,
                },
                StaticType::Bool,
            ),
        }
    }

    fn lower_call(
        &mut self,
        name: &str,
        name_span: &Range<usize>,
        arguments: &[Expression],
        argument_text: &str,
        call_span: &Range<usize>,
    ) -> (Node, StaticType) {
        let Some(builtin) = Builtin::lookup(name) else {
            let closest =
                closest_name(name, BUILTINS.iter().map(|(builtin_name, _)| *builtin_name));
            return self.fail(RouteError::error(
                RouteErrorKind::UnknownFunction {
                    name: name.to_owned(),
                    closest,
                },
                name_span.clone(),
            ));
        };
        if builtin == Builtin::TwinChangeIncludes {
            return self.lower_twin_change_includes(name, name_span, argument_text, call_span);
        }
        let mut nodes = Vec::with_capacity(arguments.len());
        let mut types = Vec::with_capacity(arguments.len());
        for argument in arguments {
            let (node, node_type) = self.lower(argument);
            nodes.push(node);
            types.push(node_type);
        }
        let Some(signature) = builtin.resolve(&types) else {
            return self.fail(
                RouteError::error(
                    RouteErrorKind::InvalidArguments {
                        function: name.to_owned(),
                        given: types,
                        accepted: builtin.describe_signatures(&name.to_lowercase()),
                    },
                    name_span.clone(),
                )
                .with_secondary_span(call_span.clone()),
            );
        };
        let arguments = if builtin == Builtin::Concat {
            nodes
                .into_iter()
                .zip(types)
                .map(|(node, node_type)| null_as_empty(node, node_type))
                .collect()
        } else {
            nodes.into_boxed_slice()
        };
        (Node::Call { builtin, arguments }, signature.result)
    }

    fn lower_twin_change_includes(
        &mut self,
        name: &str,
        name_span: &Range<usize>,
        argument_text: &str,
        call_span: &Range<usize>,
    ) -> (Node, StaticType) {
        if *self.source != SourceKind::TwinChangeNotifications {
            return self.fail(RouteError::error(
                RouteErrorKind::FunctionNotAvailableForSource {
                    name: name.to_owned(),
                },
                name_span.clone(),
            ));
        }
        match BodyPath::parse(argument_text) {
            Some(path) => (
                Node::TwinChangeIncludes(BodyQuery::new(path)),
                StaticType::Bool,
            ),
            None => self.fail(RouteError::error(
                RouteErrorKind::InvalidTwinChangePath {
                    path: argument_text.to_owned(),
                },
                call_span.clone(),
            )),
        }
    }
}

fn lower_literal(literal: &Literal) -> (Node, StaticType) {
    match literal {
        Literal::Number(value) => (Node::Number(*value), StaticType::Number),
        Literal::String(text) => (Node::Text(text.as_str().into()), StaticType::String),
        Literal::Bool(value) => (Node::Bool(*value), StaticType::Bool),
        Literal::Null => (Node::Null, StaticType::Null),
        Literal::Undefined => (Node::Undefined, StaticType::Undefined),
    }
}

/// String-typed arguments of concatenation read a null property as the empty string.
fn null_as_empty(node: Node, node_type: StaticType) -> Node {
    if node_type == StaticType::String {
        Node::NullAsEmpty(Box::new(node))
    } else {
        node
    }
}

fn arithmetic_operator(operator: BinaryOperator) -> ArithmeticOperator {
    match operator {
        BinaryOperator::Add => ArithmeticOperator::Add,
        BinaryOperator::Subtract => ArithmeticOperator::Subtract,
        BinaryOperator::Multiply => ArithmeticOperator::Multiply,
        BinaryOperator::Divide => ArithmeticOperator::Divide,
        _ => ArithmeticOperator::Remainder,
    }
}

fn comparison_operator(operator: BinaryOperator) -> ComparisonOperator {
    match operator {
        BinaryOperator::Equal => ComparisonOperator::Equal,
        BinaryOperator::NotEqual => ComparisonOperator::NotEqual,
        BinaryOperator::Less => ComparisonOperator::Less,
        BinaryOperator::LessOrEqual => ComparisonOperator::LessOrEqual,
        BinaryOperator::Greater => ComparisonOperator::Greater,
        _ => ComparisonOperator::GreaterOrEqual,
    }
}

/// The first of two operands whose type does not match `expected`, which an error then points at.
fn operand_not_of_type<'e>(
    expected: StaticType,
    (left, left_type): (&'e Expression, StaticType),
    (right, right_type): (&'e Expression, StaticType),
) -> Option<&'e Expression> {
    if !left_type.matches(expected) {
        Some(left)
    } else if !right_type.matches(expected) {
        Some(right)
    } else {
        None
    }
}
