//! Rule sources → [`Ruleset`]. Resolves names, type-checks, lowers conditions to typed
//! [`Cond`](crate::ruleset::Cond)s and builds the indexes.
//!
//! All problems of all files are collected; a rule with an error is left out and every other
//! rule still compiles (yara-x / tera style).

mod lower;
mod stateful;
pub mod values;

use crate::ast::{self, Item, MetaValue};
use crate::diagnostic::{Diagnostic, DiagnosticKind, Severity, did_you_mean};
use crate::ruleset::{AddrSet, Attribute, Conclusion, DomainSet, Rule, Ruleset, Status};
use crate::schema::NumUnit;
use crate::sources::{ManifestSource, Problem, Sources};
use crate::span::{FileId, SourceMap, Span};
use std::collections::HashMap;
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
    pub(crate) used: std::rc::Rc<std::cell::Cell<bool>>,
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
    /// Local overrides and the file they came from.
    overrides: Option<(FileId, crate::sources::overrides::Overrides)>,
    /// The manifests of the packs added with one, for the dependency check.
    manifests: Vec<(FileId, crate::sources::manifest::Manifest)>,
}

/// What compiling produced.
pub struct Compiled {
    /// The rules that compiled (all of them when there are no errors), shared by whoever
    /// applies them ([`crate::scan::Scanner`]).
    pub ruleset: std::sync::Arc<Ruleset>,
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
        // The items that parse are compiled even when others of the file do not.
        let (file, errors) = crate::parser::parse_recovering(id, text);
        self.diagnostics.extend(errors);
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
        id
    }

    /// Adds everything a [`Sources`] read: its manifests, rule files and overrides, and what
    /// it could not read as diagnostics — an unreadable path or file an error (FP0019), an
    /// entry a directory walk skipped a warning (FP0025) — in the order they were read.
    pub fn add_sources(&mut self, sources: &Sources) {
        for m in &sources.manifests {
            self.add_manifest(m);
        }
        let mut problems = sources.problems.iter().peekable();
        for (i, f) in sources.files.iter().enumerate() {
            while let Some((_, p)) = problems.next_if(|(at, _)| *at <= i) {
                self.add_problem(p);
            }
            self.add_source(&f.pack, &f.name, &f.text);
        }
        for (_, p) in problems {
            self.add_problem(p);
        }
        if let Some((name, text)) = &sources.overrides {
            self.add_overrides(name, text);
        }
    }

    fn add_problem(&mut self, p: &Problem) {
        match p {
            Problem::Unreadable { path, reason } => {
                let id = self.sources.add(path.clone(), "");
                self.diagnostics
                    .push(DiagnosticKind::Unreadable { reason }.at(Span::new(id, 0, 0)));
            }
            Problem::Skipped { path, reason } => {
                let id = self.sources.add(path.clone(), "");
                self.diagnostics
                    .push(DiagnosticKind::Skipped { path, reason }.at(Span::new(id, 0, 0)));
            }
        }
    }

    /// Applies a local overrides file (`docs/packs.md`) to the rules compiled: disabled rules
    /// are left out, modified confidences replace the rules' own. An invalid file is an error
    /// (FP0022) and changes nothing; an entry naming no loaded rule is a warning (FP0023).
    pub fn add_overrides(&mut self, name: &str, text: &str) {
        let id = self.sources.add(name, text);
        match crate::sources::overrides::Overrides::parse(text) {
            Ok(o) => self.overrides = Some((id, o)),
            Err(e) => {
                // Where the YAML parser stopped (or the entry at fault).
                let start = e.offset.unwrap_or(0).min(text.len());
                self.diagnostics.push(
                    DiagnosticKind::InvalidOverrides {
                        error: &e.to_string(),
                    }
                    .at(Span::new(id, start, start)),
                );
            }
        }
    }

    /// Adds a pack's `pack.yaml` as parsed by [`Sources`]: checked (FP0024 when invalid or
    /// made for another flowprint version), and its dependencies checked against the other
    /// packs when compiling.
    fn add_manifest(&mut self, source: &ManifestSource) {
        let (file, text) = (source.file.as_str(), source.text.as_str());
        match &source.parsed {
            Ok(m) => {
                let id = self.sources.add(file, text);
                if !m.engine_ok() {
                    let start = text.find("flowprint:").unwrap_or(0);
                    self.diagnostics.push(
                        DiagnosticKind::PackNeedsFlowprint {
                            pack: &m.name,
                            version: &m.version.to_string(),
                            needs: &m.flowprint.to_string(),
                        }
                        .at(Span::new(id, start, start)),
                    );
                }
                self.manifests.push((id, m.clone()));
            }
            Err(e) => self.add_pack_error(file, text, e.message.clone()),
        }
    }

    /// Reports a pack-level problem (manifest, engine version, dependencies) found by whoever
    /// loads the pack, as an FP0024 error on `file` (usually its `pack.yaml`).
    pub fn add_pack_error(&mut self, file: &str, text: &str, message: String) {
        let id = self.sources.add(file, text);
        self.diagnostics
            .push(DiagnosticKind::InvalidManifest { message: &message }.at(Span::new(id, 0, 0)));
    }

    /// Checks and lowers everything added so far.
    pub fn compile(mut self) -> Compiled {
        let mut rules = Vec::new();
        let mut rule_spans = Vec::new();
        let packs = std::mem::take(&mut self.packs);
        // Every pack's lists, by qualified name (`pack/list`): a pack uses its own by their
        // plain names and other packs' by qualified names.
        let mut exported: HashMap<String, ListEntry> = HashMap::new();
        for pack in &packs {
            for (_, file) in &pack.files {
                for item in &file.items {
                    if let Item::List(decl) = item {
                        let key = format!("{}/{}", pack.name, decl.name.name);
                        if exported.contains_key(&key) {
                            continue; // reported as a duplicate by compile_pack
                        }
                        let value = self.list_from_decl(decl);
                        exported.insert(
                            key,
                            ListEntry {
                                value,
                                span: decl.name.span,
                                used: Default::default(),
                            },
                        );
                    }
                }
            }
        }
        for pack in &packs {
            self.compile_pack(pack, &exported, &mut rules, &mut rule_spans);
        }
        let mut unused: Vec<(&String, &ListEntry)> = exported
            .iter()
            .filter(|(_, l)| !l.used.get() && l.value.is_some())
            .collect();
        unused.sort_by_key(|(_, l)| (l.span.file, l.span.start));
        for (name, l) in unused {
            let plain = name.split_once('/').map_or(name.as_str(), |(_, n)| n);
            self.diagnostics
                .push(DiagnosticKind::UnusedList { name: plain }.at(l.span));
        }
        self.check_dependencies();
        if let Some((file, o)) = self.overrides.take() {
            self.apply_overrides(file, &o, &mut rules, &mut rule_spans);
        }
        let ruleset = Ruleset::build(rules);
        for &r in &ruleset.index.unindexed {
            // A transfer group's gate is filed past the rules: name its first rule.
            let r = match r.checked_sub(ruleset.rules.len() as u32) {
                None => r,
                Some(g) => ruleset.transfer_groups[g as usize]
                    .sizes
                    .first()
                    .map_or(0, |&(_, _, r)| r),
            };
            let rule = &ruleset.rules[r as usize];
            self.diagnostics
                .push(DiagnosticKind::NotIndexable { rule: &rule.id }.at(rule_spans[r as usize]));
        }
        let sources = self.sources;
        let mut diagnostics = self.diagnostics;
        diagnostics.sort_by_key(|d| {
            let s = d.primary_span();
            (s.file, s.start)
        });
        Compiled {
            ruleset: std::sync::Arc::new(ruleset),
            diagnostics,
            sources,
        }
    }

    fn compile_pack(
        &mut self,
        pack: &Pack,
        exported: &HashMap<String, ListEntry>,
        rules: &mut Vec<Rule>,
        spans: &mut Vec<Span>,
    ) {
        let mut lists: HashMap<String, ListEntry> = HashMap::new();
        for (_, file) in &pack.files {
            for item in &file.items {
                if let Item::List(decl) = item {
                    if let Some(prev) = lists.get(&decl.name.name) {
                        self.diagnostics.push(
                            DiagnosticKind::DuplicateList {
                                name: &decl.name.name,
                                pack: &pack.name,
                            }
                            .at(decl.name.span)
                            .secondary(prev.span, "first defined here"),
                        );
                        continue;
                    }
                    if let Some(e) = exported.get(&format!("{}/{}", pack.name, decl.name.name)) {
                        lists.insert(
                            decl.name.name.clone(),
                            ListEntry {
                                value: e.value.clone(),
                                span: e.span,
                                used: e.used.clone(),
                            },
                        );
                    }
                }
            }
        }
        for (key, e) in exported {
            lists.insert(
                key.clone(),
                ListEntry {
                    value: e.value.clone(),
                    span: e.span,
                    used: e.used.clone(),
                },
            );
        }
        let mut ids: HashMap<String, Span> = HashMap::new();
        for (file_id, file) in &pack.files {
            for item in &file.items {
                let Item::Rule(decl) = item else { continue };
                if let Some(prev) = ids.get(&decl.id.name) {
                    self.diagnostics.push(
                        DiagnosticKind::DuplicateRule {
                            id: &decl.id.name,
                            pack: &pack.name,
                        }
                        .at(decl.id.span)
                        .secondary(*prev, "first used here"),
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
    }

    fn check_dependencies(&mut self) {
        let manifests = std::mem::take(&mut self.manifests);
        for (file, m) in &manifests {
            let text = self.sources.get(*file).text.clone();
            for (dep, req) in &m.depends {
                let start = text.find(dep.as_str()).unwrap_or(0);
                let span = Span::new(*file, start, start + if start == 0 { 0 } else { dep.len() });
                let req_text = &req.to_string();
                let d = match manifests.iter().find(|(_, o)| o.name == *dep) {
                    None => DiagnosticKind::MissingDependency {
                        pack: &m.name,
                        dep,
                        req: req_text,
                    }
                    .at(span),
                    Some((_, o)) if !crate::sources::manifest::req_matches(req, &o.version) => {
                        DiagnosticKind::DependencyVersion {
                            pack: &m.name,
                            dep,
                            req: req_text,
                            loaded: &o.version.to_string(),
                        }
                        .at(span)
                    }
                    Some(_) => continue,
                };
                self.diagnostics.push(d);
            }
        }
        self.manifests = manifests;
    }

    fn apply_overrides(
        &mut self,
        file: FileId,
        o: &crate::sources::overrides::Overrides,
        rules: &mut Vec<Rule>,
        spans: &mut Vec<Span>,
    ) {
        use crate::sources::overrides::matches;
        let text = self.sources.get(file).text.clone();
        let mut unmatched: Vec<&str> = Vec::new();
        for d in &o.disable {
            if !rules.iter().any(|r| matches(d, &r.id)) {
                unmatched.push(d);
            }
        }
        for id in o.modify.keys() {
            if !rules.iter().any(|r| r.id == *id) {
                unmatched.push(id);
            }
        }
        for u in unmatched {
            let start = text.find(u).unwrap_or(0);
            self.diagnostics
                .push(DiagnosticKind::UnmatchedOverride { entry: u }.at(Span::new(
                    file,
                    start,
                    start + if start == 0 { 0 } else { u.len() },
                )));
        }
        let mut keep = Vec::with_capacity(rules.len());
        for (rule, span) in rules.drain(..).zip(spans.drain(..)) {
            if o.disables(&rule.id) {
                continue;
            }
            keep.push((rule, span));
        }
        for (mut rule, span) in keep {
            if let Some(c) = o.modify.get(&rule.id).and_then(|m| m.confidence) {
                for k in &mut rule.conclusions {
                    k.confidence = c;
                }
            }
            rules.push(rule);
            spans.push(span);
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
                        errs.push(
                            DiagnosticKind::NumbersListValue {
                                found: &values::describe(v),
                            }
                            .at(v.span),
                        );
                    }
                }
                ListValue::Numbers(decl.values.clone())
            }
            other => {
                errs.push(
                    DiagnosticKind::UnknownListKind {
                        kind: other,
                        suggestion: did_you_mean(other, kinds),
                    }
                    .at(decl.kind.span),
                );
                self.diagnostics.extend(errs);
                return None;
            }
        };
        if decl.values.is_empty() {
            errs.push(
                DiagnosticKind::EmptyList {
                    name: &decl.name.name,
                }
                .at(decl.span),
            );
        }
        let ok = errs.is_empty();
        self.diagnostics.extend(errs);
        ok.then_some(value)
    }
}

