//! Compiled conditions and their evaluation.
//!
//! Type checking resolves every overload and conversion up front, so a [`Node`] tree only says
//! what to compute: property names are lowered once, body paths are parsed once (and, inside a
//! router, resolved once per message for all routes), literals are stored ready to borrow, and
//! each comparison knows which of the hub's comparison rules applies.
//! Evaluation walks the tree with plain recursion, whose depth the parser bounds, and returns
//! values that borrow from the message, so the common cases do not allocate.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::builtins::Builtin;
use crate::evaluation::{BodyPathInterner, BodyQuery, Evaluation};
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
        path: BodyQuery,
    },
    Body(BodyQuery),
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
    TwinChangeIncludes(BodyQuery),
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
        self.evaluate_with(&Evaluation::unmemoized(context))
    }

    /// Evaluates the condition with the body paths a router has resolved for the message.
    pub(crate) fn evaluate_with(&self, evaluation: &Evaluation<'_, '_>) -> Truth {
        if self.result_is_null {
            return Truth::False;
        }
        match self.root.evaluate(evaluation) {
            Value::Bool(value) => Truth::from(value),
            _ => Truth::Undefined,
        }
    }

    /// Numbers the condition's body paths in a router's table of distinct paths.
    pub(crate) fn intern_body_paths(&mut self, interner: &mut BodyPathInterner) {
        self.root.intern_body_paths(interner);
    }
}

impl Node {
    pub(crate) fn evaluate<'c, 'e: 'c>(&'c self, context: &Evaluation<'e, '_>) -> Value<'c> {
        let message = context.context().message();
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
                    None => path.read(context),
                }
            }
            Self::Body(path) => path.read(context),
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
                let left = left.evaluate_operand(context);
                let right = right.evaluate_operand(context);
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
            Self::TwinChangeIncludes(path) => path
                .select(context)
                .map_or(Value::Undefined, |selected| Value::Bool(selected.is_some())),
        }
    }

    /// Evaluates a comparison operand, computing the usual leaves (a literal number, a body
    /// read) in place because a recursive call costs more than they do.
    #[inline(always)]
    fn evaluate_operand<'c, 'e: 'c>(&'c self, context: &Evaluation<'e, '_>) -> Value<'c> {
        match self {
            Self::Number(value) => Value::Number(*value),
            Self::Body(path) => path.read(context),
            _ => self.evaluate(context),
        }
    }

    fn intern_body_paths(&mut self, interner: &mut BodyPathInterner) {
        match self {
            Self::Number(_)
            | Self::Text(_)
            | Self::Bool(_)
            | Self::Null
            | Self::Undefined
            | Self::ApplicationProperty(_)
            | Self::SystemProperty(_)
            | Self::ApplicationOrSystemProperty { .. } => {}
            Self::ApplicationPropertyOrBody { path, .. }
            | Self::Body(path)
            | Self::TwinChangeIncludes(path) => interner.intern(path),
            Self::NullAsEmpty(operand) | Self::Negate(operand) | Self::Not(operand) => {
                operand.intern_body_paths(interner);
            }
            Self::Arithmetic { left, right, .. }
            | Self::Compare { left, right, .. }
            | Self::Logical { left, right, .. }
            | Self::Coalesce { left, right } => {
                left.intern_body_paths(interner);
                right.intern_body_paths(interner);
            }
            Self::Call { arguments, .. } => {
                for argument in arguments {
                    argument.intern_body_paths(interner);
                }
            }
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
fn evaluate_call<'c, 'e: 'c>(
    builtin: Builtin,
    arguments: &'c [Node],
    context: &Evaluation<'e, '_>,
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

/// Skips the right operand when the left one alone decides the result, which evaluation may do
/// because it has no side effects: the hub's answer is the same, only computed sooner.
fn evaluate_logical<'c, 'e: 'c>(
    operator: LogicalOperator,
    rule: LogicalRule,
    left: &'c Node,
    right: &'c Node,
    context: &Evaluation<'e, '_>,
) -> Value<'c> {
    let truth = |value: Value<'_>| match value {
        Value::Bool(value) => Some(value),
        _ => None,
    };
    let left = truth(left.evaluate(context));
    let decided = match operator {
        LogicalOperator::And => false,
        LogicalOperator::Or => true,
    };
    match rule {
        // Both operands must be booleans, so a left operand that is not one makes it undefined.
        LogicalRule::BodyValues => {
            match (left, left.and_then(|_| truth(right.evaluate(context)))) {
                (Some(left), Some(right)) => Value::Bool(match operator {
                    LogicalOperator::And => left && right,
                    LogicalOperator::Or => left || right,
                }),
                _ => Value::Undefined,
            }
        }
        LogicalRule::ThreeValued if left == Some(decided) => Value::Bool(decided),
        LogicalRule::ThreeValued => match (left, truth(right.evaluate(context))) {
            (_, Some(right)) if right == decided => Value::Bool(decided),
            (Some(_), Some(_)) => Value::Bool(!decided),
            _ => Value::Undefined,
        },
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
