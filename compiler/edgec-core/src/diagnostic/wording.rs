//! All the words of the compiler's diagnostics: message, labels and help for every kind.
//!
//! The route language's own diagnostics are worded by `edge-route`'s `describe` module, which
//! this module defers to, so a route error reads the same from `edgec check` and `edgec route eval`.
//!
//! Keeping the prose here, away from the checks, means the voice stays consistent and a reviewer
//! can read every message the compiler can print in one sitting.

use super::{Diagnostic, DiagnosticKind, LabelRole};
use crate::syntax::ast::SyntaxErrorKind;

/// The one-line message.
pub fn message(diagnostic: &Diagnostic) -> String {
    use DiagnosticKind::*;
    match &diagnostic.kind {
        Syntax(kind) => syntax_message(kind),
        NotUtf8 { offset } => {
            format!("this file is not valid UTF-8 (the first invalid byte is at offset {offset})")
        }
        FileTooLarge { size, limit } => {
            format!("this file is {size} bytes, more than the {limit}-byte limit for a source file")
        }
        BinaryFile { offset } => format!(
            "this file contains a NUL byte at offset {offset}; it looks like a binary file, not a `.edge` source"
        ),
        EmptyFile => "this file is empty".into(),
        ImportNotFound { path, reason } => format!("cannot import `{path}`: {reason}"),
        SelfImport { path } => format!("`{path}` imports itself"),
        UnknownName {
            namespace, name, ..
        } => format!("unknown {namespace} `{name}`"),
        Duplicate { what, name } => format!("{what} `{name}` is defined more than once"),
        ListedTwice { list, name } => format!("`{name}` is listed more than once in {list}"),
        UnknownAttribute { block, name, .. } => format!("`{name}` is not an attribute of {block}"),
        MissingAttribute { block, name } => {
            format!("{block} is missing the required attribute `{name}`")
        }
        TypeMismatch { expected, found } => format!("expected {expected}, found {found}"),
        OutOfRange {
            what,
            value,
            bounds,
        } => format!("{what} {value} is out of range: it must be {bounds}"),
        InvalidKeyword { what, found, .. } => format!("`{found}` is not a valid {what}"),
        MalformedEntry {
            entry,
            expected_form,
        } => format!("`{entry}` must be written as `{expected_form}`"),
        ConstraintViolation { value, constraint } => {
            format!("{value} does not satisfy {constraint}")
        }
        InvalidPattern { pattern, .. } => format!("`{pattern}` is not a valid regular expression"),
        MissingParameterValue { name } => {
            format!("parameter `{name}` has no default and was not set")
        }
        UnknownTopLevel { name, .. } => format!("`{name}` is not a top-level construct"),
        ReservedModuleName { name } => format!("`{name}` is a reserved module name"),
        InvalidModuleName { name } => format!("`{name}` is not a valid IoT Edge module name"),
        InvalidEnvironmentName { name } => {
            format!("`{name}` is not a valid environment variable name")
        }
        InvalidTwinKey { key, reason } => format!("twin property name `{key}` {reason}"),
        TwinTooDeep {
            module,
            depth,
            limit,
        } => {
            format!(
                "the desired properties of `{module}` nest {depth} levels deep; IoT Hub allows {limit}"
            )
        }
        TwinTooLarge {
            module,
            size,
            limit,
        } => {
            format!("the desired properties of `{module}` are {size} bytes; IoT Hub allows {limit}")
        }
        StartupCycle { cycle } => {
            format!("startup dependencies form a cycle: {}", cycle.join(" → "))
        }
        StartupOrderConflict { module } => {
            format!("module `{module}` sets both `startup_order` and `after`")
        }
        DependencyNotDeployed {
            module,
            dependency,
            deployment,
        } => {
            format!(
                "`{module}` starts after `{dependency}`, which deployment `{deployment}` does not contain"
            )
        }
        ArchitectureMismatch {
            module,
            image_architecture,
            hardware,
            hardware_architecture,
        } => format!(
            "the image of `{module}` is built for {image_architecture}, but hardware `{hardware}` is {hardware_architecture}"
        ),
        MemoryOvercommit {
            deployment,
            total,
            available,
        } => format!(
            "the memory limits of deployment `{deployment}` add up to {}, more than the hardware's {}",
            human_bytes(*total),
            human_bytes(*available)
        ),
        InlineSecret { field } => format!("the registry {field} is written inline"),
        InvalidImageReference { reference, reason } => {
            format!("`{reference}` is not a valid image reference: {reason}")
        }
        RegistryImageWithoutDigest { reference } => {
            format!("image `{reference}` is not pinned to a digest")
        }
        Route(error) => edge_route::describe::message(error),
        RouteUnknownModule { module, .. } => format!("route names unknown module `{module}`"),
        RouteUnknownOutput { module, output, .. } => {
            format!("module `{module}` has no output `{output}`")
        }
        RouteUnknownInput { module, input, .. } => {
            format!("module `{module}` has no input `{input}`")
        }
        RouteModuleNotDeployed { module, deployment } => {
            format!(
                "route names module `{module}`, which deployment `{deployment}` does not contain"
            )
        }
        OutputNeverRouted {
            module,
            output,
            deployment,
        } => {
            format!("output `{output}` of `{module}` is never routed in deployment `{deployment}`")
        }
        InputNeverFed {
            module,
            input,
            deployment,
        } => {
            format!("input `{input}` of `{module}` is never fed in deployment `{deployment}`")
        }
    }
}