fn parse_confidence(text: &str, span: Span) -> Result<f64, Diagnostic> {
    match text.parse::<f64>() {
        Ok(c) if c > 0.0 && c <= 1.0 => Ok(c),
        _ => Err(DiagnosticKind::ConfidenceOutOfRange { text }.at(span)),
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
                DiagnosticKind::MetadataTwice { key }
                    .at(m.key.span)
                    .secondary(prev, "first given here"),
            );
            continue;
        }
        let wrong_value = || DiagnosticKind::MetadataValue { key }.at(m.value_span);
        match (key, &m.value) {
            ("title", MetaValue::Str(s)) => rule.title = Some(s.clone()),
            ("description", MetaValue::Str(s)) => rule.description = Some(s.clone()),
            ("author", MetaValue::Str(s)) => rule.author = Some(s.clone()),
            ("version", MetaValue::Str(s) | MetaValue::Number(s)) => rule.version = Some(s.clone()),
            ("status", MetaValue::Word(w)) => match w.as_str() {
                "experimental" => rule.status = Status::Experimental,
                "test" => rule.status = Status::Test,
                "stable" => rule.status = Status::Stable,
                _ => errs.push(wrong_value()),
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
            (
                "title" | "description" | "author" | "version" | "status" | "references" | "tags"
                | "confidence",
                _,
            ) => errs.push(wrong_value()),
            _ => errs.push(
                DiagnosticKind::UnknownMetadataKey {
                    key,
                    suggestion: did_you_mean(key, META_KEYS.iter().copied()),
                    known: META_KEYS,
                }
                .at(m.key.span),
            ),
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
            let names = Attribute::NAMES.iter().map(|(n, _)| *n);
            errs.push(
                DiagnosticKind::UnknownConclusion {
                    name: &c.target.name,
                    suggestion: did_you_mean(&c.target.name, names),
                }
                .at(c.target.span),
            );
            continue;
        };
        if let (Some((_, vspan)), false) = (&c.version, attribute == Attribute::Software) {
            errs.push(DiagnosticKind::VersionNotSoftware.at(*vspan));
            continue;
        }
        if c.value.trim().is_empty() {
            errs.push(DiagnosticKind::EmptyConclusion.at(c.value_span));
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
                    errs.push(DiagnosticKind::MissingConfidence.at(c.span));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiler_points_its_diagnostic_there() {
        let mut c = Compiler::new();
        let text = "disable:\n  - os-core/a\nmodify: [oops\n";
        c.add_overrides("o.yaml", text);
        let compiled = c.compile();
        let d = compiled
            .diagnostics
            .iter()
            .find(|d| d.code == crate::diagnostic::Code::InvalidOverrides)
            .expect("FP0022");
        assert_eq!(
            d.primary_span().start as usize,
            text.find("modify").unwrap()
        );
    }
}
