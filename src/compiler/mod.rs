//! Rule sources → [`Ruleset`]. Resolves names, type-checks, lowers conditions to typed
//! [`Cond`]s and builds the indexes.
//!
//! All problems of all files are collected; a rule with an error is left out and every other
//! rule still compiles (yara-x / tera style).

mod lower;
mod stateful;
pub mod values;

use crate::ast::{self, Item, MetaValue};
use crate::diagnostic::{Code, Diagnostic, Severity, did_you_mean};
use crate::index::Index;
use crate::ruleset::{AddrSet, Attribute, Conclusion, DomainSet, Rule, Ruleset, Status};
use crate::schema::NumUnit;
use crate::span::{FileId, SourceMap, Span};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A list after checking, ready to be used by conditions.
#[derive(Debug, Clone)]
pub(crate) enum ListValue {
    Addresses(Arc<AddrSet>),
    Domains(Arc<DomainSet>),
    Ports(Vec<(u64, u64)>),
    /// Kept as literals: their unit is read with the field they are compared with.
    Numbers(Vec<ast::Value>),
}

impl ListValue {
    fn kind(&self) -> &'static str {
        match self {
            ListValue::Addresses(_) => "addresses",
            ListValue::Domains(_) => "domains",
            ListValue::Ports(_) => "ports",
            ListValue::Numbers(_) => "numbers",
        }
    }
}

pub(crate) struct ListEntry {
    pub(crate) value: Option<ListValue>,
    pub(crate) span: Span,
    pub(crate) used: std::cell::Cell<bool>,
}

struct Pack {
    name: String,
    files: Vec<(FileId, ast::File)>,
}

/// The mutable compiler: add sources, then [`Compiler::compile`].
#[derive(Default)]
pub struct Compiler {
    sources: SourceMap,
    packs: Vec<Pack>,
    diagnostics: Vec<Diagnostic>,
}

/// What compiling produced.
pub struct Compiled {
    /// The rules that compiled (all of them when there are no errors).
    pub ruleset: Ruleset,
    /// Errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
    /// The sources, for rendering diagnostics.
    pub sources: SourceMap,
}

impl Compiled {
    /// Number of error diagnostics.
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Error)
            .count()
    }

    /// Number of warning diagnostics.
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

const META_KEYS: &[&str] = &[
    "title",
    "description",
    "author",
    "version",
    "status",
    "references",
    "tags",
    "confidence",
];

impl Compiler {
    /// A compiler with no sources.
    pub fn new() -> Compiler {
        Compiler::default()
    }

    /// Adds one rule file to `pack` (lists are shared by the files of a pack) and parses it.
    pub fn add_source(&mut self, pack: &str, name: &str, text: &str) -> FileId {
        let id = self.sources.add(name, text);
        match crate::parser::parse(id, text) {
            Ok(file) => {
                let pack_idx = match self.packs.iter().position(|p| p.name == pack) {
                    Some(i) => i,
                    None => {
                        self.packs.push(Pack {
                            name: pack.to_string(),
                            files: Vec::new(),
                        });
                        self.packs.len() - 1
                    }
                };
                self.packs[pack_idx].files.push((id, file));
            }
            Err(errs) => self.diagnostics.extend(errs),
        }
        id
    }

    /// Adds a rule file (a pack of its own, named after the file) or a directory (one pack
    /// named after the directory, every `*.rules` file below it, in name order).
    pub fn add_path(&mut self, path: &Path) -> std::io::Result<usize> {
        let pack = pack_name(path);
        let files = rule_files(path)?;
        for f in &files {
            let text = std::fs::read(f)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", f.display())))?;
            self.add_bytes(&pack, &f.display().to_string(), &text);
        }
        Ok(files.len())
    }

