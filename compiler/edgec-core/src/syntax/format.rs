//! The canonical formatter behind `edgec fmt`.
//!
//! There is one canonical layout and no options: the output is a function of the syntax tree and
//! its comments, plus blank lines between entries, which are the one piece of source layout that
//! is kept. Formatting is idempotent and never loses, duplicates or rewrites a comment. It must
//! only be called on a tree without syntax errors.
//!
//! # Rules
//!
//! - **Indentation.** Two spaces per nesting level.
//! - **Entries.** One entry per line inside a block, printed as `key label: type = value {`: one
//!   space between key and label, `: ` before the type and ` = ` before the value. An entry with
//!   a block always prints it over several lines (`key label {`, its entries one level deeper,
//!   `}`); an empty block without comments prints as `{}`.
//! - **Blank lines.** Two consecutive top-level entries are separated by exactly one blank line
//!   when either of them has a block. Elsewhere, between two consecutive lines that hold entries,
//!   list elements or comments of the same block or list, any run of blank lines in the source
//!   becomes exactly one blank line, and none stays none. Blank lines after an opening bracket,
//!   before a closing bracket, and at the start or end of the file are removed.
//! - **Lists, object values and object types** print inline (`[1, 2]`, `{ a = 1, b = 2 }`, `{}`)
//!   when they contain no comment, no entry with a block and no literal spanning several lines,
//!   and when the text from their start column to their closing bracket, plus the `,` or ` {` that
//!   immediately follows it, fits in 100 columns. Otherwise they print one element per line,
//!   list elements followed by `,` and object entries without separators. The decision depends
//!   only on the tree and the comments, never on the source layout.
//! - **Other constructs** print on one line with canonical separators: `f(a, b)`, `"a" | "b"`,
//!   `int(1..10, step = 2)`, `[T]` and `T?`. Only a list or object nested inside them can spread
//!   them over several lines.
//! - **Literals and names** print exactly as written: the formatter never rewrites a string,
//!   number, size, duration, range or quoted key.
//! - **Comments.** A comment that follows an entry or list element on the same source line stays
//!   after it, separated by one space (after the `,` of a list element). Any other comment
//!   between entries or elements prints on its own line at their indentation, before the entry
//!   that follows it, or before the closing bracket when none follows. A comment anywhere else
//!   (inside an entry, such as between a key and its `=`, or inside a call, union, type or
//!   refinement) moves to its own line just before the innermost entry or list element, printed
//!   one per line, that contains it. Comments print verbatim, except that trailing whitespace is
//!   removed from `//` comments.
//! - **Whitespace.** No line ends in whitespace, except inside multi-line raw strings and block
//!   comments, which print verbatim. The output ends with exactly one newline, or is empty when
//!   the file has neither entries nor comments.

use super::ast::*;
use crate::span::Span;

/// The column limit for inline lists and objects.
const MAXIMUM_WIDTH: usize = 100;

/// One level of indentation.
const INDENT: &str = "  ";

/// Formats a file that parsed without errors.
pub fn format(source: &str, tree: &SyntaxTree) -> String {
    let mut comments: Vec<Span> = tree.comments.iter().map(|comment| comment.span).collect();
    comments.sort();
    let mut formatter = Formatter {
        source,
        emitted: vec![false; comments.len()],
        comments,
    };
    let entries: Vec<Item<'_>> = tree.entries.iter().map(Item::Entry).collect();
    let whole_file = Span::new(0, source.len());
    formatter.lines(&entries, whole_file, 0, true)
}

/// Something printed on its own line inside a block or multi-line list.
#[derive(Clone, Copy)]
enum Item<'t> {
    Entry(&'t Entry),
    Element(&'t Value),
}

impl Item<'_> {
    fn span(self) -> Span {
        match self {
            Item::Entry(entry) => entry.span,
            Item::Element(value) => value.span,
        }
    }

    fn has_block(self) -> bool {
        matches!(self, Item::Entry(entry) if entry.block.is_some())
    }

    /// What follows the item on its line, before any trailing comment.
    fn separator(self) -> &'static str {
        match self {
            Item::Entry(_) => "",
            Item::Element(_) => ",",
        }
    }
}

/// The signature shared by the renderers that [`Formatter::join`] strings together: the node, its
/// indentation level, its start column and the width of what follows it on its line.
type Render<'s, T> = fn(&mut Formatter<'s>, &T, usize, usize, usize) -> String;

struct Formatter<'s> {
    source: &'s str,
    /// Comment spans, sorted by start.
    comments: Vec<Span>,
    /// Which comments have been printed, so that each is printed exactly once.
    emitted: Vec<bool>,
}

impl<'s> Formatter<'s> {
    // Layout of items, one per line, and of the comments around them.

