//! The pure core of the edgec compiler: parsing, checking and emitting `.edge` programs.
//!
//! Nothing here touches the file system, the environment or the terminal; the `edgec` binary does
//! that and hands this crate bytes. Errors are data ([`diagnostic::Diagnostic`]), and all their
//! wording lives in [`diagnostic::wording`].

pub mod check;
pub mod diagnostic;
pub mod image_reference;
pub mod render;
pub mod source;
pub mod span;
mod suggest;
pub mod syntax;

/// The paths a file imports (`import "path"` at the top level), with the spans of the paths.
pub fn imports(tree: &syntax::ast::SyntaxTree) -> Vec<(String, span::Span)> {
    tree.entries
        .iter()
        .filter(|entry| {
            // A malformed import (with a type, value or block) is reported by the checker and
            // not followed, so one mistake gives one diagnostic.
            entry.key.name == "import"
                && !entry.key.quoted
                && entry.type_annotation.is_none()
                && entry.value.is_none()
                && entry.block.is_none()
        })
        .filter_map(|entry| entry.label.as_ref().filter(|label| label.quoted))
        .map(|label| (label.name.clone(), label.span))
        .collect()
}

/// Checks a loaded program, with `--set` overrides as `(name, value)` pairs. The overrides become
/// a source file named `--set` in `sources`, so their diagnostics can point at them.
pub fn compile(
    sources: &mut source::SourceSet,
    trees: &[(span::FileId, syntax::ast::SyntaxTree)],
    overrides: &[(String, String)],
) -> (check::Program, Vec<diagnostic::Diagnostic>) {
    let overrides_tree = (!overrides.is_empty()).then(|| {
        let string_parameters = check::string_parameters(trees.iter().map(|(_, tree)| tree));
        let text = check::overrides_source(overrides, &string_parameters);
        let tree = syntax::parse(&text);
        (sources.add(source::SourceFile::new("--set", text)), tree)
    });
    let files: Vec<check::ParsedFile<'_>> = trees
        .iter()
        .map(|(id, tree)| {
            let file = sources.get(*id);
            check::ParsedFile {
                id: *id,
                name: &file.name,
                text: &file.text,
                tree,
            }
        })
        .collect();
    let overrides_file = overrides_tree.as_ref().map(|(id, tree)| {
        let file = sources.get(*id);
        check::ParsedFile {
            id: *id,
            name: &file.name,
            text: &file.text,
            tree,
        }
    });
    check::check(&files, overrides_file)
}

/// Formats one source in the canonical style, or returns its syntax errors (a file that does not
/// parse is never rewritten).
pub fn format_source(
    text: &str,
    file: span::FileId,
) -> Result<String, Vec<diagnostic::Diagnostic>> {
    let tree = syntax::parse(text);
    if tree.errors.is_empty() {
        return Ok(syntax::format::format(text, &tree));
    }
    Err(tree
        .errors
        .iter()
        .map(|error| {
            diagnostic::Diagnostic::new(
                diagnostic::DiagnosticKind::Syntax(error.kind.clone()),
                span::Location::new(file, error.span),
            )
        })
        .collect())
}
pub mod emit;
pub mod import;
