//! Rule text → [`ast::File`](crate::ast::File). The only module that knows pest; its errors are turned into our
//! own [`Diagnostic`]s here, in one place.

use crate::ast::*;
use crate::diagnostic::{Diagnostic, DiagnosticKind, SyntaxHint};
use crate::span::{FileId, Span};
use pest::Parser as _;
use pest::iterators::Pair;

#[allow(missing_docs)]
mod generated {
    /// The pest parser generated from `grammar/flowprint.pest`.
    #[derive(pest_derive::Parser)]
    #[grammar = "grammar/flowprint.pest"]
    pub struct Grammar;
}
use generated::{Grammar, Rule};

type Pairs<'i> = pest::iterators::Pairs<'i, Rule>;

mod split;

/// Parses one rule file. On a syntax error returns the diagnostics: every error of every item
/// (each `rule` and `list` is parsed on its own, so one broken item never hides the others),
/// and the items that did parse are still returned with them by [`parse_recovering`].
pub fn parse(file: FileId, text: &str) -> Result<File, Vec<Diagnostic>> {
    let (parsed, errors) = parse_recovering(file, text);
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

/// Parses one rule file item by item: the items that parse, and the diagnostics of those that
/// do not. An item nested deeper than [`MAX_RULE_NESTING`](crate::limits::MAX_RULE_NESTING)
/// is refused before pest sees it.
pub fn parse_recovering(file: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    let chunks = split::split(text, crate::limits::MAX_RULE_NESTING);
    // Error detail costs a third of the parse time: the items are parsed without it (in
    // parallel for a large file: each item alone, so their order does not matter), and only
    // an item that fails is parsed again with it, afterwards, one at a time (the setting is
    // global to pest).
    pest::set_error_detail(false);
    let threads = crate::par::threads_for(chunks.len(), PARALLEL_ITEMS);
    let parsed: Vec<Parsed> =
        crate::par::map_in_order(&chunks, threads, |c| parse_chunk(file, text, c));
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (chunk, result) in chunks.iter().zip(parsed) {
        match result {
            Parsed::Items(its, errs) => {
                items.extend(its);
                errors.extend(errs);
            }
            Parsed::Refused(d) => errors.push(d),
            Parsed::Failed => {
                let piece = &text[chunk.start..chunk.end];
                pest::set_error_detail(true);
                let detailed = Grammar::parse(Rule::file, piece);
                pest::set_error_detail(false);
                errors.push(match detailed {
                    Err(e) => syntax_error(file, text, chunk.start, e),
                    // The grammar is deterministic; should the two parses ever disagree, still
                    // say so.
                    Ok(_) => {
                        DiagnosticKind::SyntaxError.at(Span::new(file, chunk.start, chunk.start))
                    }
                });
            }
        }
    }
    (File { items }, errors)
}

/// Items from which a file is parsed on several threads.
const PARALLEL_ITEMS: usize = 2_000;

/// What parsing one item gave.
enum Parsed {
    /// The items that built, and the errors of those that did not (an invalid escape).
    Items(Vec<Item>, Vec<Diagnostic>),
    /// Refused before pest saw it (too deep, a stray character).
    Refused(Diagnostic),
    /// A syntax error, to be described by parsing again with error detail.
    Failed,
}

fn parse_chunk(file: FileId, text: &str, chunk: &split::Chunk) -> Parsed {
    if let Some((s, e)) = chunk.too_deep {
        return Parsed::Refused(
            DiagnosticKind::TooDeep {
                max: crate::limits::MAX_RULE_NESTING,
            }
            .at(Span::new(file, s, e))
            .label("one level too deep"),
        );
    }
    if let Some((s, e)) = chunk.stray_char {
        let ch = text[s..e].chars().next().unwrap_or(' ');
        let kind = if ch.is_control() {
            DiagnosticKind::ControlCharacter { ch }
        } else {
            DiagnosticKind::StrayCharacter { ch }
        };
        return Parsed::Refused(kind.at(Span::new(file, s, e)).label("unexpected here"));
    }
    let piece = &text[chunk.start..chunk.end];
    let Ok(mut pairs) = Grammar::parse(Rule::file, piece) else {
        return Parsed::Failed;
    };
    let mut p = Builder {
        file,
        base: chunk.start,
        errors: Vec::new(),
    };
    let mut items = Vec::new();
    if let Some(root) = pairs.next() {
        for pair in root.into_inner().filter(|pair| pair.as_rule() != Rule::EOI) {
            // An item with an error of its own (an invalid escape) is left out.
            let before = p.errors.len();
            let item = p.item_from_pair(pair);
            if p.errors.len() == before {
                items.push(item);
            }
        }
    }
    Parsed::Items(items, p.errors)
}

/// Human names for grammar rules, used in "expected ..." messages.
fn rule_name(r: &Rule) -> String {
    match r {
        Rule::EOI => "end of file",
        Rule::list_decl => "`list`",
        Rule::rule_decl => "`rule`",
        Rule::rule_end => "`}`",
        Rule::conclusion_sep => "`,`",
        Rule::item => "`list` or `rule`",
        Rule::list_kind => "a list kind (`addresses`, `domains`, `ports`, `numbers`)",
        Rule::meta_entry | Rule::meta_key => "a metadata entry (`title \"...\"`)",
        Rule::meta_value => "a metadata value",
        Rule::when_clause => "`when`",
        Rule::then_clause => "`then`",
        Rule::over_clause => "`over`",
        Rule::expr | Rule::and_expr | Rule::not_expr | Rule::predicate => "a condition",
        Rule::cmp_pred
        | Rule::cmp_op
        | Rule::in_pred
        | Rule::not_in_pred
        | Rule::about_pred
        | Rule::matches_pred
        | Rule::has_pred => {
            "an operator (`==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`, `~`, `matches`, `has`)"
        }
        Rule::set_literal => "a set (`{ ... }`)",
        Rule::list_ref | Rule::name | Rule::qualified_name => "a name",
        Rule::conclusion => "a conclusion (`os.family = \"...\"`)",
        Rule::conclusion_version => "`version`",
        Rule::conclusion_confidence => "`confidence`",
        Rule::tolerance => "a tolerance (`1%`, `4 KiB`)",
        Rule::aggregate | Rule::agg_cmp | Rule::agg_about => {
            "an aggregate (`count >= 3`, `peers >= 2`, `period ~ 15m +- 10%`, `transfer ~ 58 MB +- 1%`)"
        }
        Rule::range => "a range (`lo .. hi`)",
        Rule::cidr => "a network (`10.0.0.0/8`)",
        Rule::ipv4 | Rule::ipv6 => "an address",
        Rule::quantity | Rule::number => "a number",
        Rule::unit => "a unit",
        Rule::regex => "a regular expression (`/.../`)",
        Rule::string => "a string (`\"...\"`)",
        Rule::string_list => "a list of strings (`[\"...\", ...]`)",
        Rule::word => "a word",
        Rule::field => "a field (`peer.port`, `bytes`, ...)",
        _ => return format!("{r:?}"),
    }
    .to_string()
}

/// A pest error in the item at `base` of `text`, as a diagnostic on the whole file.
fn syntax_error(file: FileId, text: &str, base: usize, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (base + p, base + p),
        InputLocation::Span((s, e)) => (base + s, base + e),
    };
    // Point at the whole offending token, not just its first byte.
    let end = if end > start {
        end
    } else {
        let rest = &text[start.min(text.len())..];
        let tok = rest
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || "{}()[],".contains(*c))
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        start + tok.max(rest.chars().next().map_or(0, char::len_utf8))
    };
    let found = &text[start.min(text.len())..end.min(text.len())];
    let found_desc = if found.is_empty() {
        "end of file".to_string()
    } else {
        format!("`{}`", crate::text::printable(found))
    };
    let span = Span::new(file, start, end);
    let d = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<String> = positives.iter().map(rule_name).collect();
            names.sort();
            names.dedup();
            if names.len() > 1 {
                names.retain(|n| n != "a unit");
            }
            let expected = match names.len() {
                0 => "something else".to_string(),
                1 => names[0].clone(),
                _ => {
                    let last = names.pop().unwrap_or_default();
                    format!("{} or {last}", names.join(", "))
                }
            };
            DiagnosticKind::Expected {
                expected: &expected,
                found: &found_desc,
                hint: syntax_hint(found, &positives[..]),
            }
            .at(span)
        }
        ErrorVariant::CustomError { message } => DiagnosticKind::Grammar { message }.at(span),
    };
    d.label("unexpected here")
}