fn syntax_message(kind: &SyntaxErrorKind) -> String {
    use SyntaxErrorKind::*;
    match kind {
        Expected { expected, found } => format!("expected {expected}, found {found}"),
        UnterminatedString => "unterminated string".into(),
        UnterminatedComment => "unterminated block comment".into(),
        InvalidEscape { escape } => format!("invalid escape `{escape}`"),
        InvalidNumber { text } => format!("invalid number `{text}`"),
        UnknownUnit { unit, .. } => format!("unknown unit `{unit}`"),
        NestingTooDeep { limit } => format!("nesting deeper than {limit} levels"),
        UnclosedDelimiter { delimiter } => format!("unclosed `{delimiter}`"),
        UnexpectedClosingDelimiter { delimiter } => format!("unexpected `{delimiter}`"),
    }
}

/// The text under the primary span.
pub fn primary_label(diagnostic: &Diagnostic) -> String {
    use DiagnosticKind::*;
    match &diagnostic.kind {
        Syntax(SyntaxErrorKind::Expected { expected, .. }) => format!("expected {expected} here"),
        Syntax(SyntaxErrorKind::UnclosedDelimiter { .. }) => "opened here and never closed".into(),
        Syntax(SyntaxErrorKind::NestingTooDeep { .. }) => "this is nested too deeply".into(),
        Syntax(_) => "here".into(),
        Duplicate { .. } => "defined again here".into(),
        ListedTwice { .. } => "listed again here".into(),
        UnknownName { .. } | UnknownAttribute { .. } | UnknownTopLevel { .. } => "not found".into(),
        MissingAttribute { name, .. } => format!("`{name}` is required here"),
        TypeMismatch { expected, .. } => format!("expected {expected}"),
        StartupCycle { .. } => "this dependency closes the cycle".into(),
        ArchitectureMismatch {
            image_architecture, ..
        } => format!("{image_architecture} image"),
        MemoryOvercommit { total, .. } => format!("{} of limits in total", human_bytes(*total)),
        InlineSecret { .. } => "secret in the source".into(),
        OutputNeverRouted { .. } => "no route reads this output".into(),
        InputNeverFed { .. } => "no route writes to this input".into(),
        RegistryImageWithoutDigest { .. } => "tag only".into(),
        _ => "here".into(),
    }
}

/// The text under a secondary span.
pub fn secondary_label(role: &LabelRole) -> String {
    match role {
        LabelRole::FirstDefinition => "first defined here".into(),
        LabelRole::FirstListed => "first listed here".into(),
        LabelRole::DeclaredHere => "declared here".into(),
        LabelRole::CycleStep { from, to } => format!("`{from}` starts after `{to}`"),
        LabelRole::HardwareArchitecture => "the target hardware's architecture".into(),
        LabelRole::HardwareMemory => "the target hardware's memory".into(),
        LabelRole::MemoryLimit { module, bytes } => {
            format!("`{module}` may use {}", human_bytes(*bytes))
        }
        LabelRole::RouteRelated => "involved here".into(),
    }
}