    /// Adds one rule file given as bytes: text that is not UTF-8 is an error (FP0001-style I/O
    /// diagnostic) naming the first bad byte.
    pub fn add_bytes(&mut self, pack: &str, name: &str, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                self.add_source(pack, name, text);
            }
            Err(e) => {
                let id = self.sources.add(name.to_string(), "");
                self.diagnostics.push(Diagnostic::new(
                    Code::Io,
                    Span::new(id, 0, 0),
                    format!("{name} is not valid UTF-8 (byte {})", e.valid_up_to()),
                ));
            }
        }
    }

    /// Adds the packs embedded in the binary (`rules/` of the source tree).
    pub fn add_embedded(&mut self) {
        for (pack, name, text) in crate::embedded::FILES {
            self.add_source(pack, name, text);
        }
    }

    /// Checks and lowers everything added so far.
    pub fn compile(mut self) -> Compiled {
        let mut rules = Vec::new();
        let mut rule_spans = Vec::new();
        let packs = std::mem::take(&mut self.packs);
        for pack in &packs {
            self.compile_pack(pack, &mut rules, &mut rule_spans);
        }
        let conds: Vec<_> = rules.iter().map(|r: &Rule| &r.cond).collect();
        let index = Index::build(&conds);
        for &r in &index.unindexed {
            let rule = &rules[r as usize];
            self.diagnostics.push(
                Diagnostic::new(
                    Code::NotIndexable,
                    rule_spans[r as usize],
                    format!("rule `{}` cannot be indexed and is checked against every flow", rule.id),
                )
                .hint("add a condition on `peer.addr`, `peer.domain`, `peer.port`, or a bounded byte count, joined with `and`"),
            );
        }
        let sources = self.sources;
        let mut diagnostics = self.diagnostics;
        diagnostics.sort_by_key(|d| {
            let s = d.primary_span();
            (s.file, s.start)
        });
        Compiled {
            ruleset: Ruleset {
                conds: rules.iter().map(|r| r.cond.clone()).collect(),
                rules,
                index,
            },
            diagnostics,
            sources,
        }
    }

    fn compile_pack(&mut self, pack: &Pack, rules: &mut Vec<Rule>, spans: &mut Vec<Span>) {
        let mut lists: HashMap<String, ListEntry> = HashMap::new();
        for (_, file) in &pack.files {
            for item in &file.items {
                if let Item::List(decl) = item {
                    if let Some(prev) = lists.get(&decl.name.name) {
                        self.diagnostics.push(
                            Diagnostic::new(
                                Code::DuplicateList,
                                decl.name.span,
                                format!(
                                    "list `{}` is defined twice in pack `{}`",
                                    decl.name.name, pack.name
                                ),
                            )
                            .secondary(prev.span, "first defined here")
                            .hint("rename one of them; lists are shared by all files of a pack"),
                        );
                        continue;
                    }
                    let value = self.list_from_decl(decl);
                    lists.insert(
                        decl.name.name.clone(),
                        ListEntry {
                            value,
                            span: decl.name.span,
                            used: Default::default(),
                        },
                    );
                }
            }
        }
        let mut ids: HashMap<String, Span> = HashMap::new();
        for (file_id, file) in &pack.files {
            for item in &file.items {
                let Item::Rule(decl) = item else { continue };
                if let Some(prev) = ids.get(&decl.id.name) {
                    self.diagnostics.push(
                        Diagnostic::new(
                            Code::DuplicateRule,
                            decl.id.span,
                            format!(
                                "rule id `{}` is used twice in pack `{}`",
                                decl.id.name, pack.name
                            ),
                        )
                        .secondary(*prev, "first used here")
                        .hint("ids name the evidence a rule produces; give each rule its own"),
                    );
                    continue;
                }
                ids.insert(decl.id.name.clone(), decl.id.span);
                let (line, _) = self.sources.line_col(*file_id, decl.span.start);
                let location = format!("{}:{line}", self.sources.get(*file_id).name);
                let mut errs = Vec::new();
                if let Some(rule) = rule_from_decl(&pack.name, decl, &lists, location, &mut errs) {
                    rules.push(rule);
                    spans.push(decl.id.span);
                }
                self.diagnostics.extend(errs);
            }
        }
        let mut unused: Vec<(&String, &ListEntry)> = lists
            .iter()
            .filter(|(_, l)| !l.used.get() && l.value.is_some())
            .collect();
        unused.sort_by_key(|(_, l)| (l.span.file, l.span.start));
        for (name, l) in unused {
            self.diagnostics.push(
                Diagnostic::new(
                    Code::UnusedList,
                    l.span,
                    format!("list `{name}` is never used"),
                )
                .hint("remove it, or refer to it from a rule: `peer.domain in NAME`"),
            );
        }
    }

    fn list_from_decl(&mut self, decl: &ast::ListDecl) -> Option<ListValue> {
        let kinds = ["addresses", "domains", "ports", "numbers"];
        let mut errs = Vec::new();
        let value = match decl.kind.name.as_str() {
            "addresses" => {
                let ranges = decl
                    .values
                    .iter()
                    .filter_map(|v| values::addr_range(v).map_err(|e| errs.push(e)).ok())
                    .collect();
                ListValue::Addresses(Arc::new(AddrSet::from_ranges(ranges)))
            }
            "domains" => {
                let mut set = DomainSet::default();
                for v in &decl.values {
                    match values::domain_pattern(v) {
                        Ok((true, n)) => {
                            set.suffixes.insert(n.into());
                        }
                        Ok((false, n)) => {
                            set.exact.insert(n.into());
                        }
                        Err(e) => errs.push(e),
                    }
                }
                ListValue::Domains(Arc::new(set))
            }
            "ports" => ListValue::Ports(
                decl.values
                    .iter()
                    .filter_map(|v| {
                        values::number_range(v, NumUnit::Port)
                            .map_err(|e| errs.push(e))
                            .ok()
                    })
                    .collect(),
            ),
            "numbers" => {
                for v in &decl.values {
                    if !matches!(
                        &v.kind,
                        ast::ValueKind::Quantity { .. } | ast::ValueKind::Range(..)
                    ) {
                        errs.push(Diagnostic::new(
                            Code::InvalidList,
                            v.span,
                            format!(
                                "a `numbers` list holds numbers and ranges, found {}",
                                values::describe(v)
                            ),
                        ));
                    }
                }
                ListValue::Numbers(decl.values.clone())
            }
            other => {
                let mut d = Diagnostic::new(
                    Code::InvalidList,
                    decl.kind.span,
                    format!("unknown list kind `{other}`"),
                );
                d = match did_you_mean(other, kinds) {
                    Some(k) => d.hint(format!("did you mean `{k}`?")),
                    None => d.hint("list kinds are `addresses`, `domains`, `ports` and `numbers`"),
                };
                errs.push(d);
                self.diagnostics.extend(errs);
                return None;
            }
        };
        if decl.values.is_empty() {
            errs.push(
                Diagnostic::new(
                    Code::InvalidRange,
                    decl.span,
                    format!("list `{}` is empty", decl.name.name),
                )
                .hint("an empty list matches nothing"),
            );
        }
        let ok = errs.is_empty();
        self.diagnostics.extend(errs);
        ok.then_some(value)
    }
}