fn syntax_hint(found: &str, positives: &[Rule]) -> Option<SyntaxHint> {
    if found == "=" && positives.contains(&Rule::cmp_op) {
        return Some(SyntaxHint::Equals);
    }
    if found.starts_with('\'') {
        return Some(SyntaxHint::SingleQuotes);
    }
    if found == "&&" || found == "||" {
        return Some(SyntaxHint::AndOr);
    }
    if found.starts_with('-')
        && positives
            .iter()
            .any(|r| matches!(r, Rule::set_literal | Rule::cmp_op))
    {
        return Some(SyntaxHint::NegativeRange);
    }
    if positives.contains(&Rule::rule_end)
        && found.starts_with(|c: char| c.is_ascii_alphabetic())
        && !found.starts_with("version")
        && !found.starts_with("confidence")
    {
        return Some(SyntaxHint::MetadataFirst);
    }
    if positives.contains(&Rule::when_clause) {
        return Some(SyntaxHint::RuleShape);
    }
    None
}

fn cmp_op(text: &str) -> CmpOp {
    match text {
        "==" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        ">" => CmpOp::Gt,
        _ => CmpOp::Ge,
    }
}

struct Builder {
    file: FileId,
    /// Offset in the file of the item being built (pest's offsets are relative to it).
    base: usize,
    errors: Vec<Diagnostic>,
}

