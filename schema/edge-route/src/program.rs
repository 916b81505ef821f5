//! Compiled conditions and their evaluation.
//!
//! Type checking resolves every overload and conversion up front, so a [`Node`] tree only says
//! what to compute: property names are lowered once, body paths are parsed once, literals are
//! stored ready to borrow, and each comparison knows which of the hub's comparison rules applies.
//! Evaluation walks the tree with plain recursion, whose depth the parser bounds, and returns
//! values that borrow from the message, so the common cases do not allocate.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::body_path::BodyPath;
use crate::builtins::Builtin;
use crate::message::{Message, MessageContext};
use crate::value::{Truth, Value, compare_ordinal};

/// A node of a compiled condition.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Number(f64),
    Text(Box<str>),
    Bool(bool),
    Null,
    Undefined,
    ApplicationProperty(Box<str>),
    SystemProperty(Box<str>),
    /// `$name`: the application property `$name`, else the system property `name`.
    ApplicationOrSystemProperty {
        application: Box<str>,
        system: Box<str>,
    },
    /// `$body.path`: the application property `$body.path` when present, else the body query.
    ApplicationPropertyOrBody {
        application: Box<str>,
        path: BodyPath,
    },
    Body(BodyPath),
    /// A string-typed value passed where a null string must read as empty (`concat`, `||`).
    NullAsEmpty(Box<Node>),
    Negate(Box<Node>),
    Not(Box<Node>),
    Arithmetic {
        operator: ArithmeticOperator,
        left: Box<Node>,
        right: Box<Node>,
    },
    Compare {
        operator: ComparisonOperator,
        rule: ComparisonRule,
        left: Box<Node>,
        right: Box<Node>,
    },
    Logical {
        operator: LogicalOperator,
        rule: LogicalRule,
        left: Box<Node>,
        right: Box<Node>,
    },
    Coalesce {
        left: Box<Node>,
        right: Box<Node>,
    },
    Call {
        builtin: Builtin,
        arguments: Box<[Node]>,
    },
    TwinChangeIncludes(BodyPath),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithmeticOperator {
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ComparisonOperator {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

/// Which of the hub's typed comparison functions applies, decided from the operands' types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ComparisonRule {
    /// Two strings: undefined if either is null or missing, else ordinal comparison.
    Strings,
    /// Two numbers: undefined if either is `NaN`.
    Numbers,
    /// Two booleans: undefined if either is undefined; `false < true`.
    Bools,
    /// Two nulls: equal.
    Nulls,
    /// Two undefined values: undefined.
    Undefined,
    /// A body value on either side: values of different types order by type.
    BodyValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogicalOperator {
    And,
    Or,
}

/// How `AND`/`OR` treat their operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogicalRule {
    /// Booleans with undefined: `false AND undefined` is false, `true OR undefined` is true.
    ThreeValued,
    /// A body value is involved: both sides must be booleans, otherwise undefined.
    BodyValues,
}

/// A condition compiled for evaluation against messages.
#[derive(Debug, Clone)]
pub struct CompiledCondition {
    pub(crate) root: Node,
    pub(crate) result_is_null: bool,
}

impl CompiledCondition {
    /// Evaluates the condition against one message.
    pub fn evaluate(&self, message: &Message) -> Truth {
        self.evaluate_in(&MessageContext::new(message))
    }

    /// Evaluates the condition in a message context shared with other routes, so the body is
    /// parsed at most once.
    pub fn evaluate_in(&self, context: &MessageContext<'_>) -> Truth {
        if self.result_is_null {
            return Truth::False;
        }
        match self.root.evaluate(context) {
            Value::Bool(value) => Truth::from(value),
            _ => Truth::Undefined,
        }
    }
}

impl Node {
    pub(crate) fn evaluate<'c>(&'c self, context: &'c MessageContext<'_>) -> Value<'c> {
        let message = context.message();
        match self {
            Self::Number(value) => Value::Number(*value),
            Self::Text(text) => Value::Text(Cow::Borrowed(text)),
            Self::Bool(value) => Value::Bool(*value),
            Self::Null => Value::Null,
            Self::Undefined => Value::Undefined,
            Self::ApplicationProperty(name) => property_value(message.application_property(name)),
            Self::SystemProperty(name) => property_value(message.system_property(name)),
            Self::ApplicationOrSystemProperty {
                application,
                system,
            } => match message.application_property(application) {
                Some(value) => property_value(Some(value)),
                None => property_value(message.system_property(system)),
            },
            Self::ApplicationPropertyOrBody { application, path } => {
                match message.application_property(application) {
                    Some(value) => property_value(Some(value)),
                    None => read_body(context, path),
                }
            }
            Self::Body(path) => read_body(context, path),
            Self::NullAsEmpty(inner) => match inner.evaluate(context) {
                Value::Null => Value::Text(Cow::Borrowed("")),
                value => value,
            },
            Self::Negate(operand) => match operand.evaluate(context) {
                Value::Number(value) => Value::Number(-value),
                _ => Value::Undefined,
            },
            Self::Not(operand) => match operand.evaluate(context) {
                Value::Bool(value) => Value::Bool(!value),
                _ => Value::Undefined,
            },
            Self::Arithmetic {
                operator,
                left,
                right,
            } => match (left.evaluate(context), right.evaluate(context)) {
                (Value::Number(left), Value::Number(right)) => {
                    Value::Number(operator.apply(left, right))
                }
                _ => Value::Undefined,
            },
            Self::Compare {
                operator,
                rule,
                left,
                right,
            } => {
                let left = left.evaluate(context);
                let right = right.evaluate(context);
                rule.compare(&left, &right)
                    .map_or(Value::Undefined, |ordering| {
                        Value::Bool(operator.holds(ordering))
                    })
            }
            Self::Logical {
                operator,
                rule,
                left,
                right,
            } => evaluate_logical(*operator, *rule, left, right, context),
            Self::Coalesce { left, right } => {
                let value = left.evaluate(context);
                if value.is_defined() {
                    value
                } else {
                    right.evaluate(context)
                }
            }
            Self::Call { builtin, arguments } => evaluate_call(*builtin, arguments, context),
            Self::TwinChangeIncludes(path) => match context.body() {
                None => Value::Undefined,
                Some(document) => Value::Bool(path.select(document).is_some()),
            },
        }
    }
}