/// The pack a rule path belongs to: the directory's or the file's name without extension.
pub fn pack_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rules".into())
}

/// The rule files of a path: the file itself, or every `*.rules` file below a directory, in
/// name order.
pub fn rule_files(path: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    if path.is_dir() {
        collect_rule_files(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

fn collect_rule_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            collect_rule_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "rules") {
            out.push(p);
        }
    }
    Ok(())
}

fn parse_confidence(text: &str, span: Span) -> Result<f64, Diagnostic> {
    match text.parse::<f64>() {
        Ok(c) if c > 0.0 && c <= 1.0 => Ok(c),
        _ => Err(Diagnostic::new(
            Code::InvalidConfidence,
            span,
            format!("confidence `{text}` is not in (0, 1]"),
        )
        .hint("a confidence is a probability, e.g. `0.8`")),
    }
}

fn rule_from_decl(
    pack: &str,
    decl: &ast::RuleDecl,
    lists: &HashMap<String, ListEntry>,
    location: String,
    errs: &mut Vec<Diagnostic>,
) -> Option<Rule> {
    let before = errs.len();
    let mut rule = Rule {
        id: format!("{pack}/{}", decl.id.name),
        title: None,
        description: None,
        author: None,
        version: None,
        status: Status::default(),
        references: Vec::new(),
        tags: Vec::new(),
        conclusions: Vec::new(),
        cond: crate::ruleset::Cond::And(Box::new([])),
        stateful: None,
        location,
    };
    let mut default_confidence = None;
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for m in &decl.meta {
        let key = m.key.name.as_str();
        if let Some(prev) = seen.insert(key, m.key.span) {
            errs.push(
                Diagnostic::new(
                    Code::InvalidMetadata,
                    m.key.span,
                    format!("`{key}` is given twice"),
                )
                .secondary(prev, "first given here"),
            );
            continue;
        }
        let want = |what: &str| {
            Diagnostic::new(
                Code::InvalidMetadata,
                m.value_span,
                format!("`{key}` takes {what}"),
            )
        };
        match (key, &m.value) {
            ("title", MetaValue::Str(s)) => rule.title = Some(s.clone()),
            ("description", MetaValue::Str(s)) => rule.description = Some(s.clone()),
            ("author", MetaValue::Str(s)) => rule.author = Some(s.clone()),
            ("version", MetaValue::Str(s) | MetaValue::Number(s)) => rule.version = Some(s.clone()),
            ("status", MetaValue::Word(w)) => match w.as_str() {
                "experimental" => rule.status = Status::Experimental,
                "test" => rule.status = Status::Test,
                "stable" => rule.status = Status::Stable,
                _ => errs.push(want("`experimental`, `test` or `stable`")),
            },
            ("references", MetaValue::List(l)) => {
                rule.references = l.iter().map(|(s, _)| s.clone()).collect()
            }
            ("references", MetaValue::Str(s)) => rule.references = vec![s.clone()],
            ("tags", MetaValue::List(l)) => rule.tags = l.iter().map(|(s, _)| s.clone()).collect(),
            ("confidence", MetaValue::Number(n)) => match parse_confidence(n, m.value_span) {
                Ok(c) => default_confidence = Some(c),
                Err(e) => errs.push(e),
            },
            ("title" | "description" | "author", _) => errs.push(want("a string in double quotes")),
            ("version", _) => errs.push(want("a string or a number")),
            ("status", _) => errs.push(want("`experimental`, `test` or `stable`")),
            ("references" | "tags", _) => errs.push(want("a list of strings: [\"...\", \"...\"]")),
            ("confidence", _) => errs.push(want("a number in (0, 1]")),
            _ => {
                let mut d = Diagnostic::new(
                    Code::InvalidMetadata,
                    m.key.span,
                    format!("unknown metadata key `{key}`"),
                );
                d = match did_you_mean(key, META_KEYS.iter().copied()) {
                    Some(k) => d.hint(format!("did you mean `{k}`?")),
                    None => d.hint(format!("known keys: {}", META_KEYS.join(", "))),
                };
                errs.push(d);
            }
        }
    }
    if let Some(over) = &decl.over {
        match stateful::lower_over(over) {
            Ok(s) => rule.stateful = Some(s),
            Err(mut e) => errs.append(&mut e),
        }
    }
    for c in &decl.then {
        let Some(attribute) = Attribute::NAMES
            .iter()
            .find(|(n, _)| *n == c.target.name)
            .map(|&(_, a)| a)
        else {
            let mut d = Diagnostic::new(
                Code::UnknownConclusion,
                c.target.span,
                format!("unknown conclusion `{}`", c.target.name),
            );
            let names = Attribute::NAMES.iter().map(|(n, _)| *n);
            d = match did_you_mean(&c.target.name, names) {
                Some(n) => d.hint(format!("did you mean `{n}`?")),
                None => d.hint(
                    "a rule concludes `os.family`, `os.name`, `os.version`, `software` or `device`",
                ),
            };
            errs.push(d);
            continue;
        };
        if let (Some((_, vspan)), false) = (&c.version, attribute == Attribute::Software) {
            errs.push(
                Diagnostic::new(
                    Code::UnknownConclusion,
                    *vspan,
                    "`version` only qualifies `software`",
                )
                .hint("for an operating system, conclude `os.version = \"...\"`"),
            );
            continue;
        }
        if c.value.trim().is_empty() {
            errs.push(Diagnostic::new(
                Code::UnknownConclusion,
                c.value_span,
                "a conclusion needs a non-empty label",
            ));
            continue;
        }
        let confidence = match &c.confidence {
            Some((text, span)) => match parse_confidence(text, *span) {
                Ok(x) => x,
                Err(e) => {
                    errs.push(e);
                    continue;
                }
            },
            None => match default_confidence {
                Some(x) => x,
                None => {
                    errs.push(
                        Diagnostic::new(Code::InvalidConfidence, c.span, "this conclusion has no confidence")
                            .hint("add `confidence 0.8` after the conclusion, or a `confidence` entry to the rule"),
                    );
                    continue;
                }
            },
        };
        rule.conclusions.push(Conclusion {
            attribute,
            value: c.value.clone(),
            version: c.version.as_ref().map(|(v, _)| v.clone()),
            confidence,
        });
    }
    match lower::lower(&decl.when, lists) {
        Ok(cond) => rule.cond = cond,
        Err(mut e) => errs.append(&mut e),
    }
    (errs.len() == before).then_some(rule)
}
