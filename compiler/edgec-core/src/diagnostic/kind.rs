//! What a diagnostic is about, with the data its wording needs.

use super::code::Code;
use crate::syntax::ast::SyntaxErrorKind;

#[derive(Debug, Clone, PartialEq)]
pub enum DiagnosticKind {
    Syntax(SyntaxErrorKind),
    NotUtf8 {
        offset: usize,
    },
    FileTooLarge {
        size: usize,
        limit: usize,
    },
    BinaryFile {
        offset: usize,
    },
    EmptyFile,
    ImportNotFound {
        path: String,
        reason: String,
    },
    SelfImport {
        path: String,
    },

    UnknownName {
        namespace: &'static str,
        name: String,
        suggestion: Option<String>,
    },
    Duplicate {
        what: &'static str,
        name: String,
    },
    /// A name given twice in one list, such as a deployment's `modules`.
    ListedTwice {
        list: &'static str,
        name: String,
    },
    UnknownAttribute {
        block: &'static str,
        name: String,
        suggestion: Option<String>,
    },
    MissingAttribute {
        block: &'static str,
        name: &'static str,
    },
    TypeMismatch {
        expected: String,
        found: String,
    },
    OutOfRange {
        what: String,
        value: String,
        bounds: String,
    },
    InvalidKeyword {
        what: &'static str,
        found: String,
        allowed: &'static [&'static str],
        suggestion: Option<String>,
    },
    MalformedEntry {
        entry: String,
        expected_form: &'static str,
    },
    ConstraintViolation {
        value: String,
        constraint: String,
    },
    InvalidPattern {
        pattern: String,
        reason: String,
    },
    MissingParameterValue {
        name: String,
    },
    UnknownTopLevel {
        name: String,
        suggestion: Option<String>,
    },

    ReservedModuleName {
        name: String,
    },
    InvalidModuleName {
        name: String,
    },
    InvalidEnvironmentName {
        name: String,
    },
    InvalidTwinKey {
        key: String,
        reason: &'static str,
    },
    TwinTooDeep {
        module: String,
        depth: usize,
        limit: usize,
    },
    TwinTooLarge {
        module: String,
        size: usize,
        limit: usize,
    },
    StartupCycle {
        cycle: Vec<String>,
    },
    StartupOrderConflict {
        module: String,
    },
    DependencyNotDeployed {
        module: String,
        dependency: String,
        deployment: String,
    },
    ArchitectureMismatch {
        module: String,
        image_architecture: String,
        hardware: String,
        hardware_architecture: String,
    },
    MemoryOvercommit {
        deployment: String,
        total: u64,
        available: u64,
    },
    InlineSecret {
        field: &'static str,
    },
    InvalidImageReference {
        reference: String,
        reason: &'static str,
    },
    RegistryImageWithoutDigest {
        reference: String,
    },

    /// A diagnostic of the route language itself (syntax, types, schema), from `edge-route`.
    Route(edge_route::RouteError),
    RouteUnknownModule {
        module: String,
        suggestion: Option<String>,
    },
    RouteUnknownOutput {
        module: String,
        output: String,
        suggestion: Option<String>,
    },
    RouteUnknownInput {
        module: String,
        input: String,
        suggestion: Option<String>,
    },
    RouteModuleNotDeployed {
        module: String,
        deployment: String,
    },
    OutputNeverRouted {
        module: String,
        output: String,
        deployment: String,
    },
    InputNeverFed {
        module: String,
        input: String,
        deployment: String,
    },
}

/// What a secondary label points at.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelRole {
    FirstDefinition,
    FirstListed,
    DeclaredHere,
    CycleStep {
        from: String,
        to: String,
    },
    HardwareArchitecture,
    HardwareMemory,
    MemoryLimit {
        module: String,
        bytes: u64,
    },
    /// The other place a route diagnostic involves.
    RouteRelated,
}

impl DiagnosticKind {
    pub fn code(&self) -> Code {
        use DiagnosticKind::*;
        use SyntaxErrorKind as S;
        match self {
            Syntax(S::Expected { .. }) => Code::E0001,
            Syntax(S::UnterminatedString) => Code::E0002,
            Syntax(S::UnterminatedComment) => Code::E0003,
            Syntax(S::InvalidEscape { .. }) => Code::E0004,
            Syntax(S::InvalidNumber { .. }) => Code::E0005,
            Syntax(S::UnknownUnit { .. }) => Code::E0006,
            Syntax(S::NestingTooDeep { .. }) => Code::E0007,
            Syntax(S::UnclosedDelimiter { .. }) => Code::E0008,
            Syntax(S::UnexpectedClosingDelimiter { .. }) => Code::E0009,
            NotUtf8 { .. } => Code::E0010,
            FileTooLarge { .. } => Code::E0011,
            BinaryFile { .. } => Code::E0012,
            EmptyFile => Code::W0013,
            ImportNotFound { .. } => Code::E0014,
            SelfImport { .. } => Code::E0015,
            UnknownName { .. } => Code::E0101,
            Duplicate { .. } => Code::E0102,
            ListedTwice { .. } => Code::E0102,
            UnknownAttribute { .. } => Code::E0103,
            MissingAttribute { .. } => Code::E0104,
            TypeMismatch { .. } => Code::E0105,
            OutOfRange { .. } => Code::E0106,
            InvalidKeyword { .. } => Code::E0107,
            MalformedEntry { .. } => Code::E0108,
            ConstraintViolation { .. } => Code::E0109,
            InvalidPattern { .. } => Code::E0110,
            MissingParameterValue { .. } => Code::E0111,
            UnknownTopLevel { .. } => Code::E0112,
            ReservedModuleName { .. } => Code::E0201,
            InvalidModuleName { .. } => Code::E0202,
            InvalidEnvironmentName { .. } => Code::E0203,
            InvalidTwinKey { .. } => Code::E0204,
            TwinTooDeep { .. } => Code::E0205,
            TwinTooLarge { .. } => Code::E0206,
            StartupCycle { .. } => Code::E0207,
            StartupOrderConflict { .. } => Code::E0208,
            DependencyNotDeployed { .. } => Code::E0209,
            ArchitectureMismatch { .. } => Code::E0210,
            MemoryOvercommit { .. } => Code::E0211,
            InlineSecret { .. } => Code::E0212,
            InvalidImageReference { .. } => Code::E0213,
            RegistryImageWithoutDigest { .. } => Code::W0214,
            Route(error) => Code::parse(error.code()).unwrap_or(Code::R0003),
            RouteUnknownModule { .. } => Code::E0302,
            RouteUnknownOutput { .. } => Code::E0303,
            RouteUnknownInput { .. } => Code::E0304,
            RouteModuleNotDeployed { .. } => Code::E0305,
            OutputNeverRouted { .. } => Code::W0306,
            InputNeverFed { .. } => Code::W0307,
        }
    }
}
