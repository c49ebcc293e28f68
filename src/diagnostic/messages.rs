//! The text of every diagnostic, declared once per kind of problem, next to its code.
//!
//! The parser and the compiler say *what* is wrong by building a [`DiagnosticKind`] from data
//! (names, values, expected kinds) and placing it with [`DiagnosticKind::at`]; the message and
//! the hint a user reads are written here and nowhere else (yara-x's error structs, VRL's
//! `DiagnosticMessage`). Labels and secondary spans stay with the caller, who knows the spans.

use super::{Code, Diagnostic};
use crate::schema::NumUnit;
use crate::span::Span;

/// One kind of problem with the data its message needs; it knows its [`Code`] (and so its
/// severity), its message and its hint.
#[derive(Debug, Clone, PartialEq)]
pub enum DiagnosticKind<'a> {
    // FP0001
    /// The grammar refused a text that a second, detailed parse accepted.
    SyntaxError,
    /// A condition nested deeper than the parser goes.
    TooDeep {
        /// The deepest nesting accepted.
        max: usize,
    },
    /// A control character outside a string.
    ControlCharacter {
        /// The character.
        ch: char,
    },
    /// A character that only strings may hold.
    StrayCharacter {
        /// The character.
        ch: char,
    },
    /// What the grammar expected, and what it found.
    Expected {
        /// The expected tokens, already joined (`a name or a number`).
        expected: &'a str,
        /// What was found, described (`` `=` ``, `end of file`).
        found: &'a str,
        /// A hint for a mistake people often make, when this is one.
        hint: Option<SyntaxHint>,
    },
    /// A message of the grammar's own.
    Grammar {
        /// Its text.
        message: &'a str,
    },
    // FP0002
    /// A field name that does not exist.
    UnknownField {
        /// The name written.
        name: &'a str,
        /// The likely field meant.
        suggestion: Option<&'a str>,
        /// Whether the suggestion came from renaming `src`/`dst`-style words to `host`/`peer`.
        renamed: bool,
    },
    // FP0003
    /// A list that is not defined in the pack.
    UndefinedList {
        /// Its name.
        name: &'a str,
        /// A defined list with a close name.
        suggestion: Option<&'a str>,
        /// The field it was used with (`addr`, `domain`, `port`, ...).
        field: &'a str,
    },
    // FP0004
    /// An operator that an address field does not take.
    AddressOperator {
        /// The field.
        field: &'a str,
    },
    /// `matches` on a numeric field.
    NumberMatches {
        /// The field.
        field: &'a str,
        /// Its unit family.
        unit: NumUnit,
    },
    /// `has` on a numeric field.
    NumberHas {
        /// The field.
        field: &'a str,
    },
    /// An operator that a name field does not take.
    NameOperator {
        /// The field.
        field: &'a str,
    },
    /// An operator that the flags field does not take.
    FlagsOperator {
        /// The field.
        field: &'a str,
    },
    /// A list of one kind used with a field that needs another.
    ListKindMismatch {
        /// The list.
        name: &'a str,
        /// The kind of values it holds.
        holds: &'a str,
        /// The kind the field needs.
        needs: &'a str,
    },
    /// A range of domain names.
    DomainRange,
    /// Something else than a TCP flag after `has`.
    NotAFlag {
        /// The value, described.
        found: &'a str,
    },
    /// A protocol name that is not known.
    UnknownProtocol {
        /// The name.
        name: &'a str,
        /// A known name close to it.
        suggestion: Option<&'a str>,
        /// The known names.
        known: &'a [&'a str],
    },
    /// A value that is not a literal of the field's unit family.
    ExpectedNumber {
        /// The family.
        unit: NumUnit,
        /// The value, described.
        found: &'a str,
    },
    /// A value that is not an address, network or address range.
    ExpectedAddress {
        /// The value, described.
        found: &'a str,
    },
    /// A value that is not a quoted domain name.
    ExpectedDomain {
        /// The value, described.
        found: &'a str,
    },
    // FP0005
    /// An address that does not parse.
    InvalidIp {
        /// Its text.
        text: &'a str,
    },
    /// A network that does not parse.
    InvalidNetwork {
        /// Its text.
        text: &'a str,
    },
    /// A network with host bits set.
    HostBits {
        /// Its text.
        text: &'a str,
        /// The network meant, host bits cleared.
        network: &'a str,
    },
    /// An address range between addresses of two families, or of something else.
    MixedFamilies,
    // FP0006
    /// A rule id used twice in one pack.
    DuplicateRule {
        /// The id.
        id: &'a str,
        /// The pack.
        pack: &'a str,
    },
    // FP0007
    /// A list name defined twice in one pack.
    DuplicateList {
        /// The name.
        name: &'a str,
        /// The pack.
        pack: &'a str,
    },
    // FP0008
    /// A list no rule uses.
    UnusedList {
        /// Its name, without the pack.
        name: &'a str,
    },
    // FP0009
    /// A rule no index selects.
    NotIndexable {
        /// Its qualified id.
        rule: &'a str,
    },
    // FP0010
    /// A regular expression that does not compile.
    InvalidRegex {
        /// The last line of the regex crate's error.
        error: &'a str,
    },
    // FP0011
    /// A metadata key given twice.
    MetadataTwice {
        /// The key.
        key: &'a str,
    },
    /// A metadata value of the wrong kind for its key.
    MetadataValue {
        /// The key (`title`, `status`, ...); what it takes follows from it.
        key: &'a str,
    },
    /// A metadata key that does not exist.
    UnknownMetadataKey {
        /// The key.
        key: &'a str,
        /// A known key close to it.
        suggestion: Option<&'a str>,
        /// The known keys.
        known: &'a [&'a str],
    },
    // FP0012
    /// A confidence outside (0, 1].
    ConfidenceOutOfRange {
        /// Its text.
        text: &'a str,
    },
    /// A conclusion with no confidence of its own and none from the rule.
    MissingConfidence,
    // FP0013
    /// A percentage anywhere but a tolerance.
    PercentOutsideTolerance,
    /// A duration without a unit.
    DurationNeedsUnit,
    /// A unit that is not a size unit, on a size.
    NotASizeUnit {
        /// The unit.
        unit: &'a str,
    },
    /// A unit that is not a time unit, on a duration.
    NotATimeUnit {
        /// The unit.
        unit: &'a str,
    },
    /// A unit on a field that takes plain numbers.
    PlainNumberUnit {
        /// The unit.
        unit: &'a str,
    },
    /// A fraction where only whole numbers fit.
    WholeNumber,
    /// A number above its field's maximum.
    OutOfRange {
        /// The number as written.
        number: &'a str,
        /// The maximum.
        max: u64,
    },
    /// A percentage that is not a number.
    InvalidPercentage,
    /// A tolerance of 100% or more.
    ToleranceTooWide,
    /// An `over` window of 0.
    EmptyWindow,
    /// A `period` of 0.
    EmptyPeriod,
    /// A period tolerance of half the period or more.
    ToleranceOverHalfPeriod,
    // FP0014
    /// A conclusion target that does not exist.
    UnknownConclusion {
        /// The target written.
        name: &'a str,
        /// A known target close to it.
        suggestion: Option<&'a str>,
    },
    /// `version` on a conclusion that is not `software`.
    VersionNotSoftware,
    /// A conclusion with an empty label.
    EmptyConclusion,
    // FP0016
    /// `< 0`.
    NothingBelowZero,
    /// `>` the largest value.
    NothingAbove,
    /// `in { }`.
    EmptySet,
    /// A list without values.
    EmptyList {
        /// Its name.
        name: &'a str,
    },
    /// A number range whose lower end is above its upper end.
    InvertedRange,
    /// An address range whose first address is above the second.
    InvertedAddressRange,
    // FP0017
    /// A `\u{...}` escape that is not a code point.
    InvalidUnicodeEscape,
    /// An escape that does not exist.
    UnknownEscape {
        /// The character after the backslash.
        ch: char,
    },
    // FP0018
    /// A list kind that does not exist.
    UnknownListKind {
        /// The kind written.
        kind: &'a str,
        /// A known kind close to it.
        suggestion: Option<&'a str>,
    },
    /// A value of a `numbers` list that is not a number or range.
    NumbersListValue {
        /// The value, described.
        found: &'a str,
    },
    /// A use of a list that has errors of its own.
    BrokenList {
        /// Its name.
        name: &'a str,
    },
    // FP0019
    /// A source that cannot be read.
    Unreadable {
        /// Why, as `flowprint::sources` says it.
        reason: &'a str,
    },
    // FP0020
    /// A domain pattern that is not a name or `*.suffix`.
    InvalidDomain {
        /// The pattern as written.
        pattern: &'a str,
        /// The name checked: lower case, without `*.` and the final dot.
        name: &'a str,
    },
    // FP0021
    /// `!=` on an aggregate.
    AggregateNe,
    /// An aggregate given twice.
    AggregateTwice {
        /// Its name.
        name: &'a str,
    },
    /// `count`, `peers` or `domains` with `~`.
    AggregateNeedsComparison {
        /// The aggregate.
        name: &'a str,
    },
    /// `period` or `transfer` with a comparison.
    AggregateNeedsAbout {
        /// The aggregate.
        name: &'a str,
    },
    /// An aggregate that does not exist.
    UnknownAggregate {
        /// Its name.
        name: &'a str,
        /// A known aggregate close to it.
        suggestion: Option<&'a str>,
        /// The known aggregates.
        known: &'a [&'a str],
    },
    /// A window shorter than the period.
    WindowShorterThanPeriod,
    // FP0022
    /// An overrides file that is not valid.
    InvalidOverrides {
        /// What is wrong with it.
        error: &'a str,
    },
    // FP0023
    /// An override naming no loaded rule.
    UnmatchedOverride {
        /// The entry.
        entry: &'a str,
    },
    // FP0024
    /// A `pack.yaml` that does not parse or check.
    InvalidManifest {
        /// What is wrong with it.
        message: &'a str,
    },
    /// A pack made for another flowprint version.
    PackNeedsFlowprint {
        /// The pack.
        pack: &'a str,
        /// Its version.
        version: &'a str,
        /// The flowprint versions it accepts.
        needs: &'a str,
    },
    /// A pack depending on a pack that is not loaded.
    MissingDependency {
        /// The pack.
        pack: &'a str,
        /// The pack it depends on.
        dep: &'a str,
        /// The versions it accepts.
        req: &'a str,
    },
    /// A pack depending on another version of a loaded pack.
    DependencyVersion {
        /// The pack.
        pack: &'a str,
        /// The pack it depends on.
        dep: &'a str,
        /// The versions it accepts.
        req: &'a str,
        /// The version loaded.
        loaded: &'a str,
    },
    // FP0025
    /// An entry of a rule directory that was not read.
    Skipped {
        /// The entry.
        path: &'a str,
        /// Why.
        reason: &'a str,
    },
}