/// Argument storage that stays on the stack for the common arities.
struct ArgumentValues<'a> {
    inline: [Value<'a>; 3],
    length: usize,
    spilled: Vec<Value<'a>>,
}

impl<'a> ArgumentValues<'a> {
    fn new() -> Self {
        Self {
            inline: [Value::Undefined, Value::Undefined, Value::Undefined],
            length: 0,
            spilled: Vec::new(),
        }
    }

    fn push(&mut self, value: Value<'a>) {
        if self.length < self.inline.len() && self.spilled.is_empty() {
            self.inline[self.length] = value;
            self.length += 1;
        } else {
            if self.spilled.is_empty() {
                self.spilled
                    .extend(self.inline[..self.length].iter_mut().map(std::mem::take));
            }
            self.spilled.push(value);
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Value<'a>] {
        if self.spilled.is_empty() {
            &mut self.inline[..self.length]
        } else {
            &mut self.spilled
        }
    }
}

/// Kept out of [`Node::evaluate`] so that the argument buffer does not enlarge the stack frame of
/// every node evaluation, which dominates the cost of simple conditions.
#[inline(never)]
fn evaluate_call<'c>(
    builtin: Builtin,
    arguments: &'c [Node],
    context: &'c MessageContext<'_>,
) -> Value<'c> {
    let mut values: ArgumentValues<'c> = ArgumentValues::new();
    for argument in arguments {
        values.push(argument.evaluate(context));
    }
    builtin.apply(values.as_mut_slice())
}

fn property_value(found: Option<Option<&str>>) -> Value<'_> {
    match found {
        None => Value::Undefined,
        Some(None) => Value::Null,
        Some(Some(text)) => Value::Text(Cow::Borrowed(text)),
    }
}

fn read_body<'c>(context: &'c MessageContext<'_>, path: &BodyPath) -> Value<'c> {
    context
        .body()
        .map_or(Value::Undefined, |document| path.read(document))
}

fn evaluate_logical<'c>(
    operator: LogicalOperator,
    rule: LogicalRule,
    left: &'c Node,
    right: &'c Node,
    context: &'c MessageContext<'_>,
) -> Value<'c> {
    let left = left.evaluate(context);
    let right = right.evaluate(context);
    match rule {
        LogicalRule::BodyValues => match (left, right) {
            (Value::Bool(left), Value::Bool(right)) => Value::Bool(match operator {
                LogicalOperator::And => left && right,
                LogicalOperator::Or => left || right,
            }),
            _ => Value::Undefined,
        },
        LogicalRule::ThreeValued => {
            let truth = |value: &Value<'_>| match value {
                Value::Bool(value) => Some(*value),
                _ => None,
            };
            let (left, right) = (truth(&left), truth(&right));
            let decided = match operator {
                LogicalOperator::And => false,
                LogicalOperator::Or => true,
            };
            match (left, right) {
                (Some(left), _) if left == decided => Value::Bool(decided),
                (_, Some(right)) if right == decided => Value::Bool(decided),
                (Some(_), Some(_)) => Value::Bool(!decided),
                _ => Value::Undefined,
            }
        }
    }
}

impl ArithmeticOperator {
    fn apply(self, left: f64, right: f64) -> f64 {
        match self {
            Self::Add => left + right,
            Self::Subtract => left - right,
            Self::Multiply => left * right,
            Self::Divide => left / right,
            Self::Remainder => left % right,
        }
    }
}

impl ComparisonOperator {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Equal => ordering == Ordering::Equal,
            Self::NotEqual => ordering != Ordering::Equal,
            Self::Less => ordering == Ordering::Less,
            Self::LessOrEqual => ordering != Ordering::Greater,
            Self::Greater => ordering == Ordering::Greater,
            Self::GreaterOrEqual => ordering != Ordering::Less,
        }
    }
}

impl ComparisonRule {
    fn compare(self, left: &Value<'_>, right: &Value<'_>) -> Option<Ordering> {
        match self {
            Self::Strings => Some(compare_ordinal(left.as_text()?, right.as_text()?)),
            Self::Numbers => left.as_number()?.partial_cmp(&right.as_number()?),
            Self::Bools => match (left, right) {
                (Value::Bool(left), Value::Bool(right)) => Some(left.cmp(right)),
                _ => None,
            },
            Self::Nulls => Some(Ordering::Equal),
            Self::Undefined => None,
            Self::BodyValues => left.compare_as_body_values(right),
        }
    }
}