impl Builder {
    /// The span of a pair, without the trailing whitespace pest may include.
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let start = self.base + pair.as_span().start();
        let len = pair.as_str().trim_end().len();
        Span::new(self.file, start, start + len)
    }

    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn item_from_pair(&mut self, pair: Pair<'_, Rule>) -> Item {
        match pair.as_rule() {
            Rule::list_decl => Item::List(self.list_from_pairs(pair)),
            Rule::rule_decl => Item::Rule(Box::new(self.rule_from_pairs(pair))),
            r => unreachable!("grammar yields only lists and rules at top level, got {r:?}"),
        }
    }

    fn list_from_pairs(&mut self, pair: Pair<'_, Rule>) -> ListDecl {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let name = self.ident(inner.next().expect("list name"));
        let kind = self.ident(inner.next().expect("list kind"));
        let values = self.set_values(inner.next().expect("list body").into_inner());
        ListDecl {
            name,
            kind,
            values,
            span,
        }
    }

    fn rule_from_pairs(&mut self, pair: Pair<'_, Rule>) -> RuleDecl {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let id = self.ident(inner.next().expect("rule id"));
        let mut meta = Vec::new();
        let mut when = None;
        let mut over = None;
        let mut then = Vec::new();
        for p in inner {
            match p.as_rule() {
                Rule::meta_entry => meta.push(self.meta_from_pairs(p)),
                Rule::when_clause => {
                    when = Some(self.expr_from_pair(p.into_inner().next().expect("condition")))
                }
                Rule::over_clause => over = Some(self.over_from_pairs(p)),
                Rule::then_clause => {
                    then = p
                        .into_inner()
                        .filter(|c| c.as_rule() == Rule::conclusion)
                        .map(|c| self.conclusion_from_pairs(c))
                        .collect()
                }
                Rule::rule_end => {}
                r => unreachable!("unexpected {r:?} in rule"),
            }
        }
        RuleDecl {
            id,
            meta,
            when: when.expect("grammar requires when"),
            over,
            then,
            span,
        }
    }

    fn meta_from_pairs(&mut self, pair: Pair<'_, Rule>) -> Meta {
        let mut inner = pair.into_inner();
        let key = self.ident(inner.next().expect("meta key"));
        let v = inner.next().expect("meta value");
        let value_span = self.span(&v);
        let value = match v.as_rule() {
            Rule::string => MetaValue::Str(self.string_from_pair(v)),
            Rule::string_list => MetaValue::List(
                v.into_inner()
                    .map(|s| {
                        let sp = self.span(&s);
                        (self.string_from_pair(s), sp)
                    })
                    .collect(),
            ),
            Rule::number => MetaValue::Number(v.as_str().replace('_', "")),
            _ => MetaValue::Word(v.as_str().to_string()),
        };
        Meta {
            key,
            value,
            value_span,
        }
    }

    fn expr_from_pair(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::expr => {
                let mut parts: Vec<Expr> =
                    pair.into_inner().map(|p| self.expr_from_pair(p)).collect();
                if parts.len() == 1 {
                    parts.pop().expect("one part")
                } else {
                    Expr::Or(parts, span)
                }
            }
            Rule::and_expr => {
                let mut parts: Vec<Expr> =
                    pair.into_inner().map(|p| self.expr_from_pair(p)).collect();
                if parts.len() == 1 {
                    parts.pop().expect("one part")
                } else {
                    Expr::And(parts, span)
                }
            }
            Rule::not_expr => {
                let inner = pair.into_inner().next().expect("negated expression");
                Expr::Not(Box::new(self.expr_from_pair(inner)), span)
            }
            Rule::predicate => Expr::Pred(self.predicate_from_pairs(pair)),
            r => unreachable!("unexpected {r:?} in condition"),
        }
    }

    fn predicate_from_pairs(&mut self, pair: Pair<'_, Rule>) -> Predicate {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let field = self.ident(inner.next().expect("field"));
        let op_pair = inner.next().expect("operator");
        let op = match op_pair.as_rule() {
            Rule::cmp_pred => {
                let mut i = op_pair.into_inner();
                let op = cmp_op(i.next().expect("cmp op").as_str());
                PredOp::Cmp(op, self.value_from_pair(i.next().expect("value")))
            }
            Rule::in_pred => {
                PredOp::In(self.set_from_pair(op_pair.into_inner().next().expect("set")))
            }
            Rule::not_in_pred => {
                PredOp::NotIn(self.set_from_pair(op_pair.into_inner().next().expect("set")))
            }
            Rule::about_pred => {
                let mut i = op_pair.into_inner();
                let center = self.value_from_pair(i.next().expect("center"));
                let tol = i
                    .next()
                    .expect("tolerance")
                    .into_inner()
                    .next()
                    .expect("quantity");
                PredOp::About {
                    center,
                    tolerance: self.value_from_pair(tol),
                }
            }
            Rule::matches_pred => {
                let p = op_pair.into_inner().next().expect("pattern");
                let sp = self.span(&p);
                let pattern = match p.as_rule() {
                    Rule::regex => p
                        .into_inner()
                        .next()
                        .map(|b| b.as_str().replace("\\/", "/"))
                        .unwrap_or_default(),
                    _ => self.string_from_pair(p),
                };
                PredOp::Matches(pattern, sp)
            }
            Rule::has_pred => {
                let p = op_pair.into_inner().next().expect("flags");
                match p.as_rule() {
                    Rule::set_literal => PredOp::Has(self.set_values(p.into_inner())),
                    _ => PredOp::Has(vec![self.value_from_pair(p)]),
                }
            }
            r => unreachable!("unexpected {r:?} as operator"),
        };
        Predicate { field, op, span }
    }

    fn set_from_pair(&mut self, pair: Pair<'_, Rule>) -> SetRef {
        match pair.as_rule() {
            Rule::set_literal => {
                let span = self.span(&pair);
                SetRef::Literal(self.set_values(pair.into_inner()), span)
            }
            Rule::range | Rule::cidr => SetRef::Single(self.value_from_pair(pair)),
            Rule::list_ref => SetRef::Named(self.ident(pair.into_inner().next().expect("name"))),
            r => unreachable!("unexpected {r:?} as set"),
        }
    }

    fn set_values(&mut self, pairs: Pairs<'_>) -> Vec<Value> {
        pairs.map(|p| self.value_from_pair(p)).collect()
    }

    fn value_from_pair(&mut self, pair: Pair<'_, Rule>) -> Value {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::ipv4 => ValueKind::Ipv4(pair.as_str().to_string()),
            Rule::ipv6 => ValueKind::Ipv6(pair.as_str().to_string()),
            Rule::cidr => ValueKind::Cidr(pair.as_str().to_string()),
            Rule::quantity => {
                let mut i = pair.into_inner();
                let number = i.next().expect("number").as_str().replace('_', "");
                let unit = i.next().map(|u| u.as_str().to_string());
                ValueKind::Quantity { number, unit }
            }
            Rule::string => ValueKind::Str(self.string_from_pair(pair)),
            Rule::word => ValueKind::Word(pair.as_str().to_string()),
            Rule::range => {
                let mut i = pair.into_inner();
                let lo = self.value_from_pair(i.next().expect("lo"));
                let hi = self.value_from_pair(i.next().expect("hi"));
                ValueKind::Range(Box::new(lo), Box::new(hi))
            }
            r => unreachable!("unexpected {r:?} as value"),
        };
        Value { kind, span }
    }

    fn over_from_pairs(&mut self, pair: Pair<'_, Rule>) -> Over {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let window = self.value_from_pair(inner.next().expect("window"));
        let aggregates = inner
            .map(|a| {
                let span = self.span(&a);
                let mut i = a.into_inner();
                let name = self.ident(i.next().expect("aggregate"));
                let op_pair = i.next().expect("aggregate test");
                let op = if op_pair.as_rule() == Rule::agg_about {
                    let mut j = op_pair.into_inner();
                    let center = self.value_from_pair(j.next().expect("center"));
                    let tol = j
                        .next()
                        .expect("tolerance")
                        .into_inner()
                        .next()
                        .expect("quantity");
                    AggOp::About {
                        center,
                        tolerance: self.value_from_pair(tol),
                    }
                } else {
                    let mut j = op_pair.into_inner();
                    let op = cmp_op(j.next().expect("op").as_str());
                    AggOp::Cmp(op, self.value_from_pair(j.next().expect("value")))
                };
                Aggregate { name, op, span }
            })
            .collect();
        Over {
            window,
            aggregates,
            span,
        }
    }

    fn conclusion_from_pairs(&mut self, pair: Pair<'_, Rule>) -> Conclusion {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let target = self.ident(inner.next().expect("target"));
        let v = inner.next().expect("label");
        let value_span = self.span(&v);
        let value = self.string_from_pair(v);
        let mut version = None;
        let mut confidence = None;
        for p in inner {
            let is_version = p.as_rule() == Rule::conclusion_version;
            let x = p.into_inner().next().expect("value");
            let sp = self.span(&x);
            if is_version {
                version = Some((self.string_from_pair(x), sp));
            } else {
                confidence = Some((x.as_str().replace('_', ""), sp));
            }
        }
        Conclusion {
            target,
            value,
            value_span,
            version,
            confidence,
            span,
        }
    }

    /// Resolves escapes: `\"`, `\\`, `\n`, `\t`, `\r`, `\0`, `\u{XXXX}`.
    fn string_from_pair(&mut self, pair: Pair<'_, Rule>) -> String {
        let body = pair.into_inner().next().expect("string body");
        let base = self.base + body.as_span().start();
        let raw = body.as_str();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some((_, e)) = chars.next() else { break };
            match e {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'u' => {
                    let rest = &raw[i + 2..];
                    let parsed = rest
                        .strip_prefix('{')
                        .and_then(|r| r.find('}').map(|end| &r[..end]))
                        .filter(|hex| !hex.is_empty() && hex.len() <= 6)
                        .and_then(|hex| u32::from_str_radix(hex, 16).ok().map(|n| (hex.len(), n)))
                        .and_then(|(len, n)| char::from_u32(n).map(|ch| (len, ch)));
                    match parsed {
                        Some((len, ch)) => {
                            out.push(ch);
                            for _ in 0..len + 2 {
                                chars.next();
                            }
                        }
                        None => {
                            self.errors
                                .push(DiagnosticKind::InvalidUnicodeEscape.at(Span::new(
                                    self.file,
                                    base + i,
                                    base + i + 2,
                                )))
                        }
                    }
                }
                other => self
                    .errors
                    .push(DiagnosticKind::UnknownEscape { ch: other }.at(Span::new(
                        self.file,
                        base + i,
                        base + i + 1 + other.len_utf8(),
                    ))),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file large enough to be parsed on several threads gives the same items and the same
    /// diagnostics, in file order, as the same items parsed one file each.
    #[test]
    fn a_large_file_parses_in_parallel_as_it_does_in_sequence() {
        let n = PARALLEL_ITEMS * 2 + 7;
        let bad = |i: usize| i == 3 || i == n / 2 || i == n - 1;
        let deep = |i: usize| i == n / 3;
        let mut text = String::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(text.len());
            if bad(i) {
                text.push_str(&format!("rule r{i} {{\n when peer.port == \n then os.family = \"X\" confidence 0.5\n}}\n"));
            } else if deep(i) {
                let d = crate::limits::MAX_RULE_NESTING + 1;
                text.push_str(&format!(
                    "rule r{i} {{\n when {}peer.port == 1{}\n then os.family = \"X\" confidence 0.5\n}}\n",
                    "(".repeat(d),
                    ")".repeat(d)
                ));
            } else {
                text.push_str(&format!(
                    "rule r{i} {{\n when peer.port == {}\n then os.family = \"X\" confidence 0.5\n}}\n",
                    i % 65_536
                ));
            }
        }
        let file: FileId = 0;
        let (parsed, errors) = parse_recovering(file, &text);
        assert_eq!(parsed.items.len(), n - 4);
        let names: Vec<String> = parsed
            .items
            .iter()
            .map(|it| match it {
                Item::Rule(r) => r.id.name.clone(),
                Item::List(l) => l.name.name.clone(),
            })
            .collect();
        let expected: Vec<String> = (0..n)
            .filter(|&i| !bad(i) && !deep(i))
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(names, expected);
        // One error per broken item, in file order, each inside its item; the same text as
        // when the item is parsed alone.
        assert_eq!(errors.len(), 4, "{errors:?}");
        let broken: Vec<usize> = (0..n).filter(|&i| bad(i) || deep(i)).collect();
        for (e, &i) in errors.iter().zip(&broken) {
            let at = e.primary_span().start as usize;
            let end = starts.get(i + 1).copied().unwrap_or(text.len());
            assert!(starts[i] <= at && at < end, "error of item {i} at {at}");
            let alone = &text[starts[i]..end];
            let (_, single) = parse_recovering(file, alone);
            assert_eq!(single.len(), 1);
            assert_eq!(single[0].message, e.message, "item {i}");
        }
    }
}