/// Hints for mistakes people often make in the syntax (FP0001).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxHint {
    /// `=` where a comparison goes.
    Equals,
    /// `'...'`.
    SingleQuotes,
    /// `&&`, `||`.
    AndOr,
    /// `-` where a set or comparison goes.
    NegativeRange,
    /// Metadata after the conclusions.
    MetadataFirst,
    /// Something else where a rule expects `when`.
    RuleShape,
}

impl SyntaxHint {
    fn text(self) -> &'static str {
        match self {
            SyntaxHint::Equals => "comparisons use `==`",
            SyntaxHint::SingleQuotes => "strings are written in double quotes: \"...\"",
            SyntaxHint::AndOr => "use `and` / `or`",
            SyntaxHint::NegativeRange => "ranges are written `lo .. hi`, e.g. `8000 .. 8100`",
            SyntaxHint::MetadataFirst => {
                "the conclusions end the rule: metadata (`title`, `status`, ...) goes first, before `when`"
            }
            SyntaxHint::RuleShape => {
                "a rule needs metadata first, then `when <condition>`, then `then <conclusion>`"
            }
        }
    }
}

/// Describes the expected literal of a unit family.
fn family_desc(family: NumUnit) -> &'static str {
    match family {
        NumUnit::Port => "a port number",
        NumUnit::Proto => "a protocol (`tcp`, `udp`, ... or a number)",
        NumUnit::Bytes => "a size (`1500`, `4 KiB`, `58.3 MB`)",
        NumUnit::Count => "a number",
        NumUnit::Duration => "a duration (`30 s`, `5 m`)",
        NumUnit::Ttl => "a TTL (0..255)",
    }
}

