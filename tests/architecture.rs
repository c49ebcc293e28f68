//! The house's rule that dependencies run one way (docs/architecture.md): no module of `src/`
//! uses, through `crate::` or `super::` paths, a module that uses it — at the top level
//! (`compiler`, `flow`, …) and one level down (`flow::ingest`, `serve::api`, …). Test code is
//! left out (`#[cfg(test)]` and `tests.rs` files may reach anywhere).

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file is, as path segments (`src/flow/ingest/mod.rs` → `flow, ingest`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules (lowercase names) a path prefix reaches: `crate::a::b`, `crate::{a, b::c}`.
fn targets(re_single: &Regex, re_group: &Regex, prefix: &str, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for c in re_single.captures_iter(code) {
        if &c[1] == prefix {
            out.push(c[2].split("::").map(str::to_string).collect());
        }
    }
    for c in re_group.captures_iter(code) {
        if &c[1] != prefix {
            continue;
        }
        for item in c[2].split(',') {
            let path: Vec<String> = item
                .trim()
                .split("::")
                .take_while(|s| s.chars().next().is_some_and(|ch| ch.is_ascii_lowercase()))
                .map(str::to_string)
                .collect();
            if !path.is_empty() && path[0] != "self" {
                out.push(path);
            }
        }
    }
    out
}

fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components.
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl T<'_> {
        fn visit(&mut self, v: &str) {
            self.index.insert(v.to_string(), self.next);
            self.low.insert(v.to_string(), self.next);
            self.next += 1;
            self.stack.push(v.to_string());
            self.on.insert(v.to_string());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[v].min(self.low[w]);
                    self.low.insert(v.to_string(), l);
                } else if self.on.contains(w) {
                    let l = self.low[v].min(self.index[w]);
                    self.low.insert(v.to_string(), l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on.remove(&w);
                    let done = w == v;
                    comp.push(w);
                    if done {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn no_module_uses_a_module_that_uses_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let re_single =
        Regex::new(r"\b(crate|super)::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)").unwrap();
    let re_group = Regex::new(r"\b(crate|super)::\{([^}]*)\}").unwrap();
    let mut report = Vec::new();
    for depth in [1, 2] {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy();
            if name == "tests.rs" || name.starts_with("tests_") {
                continue;
            }
            let m = module_of(&src, f);
            if m.is_empty() || m[0] == "main" || m[0] == "lib" {
                continue;
            }
            let text = code(&std::fs::read_to_string(f).unwrap());
            // The binary's modules (`cli::x`) are a tree of their own beside the library's.
            let (me, crate_root): (Vec<String>, Vec<String>) = if m[0] == "cli" {
                (m.iter().take(2).cloned().collect(), vec!["cli".to_string()])
            } else {
                (m.iter().take(depth).cloned().collect(), Vec::new())
            };
            let parent: Vec<String> = m[..m.len().saturating_sub(1)].to_vec();
            let mut add = |full: Vec<String>| {
                let key: Vec<String> = if full.first().is_some_and(|s| s == "cli") {
                    full.iter().take(2).cloned().collect()
                } else {
                    full.iter().take(depth).cloned().collect()
                };
                // A module using its own parts, or its parent, is not a dependency between two.
                let within = key.starts_with(&me) || me.starts_with(&key);
                if !key.is_empty() && !within {
                    edges
                        .entry(me.join("::"))
                        .or_default()
                        .insert(key.join("::"));
                }
            };
            for t in targets(&re_single, &re_group, "crate", &text) {
                let mut full = crate_root.clone();
                full.extend(t);
                add(full);
            }
            for t in targets(&re_single, &re_group, "super", &text) {
                let mut full = parent.clone();
                full.extend(t);
                add(full);
            }
        }
        for c in cycles(&edges) {
            let inside: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    edges[a]
                        .iter()
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            report.push(format!(
                "depth {depth}: {} ({})",
                c.join(", "),
                inside.join("; ")
            ));
        }
        assert!(
            edges.len() > 10,
            "the scan found the modules' dependencies (depth {depth}: {})",
            edges.len()
        );
    }
    assert!(report.is_empty(), "module cycles:\n{}", report.join("\n"));
}