/// What to do about it.
pub fn help(diagnostic: &Diagnostic) -> Option<String> {
    use DiagnosticKind::*;
    let did_you_mean = |suggestion: &Option<String>| {
        suggestion
            .as_ref()
            .map(|name| format!("did you mean `{name}`?"))
    };
    match &diagnostic.kind {
        Syntax(kind) => syntax_help(kind),
        NotUtf8 { .. } => Some("save the file as UTF-8".into()),
        FileTooLarge { .. } => Some("split the fleet into several files that import each other".into()),
        BinaryFile { .. } => Some("check that the path names a `.edge` source file".into()),
        EmptyFile => Some("add a definition, or remove the file".into()),
        ImportNotFound { .. } => Some("import paths are relative to the importing file".into()),
        SelfImport { .. } => Some("remove this import; a file's own definitions are always visible".into()),
        UnknownName { suggestion, namespace, .. } => {
            did_you_mean(suggestion).or_else(|| Some(format!("define the {namespace} or import the file that does")))
        }
        Duplicate { what, .. } => Some(format!("rename or remove one of the {what}s")),
        ListedTwice { .. } => Some("remove the repeated entry".into()),
        UnknownAttribute { suggestion, block, .. } => {
            did_you_mean(suggestion).or_else(|| Some(format!("see `schema/LANGUAGE.md` for the attributes of {block}")))
        }
        MissingAttribute { name, .. } => Some(format!("add `{name} = …`")),
        TypeMismatch { .. } => None,
        OutOfRange { .. } => None,
        InvalidKeyword { allowed, suggestion, .. } => did_you_mean(suggestion)
            .or_else(|| Some(format!("use one of: {}", allowed.join(", ")))),
        MalformedEntry { .. } => None,
        ConstraintViolation { .. } => Some("change the value, or relax the constraint".into()),
        InvalidPattern { reason, .. } => Some(reason.clone()),
        MissingParameterValue { name } => Some(format!("give it a default, or pass `--set {name}=…`")),
        UnknownTopLevel { suggestion, .. } => did_you_mean(suggestion)
            .or_else(|| Some("top-level entries are import, param, hardware, schema, module and deployment".into())),
        ReservedModuleName { .. } => {
            Some("`edgeAgent`, `edgeHub` and names starting with `$` belong to the IoT Edge runtime; choose another name".into())
        }
        InvalidModuleName { .. } => Some("module names may contain only ASCII letters, digits, `_` and `-`".into()),
        InvalidEnvironmentName { .. } => {
            Some("environment variable names may not be empty or contain `=`, spaces or control characters".into())
        }
        InvalidTwinKey { .. } => Some("twin property names may not contain `.`, `$`, `#`, spaces or control characters, and are at most 1 KB".into()),
        TwinTooDeep { .. } => Some("flatten the nested objects".into()),
        TwinTooLarge { .. } => Some("move bulk configuration into a file the module reads, or split the module".into()),
        StartupCycle { .. } => Some("remove one of the `after` dependencies in the cycle".into()),
        StartupOrderConflict { .. } => Some("keep either the number or the dependencies".into()),
        DependencyNotDeployed { dependency, .. } => Some(format!("add `{dependency}` to the deployment's modules, or drop the dependency")),
        ArchitectureMismatch { hardware_architecture, .. } => {
            Some(format!("use an image built for {hardware_architecture}, or target other hardware"))
        }
        MemoryOvercommit { .. } => Some("lower the modules' `limits.memory`, or target hardware with more memory".into()),
        InlineSecret { field } => Some(format!("read it from the build environment: `{field} = env(\"REGISTRY_{}\")`", field.to_uppercase())),
        InvalidImageReference { .. } => Some("write `registry/repository:tag`, `registry/repository@sha256:…`, or `local(\"path\")`".into()),
        RegistryImageWithoutDigest { .. } => {
            Some("pin the image with `@sha256:…` so every device runs the same bytes".into())
        }
        Route(error) => edge_route::describe::help(error),
        RouteUnknownModule { suggestion, .. } => did_you_mean(suggestion),
        RouteUnknownOutput { suggestion, .. } => did_you_mean(suggestion).or_else(|| Some("declare it in the module: `output NAME`".into())),
        RouteUnknownInput { suggestion, .. } => did_you_mean(suggestion).or_else(|| Some("declare it in the module: `input NAME`".into())),
        RouteModuleNotDeployed { module, .. } => Some(format!("add `{module}` to the deployment's `modules`")),
        OutputNeverRouted { .. } => Some("add a route from this output, or remove the output".into()),
        InputNeverFed { .. } => Some("add a route into this input, or remove the input".into()),
    }
}

fn syntax_help(kind: &SyntaxErrorKind) -> Option<String> {
    use SyntaxErrorKind::*;
    match kind {
        Expected { .. } => None,
        UnterminatedString => Some("close the string with `\"` on the same line, or use a raw string `r#\"…\"#` for text spanning lines".into()),
        UnterminatedComment => Some("close the comment with `*/`".into()),
        InvalidEscape { .. } => Some("valid escapes are \\\" \\\\ \\n \\r \\t \\$ and \\u{…}".into()),
        InvalidNumber { .. } => Some("numbers are 64-bit; sizes and durations must be whole and non-negative".into()),
        UnknownUnit { quantity_units, .. } => Some(format!("known units: {quantity_units}")),
        NestingTooDeep { .. } => Some("flatten the structure".into()),
        UnclosedDelimiter { delimiter } => Some(format!("add the matching `{}`", closing_of(*delimiter))),
        UnexpectedClosingDelimiter { .. } => Some("remove it, or add the opening delimiter it belongs to".into()),
    }
}

fn closing_of(delimiter: char) -> char {
    match delimiter {
        '{' => '}',
        '[' => ']',
        '(' => ')',
        other => other,
    }
}

/// Bytes in the largest binary unit that keeps a whole number, as `.edge` writes sizes.
pub fn human_bytes(bytes: u64) -> String {
    for (unit, multiplier) in crate::syntax::SIZE_UNITS.iter().rev() {
        if bytes >= *multiplier && bytes.is_multiple_of(*multiplier) {
            return format!("{}{unit}", bytes / multiplier);
        }
    }
    format!("{bytes}B")
}

/// Seconds in the largest unit that keeps a whole number, as `.edge` writes durations.
pub fn human_duration(seconds: u64) -> String {
    for (unit, multiplier) in crate::syntax::DURATION_UNITS.iter().rev() {
        if seconds >= *multiplier && seconds.is_multiple_of(*multiplier) {
            return format!("{}{unit}", seconds / multiplier);
        }
    }
    format!("{seconds}s")
}