/// "did you mean `x`?" for a suggestion, else `otherwise`.
fn did_you_mean_or(suggestion: Option<&str>, otherwise: impl Into<String>) -> Option<String> {
    Some(match suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None => otherwise.into(),
    })
}

impl DiagnosticKind<'_> {
    /// The code, message and hint: each kind's texts in one place.
    fn parts(&self) -> (Code, String, Option<String>) {
        use DiagnosticKind as K;
        let none = None;
        let hint = |h: &str| Some(h.to_string());
        match self {
            K::SyntaxError => (Code::Syntax, "syntax error".into(), none),
            K::TooDeep { max } => (
                Code::Syntax,
                format!("nested more than {max} levels deep"),
                hint("split the condition into simpler rules or a list (`peer.port in { ... }`)"),
            ),
            K::ControlCharacter { ch } => (
                Code::Syntax,
                format!("control character U+{:04X} outside a string", *ch as u32),
                hint("remove it; in a string write it as an escape (`\\0`, `\\u{...}`)"),
            ),
            K::StrayCharacter { ch } => (
                Code::Syntax,
                format!("`{ch}` cannot appear outside a string"),
                hint("names are ASCII letters, digits, `_` and `-`; other text goes in double quotes"),
            ),
            K::Expected {
                expected,
                found,
                hint,
            } => (
                Code::Syntax,
                format!("expected {expected}, found {found}"),
                hint.map(|h| h.text().to_string()),
            ),
            K::Grammar { message } => (Code::Syntax, message.to_string(), none),
            K::UnknownField {
                name,
                suggestion,
                renamed,
            } => (
                Code::UnknownField,
                format!("unknown field `{name}`"),
                Some(match (suggestion, renamed) {
                    (Some(s), true) => format!(
                        "did you mean `{s}`? (rules speak of the local `host` and the remote `peer`, whichever direction a record was exported in)"
                    ),
                    (Some(s), false) => format!("did you mean `{s}`?"),
                    (None, _) => "see docs/rule-language.md for the fields: host.addr, peer.port, bytes, peer.domain, ...".into(),
                }),
            ),
            K::UndefinedList {
                name,
                suggestion,
                field,
            } => (
                Code::UndefinedList,
                format!("list `{name}` is not defined in this pack"),
                did_you_mean_or(
                    *suggestion,
                    format!(
                        "define it in any file of the pack: `list {name} = {} {{ ... }}`",
                        match *field {
                            "addr" => "addresses",
                            "domain" => "domains",
                            "port" => "ports",
                            _ => "numbers",
                        }
                    ),
                ),
            ),
            K::AddressOperator { field } => (
                Code::TypeMismatch,
                format!("`{field}` is an address: use `==`, `!=`, `in` or `not in`"),
                none,
            ),
            K::NumberMatches { field, unit } => (
                Code::TypeMismatch,
                format!(
                    "`{field}` is a number; `matches` applies to names ({})",
                    family_desc(*unit)
                ),
                none,
            ),
            K::NumberHas { field } => (
                Code::TypeMismatch,
                format!("`{field}` is a number; `has` applies to `tcp.flags`"),
                none,
            ),
            K::NameOperator { field } => (
                Code::TypeMismatch,
                format!("`{field}` is a name: use `==`, `!=`, `in`, `not in` or `matches`"),
                none,
            ),
            K::FlagsOperator { field } => (
                Code::TypeMismatch,
                format!("`{field}` is a set of flags: use `has syn`, `has {{ syn, ack }}` or `== syn`"),
                none,
            ),
            K::ListKindMismatch { name, holds, needs } => (
                Code::TypeMismatch,
                format!("list `{name}` holds {holds}, but this field needs {needs}"),
                none,
            ),
            K::DomainRange => (Code::TypeMismatch, "domain names have no ranges".into(), none),
            K::NotAFlag { found } => (
                Code::TypeMismatch,
                format!("expected a TCP flag, found {found}"),
                hint("flags are fin, syn, rst, psh, ack, urg, ece, cwr"),
            ),
            K::UnknownProtocol {
                name,
                suggestion,
                known,
            } => (
                Code::TypeMismatch,
                format!("unknown protocol `{name}`"),
                Some(match suggestion {
                    Some(s) => format!("did you mean `{s}`? Or write the protocol number"),
                    None => format!(
                        "known names: {}; or write the protocol number",
                        known.join(", ")
                    ),
                }),
            ),
            K::ExpectedNumber { unit, found } => (
                Code::TypeMismatch,
                format!("expected {}, found {found}", family_desc(*unit)),
                none,
            ),
            K::ExpectedAddress { found } => (
                Code::TypeMismatch,
                format!("expected an address, network or address range, found {found}"),
                none,
            ),
            K::ExpectedDomain { found } => (
                Code::TypeMismatch,
                format!("expected a domain name in quotes, found {found}"),
                none,
            ),
            K::InvalidIp { text } => (
                Code::InvalidAddress,
                format!("`{text}` is not a valid IP address"),
                none,
            ),
            K::InvalidNetwork { text } => (
                Code::InvalidAddress,
                format!("`{text}` is not a valid network"),
                hint("write networks as `10.0.0.0/8` or `2001:db8::/32`"),
            ),
            K::HostBits { text, network } => (
                Code::InvalidAddress,
                format!("`{text}` has host bits set"),
                Some(format!("did you mean `{network}`?")),
            ),
            K::MixedFamilies => (
                Code::InvalidAddress,
                "an address range needs two addresses of the same family".into(),
                none,
            ),
            K::DuplicateRule { id, pack } => (
                Code::DuplicateRule,
                format!("rule id `{id}` is used twice in pack `{pack}`"),
                hint("ids name the evidence a rule produces; give each rule its own"),
            ),
            K::DuplicateList { name, pack } => (
                Code::DuplicateList,
                format!("list `{name}` is defined twice in pack `{pack}`"),
                hint("rename one of them; lists are shared by all files of a pack"),
            ),
            K::UnusedList { name } => (
                Code::UnusedList,
                format!("list `{name}` is never used"),
                hint("remove it, or refer to it from a rule: `peer.domain in NAME` (from another pack: `PACK/NAME`)"),
            ),
            K::NotIndexable { rule } => (
                Code::NotIndexable,
                format!("rule `{rule}` cannot be indexed and is checked against every flow"),
                hint("add a condition on `peer.addr`, `peer.domain`, `peer.port`, or a bounded byte count, joined with `and`"),
            ),
            K::InvalidRegex { error } => (
                Code::InvalidRegex,
                format!("invalid regular expression: {error}"),
                hint("the syntax is that of the Rust `regex` crate; escape `.` as `\\.`"),
            ),
            K::MetadataTwice { key } => (
                Code::InvalidMetadata,
                format!("`{key}` is given twice"),
                none,
            ),
            K::MetadataValue { key } => {
                let takes = match *key {
                    "status" => "`experimental`, `test` or `stable`",
                    "version" => "a string or a number",
                    "references" | "tags" => "a list of strings: [\"...\", \"...\"]",
                    "confidence" => "a number in (0, 1]",
                    // `title`, `description`, `author`.
                    _ => "a string in double quotes",
                };
                (
                    Code::InvalidMetadata,
                    format!("`{key}` takes {takes}"),
                    none,
                )
            }
            K::UnknownMetadataKey {
                key,
                suggestion,
                known,
            } => (
                Code::InvalidMetadata,
                format!("unknown metadata key `{key}`"),
                did_you_mean_or(*suggestion, format!("known keys: {}", known.join(", "))),
            ),
            K::ConfidenceOutOfRange { text } => (
                Code::InvalidConfidence,
                format!("confidence `{text}` is not in (0, 1]"),
                hint("a confidence is a probability, e.g. `0.8`"),
            ),
            K::MissingConfidence => (
                Code::InvalidConfidence,
                "this conclusion has no confidence".into(),
                hint("add `confidence 0.8` after the conclusion, or a `confidence` entry to the rule"),
            ),
            K::PercentOutsideTolerance => (
                Code::InvalidNumber,
                "a percentage is only valid as a tolerance".into(),
                hint("write `field ~ value +- 5%`"),
            ),
            K::DurationNeedsUnit => (
                Code::InvalidNumber,
                "a duration needs a unit: `ms`, `s`, `m`, `h` or `d`".into(),
                none,
            ),
            K::NotASizeUnit { unit } => (
                Code::InvalidNumber,
                format!("`{unit}` is not a size unit; use B, KB, KiB, MB, MiB, GB, GiB"),
                none,
            ),
            K::NotATimeUnit { unit } => (
                Code::InvalidNumber,
                format!("`{unit}` is not a time unit; use ms, s, m, h, d"),
                none,
            ),
            K::PlainNumberUnit { unit } => (
                Code::InvalidNumber,
                format!("this field takes a plain number, not `{unit}`"),
                none,
            ),
            K::WholeNumber => (Code::InvalidNumber, "expected a whole number".into(), none),
            K::OutOfRange { number, max } => (
                Code::InvalidNumber,
                format!("`{number}` is out of range (at most {max})"),
                none,
            ),
            K::InvalidPercentage => (Code::InvalidNumber, "not a valid percentage".into(), none),
            K::ToleranceTooWide => (
                Code::InvalidNumber,
                "a tolerance of 100% or more matches almost anything".into(),
                hint("use a range instead: `field in low .. high`"),
            ),
            K::EmptyWindow => (
                Code::InvalidNumber,
                "the window must be longer than 0".into(),
                none,
            ),
            K::EmptyPeriod => (
                Code::InvalidNumber,
                "a period must be longer than 0".into(),
                none,
            ),
            K::ToleranceOverHalfPeriod => (
                Code::InvalidNumber,
                "the tolerance must be under half the period".into(),
                hint("e.g. `period ~ 15m +- 10%`"),
            ),
            K::UnknownConclusion { name, suggestion } => (
                Code::UnknownConclusion,
                format!("unknown conclusion `{name}`"),
                did_you_mean_or(
                    *suggestion,
                    "a rule concludes `os.family`, `os.name`, `os.version`, `software` or `device`",
                ),
            ),
            K::VersionNotSoftware => (
                Code::UnknownConclusion,
                "`version` only qualifies `software`".into(),
                hint("for an operating system, conclude `os.version = \"...\"`"),
            ),
            K::EmptyConclusion => (
                Code::UnknownConclusion,
                "a conclusion needs a non-empty label".into(),
                none,
            ),
            K::NothingBelowZero => (Code::InvalidRange, "nothing is below 0".into(), none),
            K::NothingAbove => (
                Code::InvalidRange,
                "nothing is above this value".into(),
                none,
            ),
            K::EmptySet => (
                Code::InvalidRange,
                "an empty set matches nothing".into(),
                none,
            ),
            K::EmptyList { name } => (
                Code::InvalidRange,
                format!("list `{name}` is empty"),
                hint("an empty list matches nothing"),
            ),
            K::InvertedRange => (
                Code::InvalidRange,
                "the lower end is above the upper end".into(),
                hint("write ranges as `low .. high`"),
            ),
            K::InvertedAddressRange => (
                Code::InvalidRange,
                "the first address is above the second".into(),
                none,
            ),
            K::InvalidUnicodeEscape => (
                Code::InvalidEscape,
                "invalid unicode escape".into(),
                hint("write `\\u{XXXX}` with 1 to 6 hex digits of a valid code point"),
            ),
            K::UnknownEscape { ch } => (
                Code::InvalidEscape,
                format!("unknown escape `\\{ch}`"),
                hint("valid escapes are \\\" \\\\ \\n \\t \\r \\0 \\u{XXXX}"),
            ),
            K::UnknownListKind { kind, suggestion } => (
                Code::InvalidList,
                format!("unknown list kind `{kind}`"),
                did_you_mean_or(
                    *suggestion,
                    "list kinds are `addresses`, `domains`, `ports` and `numbers`",
                ),
            ),
            K::NumbersListValue { found } => (
                Code::InvalidList,
                format!("a `numbers` list holds numbers and ranges, found {found}"),
                none,
            ),
            K::BrokenList { name } => (
                Code::InvalidList,
                format!("list `{name}` has errors (see above)"),
                none,
            ),
            K::Unreadable { reason } => (Code::Io, reason.to_string(), none),
            K::InvalidDomain { pattern, name } => (
                Code::InvalidDomain,
                format!("\"{pattern}\" is not a domain name or `*.suffix` pattern"),
                if name.contains('*') {
                    hint("a wildcard may only stand first, as `*.example.com`")
                } else if name.contains('/') || name.contains(':') {
                    hint("write the host name only, without scheme, port or path")
                } else {
                    none
                },
            ),
            K::AggregateNe => (
                Code::InvalidAggregate,
                "`!=` is not available for aggregates".into(),
                hint("use `>=`, `>`, `<=`, `<` or `==`"),
            ),
            K::AggregateTwice { name } => (
                Code::InvalidAggregate,
                format!("`{name}` is given twice"),
                none,
            ),
            K::AggregateNeedsComparison { name } => (
                Code::InvalidAggregate,
                format!("`{name}` is compared with a number"),
                Some(format!("e.g. `{name} >= 3`")),
            ),
            K::AggregateNeedsAbout { name } => (
                Code::InvalidAggregate,
                format!("`{name}` takes `~ value +- tolerance`"),
                hint(if *name == "period" {
                    "e.g. `period ~ 15m +- 10%`"
                } else {
                    "e.g. `transfer ~ 58.3 MB +- 0.5%`"
                }),
            ),
            K::UnknownAggregate {
                name,
                suggestion,
                known,
            } => (
                Code::InvalidAggregate,
                format!("unknown aggregate `{name}`"),
                did_you_mean_or(*suggestion, format!("aggregates are {}", known.join(", "))),
            ),
            K::WindowShorterThanPeriod => (
                Code::InvalidAggregate,
                "the window is shorter than the period".into(),
                hint("the window must hold several periods, e.g. `over 2h ... period ~ 15m +- 10%`"),
            ),
            K::InvalidOverrides { error } => (
                Code::InvalidOverrides,
                format!("overrides not applied: {error}"),
                hint("`disable:` is a list of `pack/id` or `pack/*`; `modify:` maps ids to `{confidence: C}`"),
            ),
            K::UnmatchedOverride { entry } => (
                Code::UnmatchedOverride,
                format!("override `{entry}` names no loaded rule"),
                hint("rule ids are `pack/id`; `flowprint check --format json` lists what is loaded"),
            ),
            K::InvalidManifest { message } => (Code::InvalidPack, message.to_string(), none),
            K::PackNeedsFlowprint {
                pack,
                version,
                needs,
            } => (
                Code::InvalidPack,
                format!(
                    "pack `{pack}` {version} needs flowprint {needs}, this is {}",
                    env!("CARGO_PKG_VERSION")
                ),
                hint("use a version of the pack made for this flowprint, or upgrade flowprint"),
            ),
            K::MissingDependency { pack, dep, req } => (
                Code::InvalidPack,
                format!("pack `{pack}` needs pack `{dep}` ({req}), which is not loaded"),
                hint(INSTALL_DEPENDENCY),
            ),
            K::DependencyVersion {
                pack,
                dep,
                req,
                loaded,
            } => (
                Code::InvalidPack,
                format!("pack `{pack}` needs pack `{dep}` {req}, but {loaded} is loaded"),
                hint(INSTALL_DEPENDENCY),
            ),
            K::Skipped { path, reason } => (
                Code::SkippedPath,
                format!("{path} not read: {reason}"),
                hint("each file and directory is read once; hidden files are never read"),
            ),
        }
    }

    /// The stable code (and so the severity).
    pub fn code(&self) -> Code {
        self.parts().0
    }

    /// The one-line message.
    pub fn message(&self) -> String {
        self.parts().1
    }

    /// How to fix it, when we can say.
    pub fn hint(&self) -> Option<String> {
        self.parts().2
    }

    /// The diagnostic with its primary label at `span`.
    pub fn at(&self, span: Span) -> Diagnostic {
        let (code, message, hint) = self.parts();
        let mut d = Diagnostic::new(code, span, message);
        d.hint = hint;
        d
    }
}