    /// Prints `items` one per line at `indent`, with the comments inside `within` that belong to
    /// them, and the comments after the last item. `top_level` separates entries with blocks by a
    /// blank line.
    fn lines(
        &mut self,
        items: &[Item<'_>],
        within: Span,
        indent: usize,
        top_level: bool,
    ) -> String {
        let mut output = String::new();
        let mut previous_end = None;
        let mut cursor = within.start;
        for (index, &item) in items.iter().enumerate() {
            let span = item.span();
            let mut force_blank =
                top_level && index > 0 && (items[index - 1].has_block() || item.has_block());
            for comment in self.take(cursor, span.start) {
                let blank = force_blank || self.blank_between(previous_end, comment.start);
                self.push_line(&mut output, blank, indent, self.comment_text(comment));
                force_blank = false;
                previous_end = Some(comment.end);
            }
            let text = self.item(item, indent);
            let blank = force_blank || self.blank_between(previous_end, span.start);
            let mut first = true;
            for stray in self.take(span.start, span.end) {
                self.push_line(
                    &mut output,
                    blank && first,
                    indent,
                    self.comment_text(stray),
                );
                first = false;
            }
            let limit = items
                .get(index + 1)
                .map_or(within.end, |next| next.span().start);
            let (trailing, end) = self.trailing_comments(span.end, limit);
            let line = format!("{text}{}{trailing}", item.separator());
            self.push_line(&mut output, blank && first, indent, &line);
            previous_end = Some(end);
            cursor = end;
        }
        for comment in self.take(cursor, within.end) {
            let blank = self.blank_between(previous_end, comment.start);
            self.push_line(&mut output, blank, indent, self.comment_text(comment));
            previous_end = Some(comment.end);
        }
        output
    }

    /// Appends `text` as a line at `indent`, after a blank line when `blank`.
    fn push_line(&self, output: &mut String, blank: bool, indent: usize, text: &str) {
        if blank {
            output.push('\n');
        }
        output.push_str(&INDENT.repeat(indent));
        output.push_str(text);
        output.push('\n');
    }

    /// Whether the source between `previous_end` and `start` holds a blank line.
    fn blank_between(&self, previous_end: Option<u32>, start: u32) -> bool {
        previous_end.is_some_and(|end| {
            self.source[end as usize..start as usize]
                .matches('\n')
                .count()
                >= 2
        })
    }

    /// Takes the comments that follow `end` on its source line, before `limit`. Returns them as
    /// text to append (each after one space) and the source offset where they end.
    fn trailing_comments(&mut self, mut end: u32, limit: u32) -> (String, u32) {
        let mut text = String::new();
        let first = self.comments.partition_point(|comment| comment.start < end);
        for index in first..self.comments.len() {
            let comment = self.comments[index];
            let same_line = !self.source[end as usize..comment.start as usize].contains('\n');
            if comment.start >= limit || !same_line {
                break;
            }
            self.emitted[index] = true;
            text.push(' ');
            text.push_str(self.comment_text(comment));
            end = comment.end;
        }
        (text, end)
    }

    /// Takes the comments not yet printed that start inside `start..end`, in source order.
    fn take(&mut self, start: u32, end: u32) -> Vec<Span> {
        let first = self
            .comments
            .partition_point(|comment| comment.start < start);
        let mut taken = Vec::new();
        for index in first..self.comments.len() {
            let comment = self.comments[index];
            if comment.start >= end {
                break;
            }
            if !self.emitted[index] {
                self.emitted[index] = true;
                taken.push(comment);
            }
        }
        taken
    }

    /// Whether any comment starts inside `span`.
    fn has_comment(&self, span: Span) -> bool {
        let first = self
            .comments
            .partition_point(|comment| comment.start < span.start);
        self.comments
            .get(first)
            .is_some_and(|comment| comment.start < span.end)
    }

    fn comment_text(&self, comment: Span) -> &str {
        let text = &self.source[comment.range()];
        if text.starts_with("//") {
            text.trim_end()
        } else {
            text
        }
    }

    fn slice(&self, span: Span) -> &str {
        &self.source[span.range()]
    }

    // Items, entries and blocks.

    fn item(&mut self, item: Item<'_>, indent: usize) -> String {
        let column = indent * INDENT.len();
        match item {
            Item::Entry(entry) => self.entry(entry, indent),
            Item::Element(value) => self.value(value, indent, column, 1),
        }
    }

    /// `key label: type = value { … }` on its own line at `indent`.
    fn entry(&mut self, entry: &Entry, indent: usize) -> String {
        let start_column = indent * INDENT.len();
        let mut text = self.head(entry);
        if let Some(type_expression) = &entry.type_annotation {
            text.push_str(": ");
            let column = end_column(&text, start_column);
            let rendered = self.type_expression(type_expression, indent, column, 0);
            text.push_str(&rendered);
        }
        if let Some(value) = &entry.value {
            text.push_str(" = ");
            let column = end_column(&text, start_column);
            let suffix = if entry.block.is_some() { 2 } else { 0 };
            let rendered = self.value(value, indent, column, suffix);
            text.push_str(&rendered);
        }
        if let Some(block) = &entry.block {
            text.push(' ');
            let rendered = self.block(block, indent);
            text.push_str(&rendered);
        }
        text
    }

    /// The key and label of an entry, as written.
    fn head(&self, entry: &Entry) -> String {
        let key = self.slice(entry.key.span);
        match &entry.label {
            Some(label) => format!("{key} {}", self.slice(label.span)),
            None => key.to_owned(),
        }
    }

    /// An entry's block, always multi-line unless empty.
    fn block(&mut self, block: &Block, indent: usize) -> String {
        if block.entries.is_empty() && !self.has_comment(block.span) {
            return "{}".to_owned();
        }
        self.bracketed(block, indent)
    }

    /// `{`, the entries one per line one level deeper, `}`.
    fn bracketed(&mut self, block: &Block, indent: usize) -> String {
        let items: Vec<Item<'_>> = block.entries.iter().map(Item::Entry).collect();
        self.multi_line('{', '}', &items, block.span, indent)
    }

    /// `open`, the items one per line one level deeper, `close` at `indent`.
    fn multi_line(
        &mut self,
        open: char,
        close: char,
        items: &[Item<'_>],
        span: Span,
        indent: usize,
    ) -> String {
        let inside = Span::new(span.start as usize + 1, span.end as usize - 1);
        let body = self.lines(items, inside, indent + 1, false);
        format!("{open}\n{body}{}{close}", INDENT.repeat(indent))
    }

    // Values.

    /// A value starting at `column`, followed on its line by `suffix` more columns.
    fn value(&mut self, value: &Value, indent: usize, column: usize, suffix: usize) -> String {
        if let Some(inline) = self.inline_value(value)
            && fits(&inline, column, suffix)
        {
            return inline;
        }
        match &value.kind {
            ValueKind::List(elements) => {
                let items: Vec<Item<'_>> = elements.iter().map(Item::Element).collect();
                self.multi_line('[', ']', &items, value.span, indent)
            }
            ValueKind::Object(block) => self.bracketed(block, indent),
            ValueKind::Call {
                function,
                arguments,
            } => {
                let name = self.slice(function.span).to_owned();
                let column = column + name.len() + 1;
                let arguments = self.join(arguments, ", ", indent, column, suffix + 1, Self::value);
                format!("{name}({arguments})")
            }
            _ => self.slice(value.span).to_owned(),
        }
    }

    /// The value on one line, or `None` when it contains a comment, an entry with a block or a
    /// multi-line literal.
    fn inline_value(&self, value: &Value) -> Option<String> {
        if self.has_comment(value.span) {
            return None;
        }
        match &value.kind {
            ValueKind::List(elements) => {
                let elements = self.inline_all(elements, Self::inline_value)?;
                Some(format!("[{}]", elements.join(", ")))
            }
            ValueKind::Object(block) => self.inline_block(block),
            ValueKind::Call {
                function,
                arguments,
            } => {
                let arguments = self.inline_all(arguments, Self::inline_value)?;
                Some(format!(
                    "{}({})",
                    self.slice(function.span),
                    arguments.join(", ")
                ))
            }
            _ => {
                let text = self.slice(value.span);
                (!text.contains('\n')).then(|| text.to_owned())
            }
        }
    }

    /// `{ a = 1, b = 2 }` or `{}`.
    fn inline_block(&self, block: &Block) -> Option<String> {
        if self.has_comment(block.span) {
            return None;
        }
        let entries = self.inline_all(&block.entries, Self::inline_entry)?;
        if entries.is_empty() {
            return Some("{}".to_owned());
        }
        Some(format!("{{ {} }}", entries.join(", ")))
    }

    /// An entry inside an inline object; `None` when it has a block or cannot be inline.
    fn inline_entry(&self, entry: &Entry) -> Option<String> {
        if entry.block.is_some() || self.has_comment(entry.span) {
            return None;
        }
        let mut text = self.head(entry);
        if let Some(type_expression) = &entry.type_annotation {
            text.push_str(": ");
            text.push_str(&self.inline_type(type_expression)?);
        }
        if let Some(value) = &entry.value {
            text.push_str(" = ");
            text.push_str(&self.inline_value(value)?);
        }
        Some(text)
    }

    fn inline_all<T>(
        &self,
        nodes: &[T],
        render: fn(&Self, &T) -> Option<String>,
    ) -> Option<Vec<String>> {
        nodes.iter().map(|node| render(self, node)).collect()
    }

    /// Renders `nodes` separated by `separator` on a line that continues from `column`; each node
    /// is followed on its line by the separator, and the last by `suffix` more columns.
    fn join<T>(
        &mut self,
        nodes: &[T],
        separator: &str,
        indent: usize,
        column: usize,
        suffix: usize,
        render: Render<'s, T>,
    ) -> String {
        let mut text = String::new();
        for (index, node) in nodes.iter().enumerate() {
            if index > 0 {
                text.push_str(separator);
            }
            let is_last = index + 1 == nodes.len();
            let node_suffix = if is_last {
                suffix
            } else {
                separator.trim_end().len()
            };
            let node_column = end_column(&text, column);
            let rendered = render(self, node, indent, node_column, node_suffix);
            text.push_str(&rendered);
        }
        text
    }

    // Types.

    /// A type starting at `column`, followed on its line by `suffix` more columns.
    fn type_expression(
        &mut self,
        type_expression: &TypeExpression,
        indent: usize,
        column: usize,
        suffix: usize,
    ) -> String {
        if let Some(inline) = self.inline_type(type_expression)
            && fits(&inline, column, suffix)
        {
            return inline;
        }
        match &type_expression.kind {
            TypeKind::List(element) => {
                let element = self.type_expression(element, indent, column + 1, suffix + 1);
                format!("[{element}]")
            }
            TypeKind::Object(block) => self.bracketed(block, indent),
            TypeKind::Union(alternatives) => {
                self.join(alternatives, " | ", indent, column, suffix, Self::value)
            }
            TypeKind::Refined { base, refinements } => {
                let base = self.type_expression(base, indent, column, 1);
                let column = end_column(&base, column) + 1;
                let refinements = self.join(
                    refinements,
                    ", ",
                    indent,
                    column,
                    suffix + 1,
                    Self::refinement,
                );
                format!("{base}({refinements})")
            }
            TypeKind::Optional(inner) => {
                let inner = self.type_expression(inner, indent, column, suffix + 1);
                format!("{inner}?")
            }
            TypeKind::Named(_) | TypeKind::Error => self.slice(type_expression.span).to_owned(),
        }
    }

    /// The type on one line, or `None` when it cannot be inline.
    fn inline_type(&self, type_expression: &TypeExpression) -> Option<String> {
        if self.has_comment(type_expression.span) {
            return None;
        }
        match &type_expression.kind {
            TypeKind::List(element) => Some(format!("[{}]", self.inline_type(element)?)),
            TypeKind::Object(block) => self.inline_block(block),
            TypeKind::Union(alternatives) => Some(
                self.inline_all(alternatives, Self::inline_value)?
                    .join(" | "),
            ),
            TypeKind::Refined { base, refinements } => Some(format!(
                "{}({})",
                self.inline_type(base)?,
                self.inline_all(refinements, Self::inline_refinement)?
                    .join(", ")
            )),
            TypeKind::Optional(inner) => Some(format!("{}?", self.inline_type(inner)?)),
            TypeKind::Named(_) | TypeKind::Error => {
                Some(self.slice(type_expression.span).to_owned())
            }
        }
    }

    /// `name = value` or a bare value inside `T(…)`.
    fn refinement(
        &mut self,
        refinement: &Refinement,
        indent: usize,
        column: usize,
        suffix: usize,
    ) -> String {
        let name = self.refinement_name(refinement);
        let value = self.value(&refinement.value, indent, column + name.len(), suffix);
        format!("{name}{value}")
    }

    fn inline_refinement(&self, refinement: &Refinement) -> Option<String> {
        let value = self.inline_value(&refinement.value)?;
        Some(format!("{}{value}", self.refinement_name(refinement)))
    }

    /// `name = ` for a named refinement, nothing for a bare one.
    fn refinement_name(&self, refinement: &Refinement) -> String {
        refinement
            .name
            .as_ref()
            .map_or_else(String::new, |name| format!("{} = ", self.slice(name.span)))
    }
}

/// Whether `inline`, starting at `column` and followed by `suffix` columns, fits the width limit.
fn fits(inline: &str, column: usize, suffix: usize) -> bool {
    column + inline.chars().count() + suffix <= MAXIMUM_WIDTH
}

/// The column after `text` when it is printed starting at `column`.
fn end_column(text: &str, column: usize) -> usize {
    match text.rfind('\n') {
        Some(newline) => text[newline + 1..].chars().count(),
        None => column + text.chars().count(),
    }
}
