//! Runs the fixtures of every bundled pack (`rules/<pack>/tests/*.yaml`) and checks that every
//! rule has at least one case in which it must fire.

use flowprint::compiler::Compiler;
use flowprint::diagnostic::Severity;
use flowprint::pack::{parse_fixtures, run_cases};
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn bundled_packs_compile_cleanly_and_pass_their_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut packs: Vec<_> = std::fs::read_dir(&root)
        .expect("rules/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    packs.sort();
    assert!(!packs.is_empty(), "no bundled packs under rules/");
    let mut problems = Vec::new();
    let mut cases_run = 0;
    for dir in packs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut c = Compiler::new();
        c.add_sources(&flowprint::sources::Sources::read(
            &flowprint::sources::Selection {
                paths: vec![dir.clone()],
                ..Default::default()
            },
        ));
        let compiled = c.compile();
        for d in &compiled.diagnostics {
            let sev = if d.severity() == Severity::Error {
                "error"
            } else {
                "warning"
            };
            problems.push(format!("{name}: {sev}: {}", d.render(&compiled.sources)));
        }
        let mut covered = BTreeSet::new();
        let mut fixtures: Vec<_> = std::fs::read_dir(dir.join("tests"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        fixtures.retain(|p: &std::path::PathBuf| {
            p.extension().is_some_and(|e| e == "yaml" || e == "yml")
        });
        fixtures.sort();
        for f in fixtures {
            let text = std::fs::read_to_string(&f).unwrap();
            let cases = match parse_fixtures(&text) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            for r in run_cases(&name, &compiled.ruleset, &cases) {
                cases_run += 1;
                covered.extend(r.rules.iter().cloned());
                for fail in r.failures {
                    problems.push(format!("{} / {}: {fail}", f.display(), r.name));
                }
            }
        }
        for rule in compiled.ruleset.rules() {
            let id = rule
                .id
                .strip_prefix(&format!("{name}/"))
                .unwrap_or(&rule.id);
            if !covered.contains(id) {
                problems.push(format!(
                    "{name}: rule `{id}` has no fixture case in which it must fire"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(cases_run > 0, "no fixture cases ran");
}