const INSTALL_DEPENDENCY: &str =
    "install the pack it depends on (`flowprint pack install`), in a version it accepts";

#[cfg(test)]
mod tests {
    use super::*;

    /// One kind of each code; the match makes a new code fail to compile until it has one.
    fn example(code: Code) -> Option<DiagnosticKind<'static>> {
        use DiagnosticKind as K;
        Some(match code {
            Code::Syntax => K::SyntaxError,
            Code::UnknownField => K::UnknownField {
                name: "dst.prot",
                suggestion: Some("peer.port"),
                renamed: true,
            },
            Code::UndefinedList => K::UndefinedList {
                name: "x",
                suggestion: None,
                field: "port",
            },
            Code::TypeMismatch => K::DomainRange,
            Code::InvalidAddress => K::MixedFamilies,
            Code::DuplicateRule => K::DuplicateRule { id: "a", pack: "p" },
            Code::DuplicateList => K::DuplicateList {
                name: "a",
                pack: "p",
            },
            Code::UnusedList => K::UnusedList { name: "a" },
            Code::NotIndexable => K::NotIndexable { rule: "p/a" },
            Code::InvalidRegex => K::InvalidRegex { error: "x" },
            Code::InvalidMetadata => K::MetadataValue { key: "status" },
            Code::InvalidConfidence => K::MissingConfidence,
            Code::InvalidNumber => K::WholeNumber,
            Code::UnknownConclusion => K::EmptyConclusion,
            Code::Unsupported => return None,
            Code::InvalidRange => K::EmptySet,
            Code::InvalidEscape => K::UnknownEscape { ch: 'q' },
            Code::InvalidList => K::BrokenList { name: "a" },
            Code::Io => K::Unreadable { reason: "gone" },
            Code::InvalidDomain => K::InvalidDomain {
                pattern: "a.*.b",
                name: "a.*.b",
            },
            Code::InvalidAggregate => K::AggregateNe,
            Code::InvalidOverrides => K::InvalidOverrides { error: "x" },
            Code::UnmatchedOverride => K::UnmatchedOverride { entry: "p/x" },
            Code::InvalidPack => K::InvalidManifest { message: "x" },
            Code::SkippedPath => K::Skipped {
                path: "x",
                reason: "a loop",
            },
        })
    }

    #[test]
    fn every_code_but_the_retired_one_has_a_kind() {
        for &code in Code::ALL {
            match example(code) {
                Some(kind) => assert_eq!(kind.code(), code, "{kind:?}"),
                None => assert_eq!(code, Code::Unsupported),
            }
        }
    }

    #[test]
    fn docs_errors_md_lists_every_code() {
        let doc = include_str!("../../docs/errors.md");
        for &code in Code::ALL {
            let row = format!("| {code} | ");
            assert!(doc.contains(&row), "docs/errors.md does not list {code}");
            let sev = match code {
                Code::Unsupported => "—",
                _ => match code.severity() {
                    super::super::Severity::Error => "error",
                    super::super::Severity::Warning => "warning",
                },
            };
            assert!(
                doc.contains(&format!("| {code} | {sev} |")),
                "docs/errors.md gives {code} another severity than {sev}"
            );
        }
    }

    #[test]
    fn a_kind_places_its_texts_at_the_span() {
        let span = Span::new(crate::span::FileId::default(), 3, 5);
        let d = DiagnosticKind::UnknownListKind {
            kind: "colours",
            suggestion: None,
        }
        .at(span);
        assert_eq!(d.code, Code::InvalidList);
        assert_eq!(d.message, "unknown list kind `colours`");
        assert_eq!(
            d.hint.as_deref(),
            Some("list kinds are `addresses`, `domains`, `ports` and `numbers`")
        );
        assert_eq!(d.primary_span(), span);
    }
}
