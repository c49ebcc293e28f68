//! The syntax tree of rule files. Every node carries a [`Span`]; values are kept as written
//! (typed and checked by the compiler, which knows the field they are compared with).

use crate::span::Span;

/// A name as written, with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The text.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// One parsed rule file.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    /// Lists and rules in source order.
    pub items: Vec<Item>,
}

/// A top-level item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `list name = kind { ... }`
    List(ListDecl),
    /// `rule id { ... }`
    Rule(Box<RuleDecl>),
}

/// A named list, shared by all files of a pack.
#[derive(Debug, Clone, PartialEq)]
pub struct ListDecl {
    /// Its name.
    pub name: Ident,
    /// `addresses`, `domains`, `ports` or `numbers`.
    pub kind: Ident,
    /// The elements.
    pub values: Vec<Value>,
    /// The whole declaration.
    pub span: Span,
}

/// A rule: metadata, a condition, an optional stateful clause, conclusions.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDecl {
    /// The id, unique within its pack.
    pub id: Ident,
    /// Metadata entries in source order.
    pub meta: Vec<Meta>,
    /// The `when` condition.
    pub when: Expr,
    /// The `over` clause, if any.
    pub over: Option<Over>,
    /// The `then` conclusions.
    pub then: Vec<Conclusion>,
    /// The whole rule.
    pub span: Span,
}

/// `key value` inside a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// The key (`title`, `status`, ...).
    pub key: Ident,
    /// The value.
    pub value: MetaValue,
    /// The value's span.
    pub value_span: Span,
}

/// The value of a metadata entry.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `"text"`
    Str(String),
    /// `["a", "b"]`
    List(Vec<(String, Span)>),
    /// `1.5` (kept as written)
    Number(String),
    /// `stable`
    Word(String),
}

/// A boolean condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// All must hold.
    And(Vec<Expr>, Span),
    /// One must hold.
    Or(Vec<Expr>, Span),
    /// Must not hold.
    Not(Box<Expr>, Span),
    /// A test on one field.
    Pred(Predicate),
}

impl Expr {
    /// The span of the whole expression.
    pub fn span(&self) -> Span {
        match self {
            Expr::And(_, s) | Expr::Or(_, s) | Expr::Not(_, s) => *s,
            Expr::Pred(p) => p.span,
        }
    }
}

/// `field op operand`
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// The field, e.g. `peer.port`.
    pub field: Ident,
    /// The test.
    pub op: PredOp,
    /// The whole predicate.
    pub span: Span,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// The test applied to a field.
#[derive(Debug, Clone, PartialEq)]
pub enum PredOp {
    /// `== value`, `< value`, ...
    Cmp(CmpOp, Value),
    /// `in set`
    In(SetRef),
    /// `not in set`
    NotIn(SetRef),
    /// `~ center +- tolerance`
    About {
        /// The expected value.
        center: Value,
        /// Absolute (`4 KiB`) or relative (`1%`).
        tolerance: Value,
    },
    /// `matches /regex/`
    Matches(String, Span),
    /// `has syn` or `has { syn, ack }`
    Has(Vec<Value>),
}

/// The right-hand side of `in`.
#[derive(Debug, Clone, PartialEq)]
pub enum SetRef {
    /// `{ a, b, c..d }`
    Literal(Vec<Value>, Span),
    /// `lo .. hi` or a network `10.0.0.0/8`
    Single(Value),
    /// A list by name.
    Named(Ident),
}

/// A literal as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// What kind of literal.
    pub kind: ValueKind,
    /// Where.
    pub span: Span,
}

/// Literal kinds; numbers keep their text so the compiler can convert units exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    /// `10.0.0.1`
    Ipv4(String),
    /// `fe80::1`
    Ipv6(String),
    /// `10.0.0.0/8`, `2001:db8::/32`
    Cidr(String),
    /// `58.3 MB`, `443`, `5%`
    Quantity {
        /// Digits as written (`_` removed).
        number: String,
        /// Unit, if any.
        unit: Option<String>,
    },
    /// `"text"` (escapes resolved)
    Str(String),
    /// `tcp`, `syn`
    Word(String),
    /// `lo .. hi`
    Range(Box<Value>, Box<Value>),
}

/// `over 7d count >= 3 and peers >= 2`: aggregates over a sliding window.
#[derive(Debug, Clone, PartialEq)]
pub struct Over {
    /// The window.
    pub window: Value,
    /// Aggregate conditions.
    pub aggregates: Vec<Aggregate>,
    /// The clause.
    pub span: Span,
}

/// One aggregate condition of an `over` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// `count`, `peers`, `domains`, `period`, `transfer`.
    pub name: Ident,
    /// The test.
    pub op: AggOp,
    /// The whole aggregate.
    pub span: Span,
}

/// The test of an aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AggOp {
    /// `>= 3`
    Cmp(CmpOp, Value),
    /// `~ 15m +- 10%`
    About {
        /// The expected value.
        center: Value,
        /// Absolute or relative.
        tolerance: Value,
    },
}

/// `target = "label" [version "v"] [confidence c]`
#[derive(Debug, Clone, PartialEq)]
pub struct Conclusion {
    /// `os.family`, `os.name`, `os.version`, `software`, `device`.
    pub target: Ident,
    /// The label.
    pub value: String,
    /// The label's span.
    pub value_span: Span,
    /// For `software`: its version.
    pub version: Option<(String, Span)>,
    /// Overrides the rule's `confidence`.
    pub confidence: Option<(String, Span)>,
    /// The whole conclusion.
    pub span: Span,
}
