//! Golden tests per stage, driven by files under `tests/data/`:
//! - `parse/*.rules`  → `.ast`  (the syntax tree, or the syntax errors)
//! - `errors/*.rules` → `.err`  (every diagnostic of compiling the file, rendered)
//! - `eval/*.rules` + `*.flows` → `.out` (one JSON host summary per line)
//!
//! Regenerate with `UPDATE_GOLDEN=1 cargo test --test golden`, then review the diff.

use flowprint::compiler::Compiler;
use flowprint::eval::LocalNets;
use flowprint::flow::ingest::{InputFormat, read_flows};
use flowprint::infer::HostTable;
use flowprint::scan::Scanner;
use flowprint::span::SourceMap;
use std::path::{Path, PathBuf};

fn data(dir: &str) -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no cases in {}", d.display());
    v
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs.\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(_) => failures.push(format!(
            "{} is missing; run with UPDATE_GOLDEN=1",
            path.display()
        )),
    }
}

fn file_name(p: &Path) -> String {
    format!(
        "tests/data/{}/{}",
        p.parent().unwrap().file_name().unwrap().to_string_lossy(),
        p.file_name().unwrap().to_string_lossy()
    )
}

#[test]
fn parse_golden() {
    let mut failures = Vec::new();
    for path in data("parse") {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut sources = SourceMap::default();
        let id = sources.add(file_name(&path), text.as_str());
        let actual = match flowprint::parser::parse(id, &text) {
            Ok(ast) => format!("{ast:#?}\n"),
            Err(errs) => errs.iter().map(|d| d.render(&sources)).collect(),
        };
        check_golden(&path.with_extension("ast"), &actual, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_golden() {
    let mut failures = Vec::new();
    for path in data("errors") {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut c = Compiler::new();
        c.add_source("test", &file_name(&path), &text);
        let compiled = c.compile();
        assert!(
            !compiled.diagnostics.is_empty(),
            "{} produced no diagnostics",
            path.display()
        );
        let mut actual: String = compiled
            .diagnostics
            .iter()
            .map(|d| d.render(&compiled.sources))
            .collect();
        actual.push_str(&format!("-- {} rule(s) compiled\n", compiled.ruleset.len()));
        check_golden(&path.with_extension("err"), &actual, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn eval_golden() {
    let mut failures = Vec::new();
    for path in data("eval") {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut c = Compiler::new();
        c.add_source("test", &file_name(&path), &text);
        let compiled = c.compile();
        assert_eq!(compiled.errors(), 0, "{} does not compile", path.display());
        let flows_path = path.with_extension("flows");
        let flows =
            std::fs::read(&flows_path).unwrap_or_else(|e| panic!("{}: {e}", flows_path.display()));
        // As `analyze` applies them: names the records carry are learned.
        let mut inv = Scanner::new(
            compiled.ruleset.clone(),
            std::sync::Arc::new(LocalNets::default()),
            HostTable::new(),
        );
        let mut dns = flowprint::dns::DnsMap::new();
        let mut errors = Vec::new();
        read_flows(
            flows.as_slice(),
            "flows",
            InputFormat::Auto,
            &mut |f| {
                inv.apply_learning(&f, &mut dns);
            },
            &mut |e| errors.push(e.to_string()),
        )
        .unwrap();
        let mut actual = String::new();
        for e in errors {
            actual.push_str(&format!("skipped: {e}\n"));
        }
        for s in inv.hosts().summaries(&compiled.ruleset) {
            actual.push_str(&serde_json::to_string(&s).unwrap());
            actual.push('\n');
        }
        check_golden(&path.with_extension("out"), &actual, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
