//! Nesting: the input drives a generator of deeply nested conditions, sets and lists
//! (parentheses, `not`, brackets, braces, unclosed and stray closers, strings and comments that
//! hide brackets), up to 100 times the nesting limit. The compiler runs on a thread with a
//! small stack (256 KiB), so that recursion beyond the limit would overflow it at once. Oracles:
//! no stack overflow or panic; a rule nested deeper than the limit is refused with the
//! "nested more than" diagnostic and never compiles; the other rules of the file still do.
#![no_main]

use flowprint::compiler::Compiler;
use libfuzzer_sys::fuzz_target;

const GOOD: &str = "\nrule fuzz-good { when peer.port == 81 then software = \"G\" confidence 0.5 }\n";

fn generate(data: &[u8]) -> (String, usize) {
    let mut s = String::from("rule fuzz-deep {\n when ");
    let mut depth = 1usize; // the rule's `{`
    let mut max = depth;
    let mut closers: Vec<&str> = Vec::new();
    for &b in data {
        let reps = 1 + (b >> 4) as usize * 8;
        for _ in 0..reps {
            match b & 0x0f {
                0..=3 => {
                    s.push('(');
                    closers.push(")");
                    depth += 1;
                }
                4 | 5 => s.push_str("not "),
                6 => {
                    s.push_str("peer.port in {");
                    closers.push("}");
                    depth += 1;
                }
                7 => s.push_str("\"(((\" "),
                8 => s.push_str("# ((((\n"),
                9 => s.push_str("peer.port == 80 and "),
                10 => {
                    if let Some(c) = closers.pop() {
                        s.push_str(c);
                        depth -= 1;
                    }
                }
                11 => s.push_str("not not not "),
                12 => s.push_str("matches /((/ "),
                _ => s.push('['),
            }
            max = max.max(depth);
        }
    }
    s.push_str("peer.port == 80");
    while let Some(c) = closers.pop() {
        s.push_str(c);
    }
    s.push_str("\n then software = \"D\" confidence 0.5\n}\n");
    s.push_str(GOOD);
    (s, max)
}

fuzz_target!(|data: &[u8]| {
    let (text, max) = generate(data);
    let result = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut c = Compiler::new();
            c.add_source("fuzz", "nesting.rules", &text);
            let compiled = c.compile();
            let nested = compiled
                .diagnostics
                .iter()
                .any(|d| d.render(&compiled.sources).contains("nested more than"));
            let ids: Vec<String> = compiled.ruleset.rules().iter().map(|r| r.id.clone()).collect();
            (nested, ids)
        })
        .unwrap()
        .join()
        .expect("the compiler panicked");
    let (nested, ids) = result;
    if max > flowprint::limits::MAX_RULE_NESTING {
        // Counted here: the brackets the generator closes itself (stray `[`s and `not`s only
        // add to the nesting the compiler sees); anything this deep must be refused.
        assert!(nested, "depth {max} not refused");
        assert!(!ids.iter().any(|i| i == "fuzz/fuzz-deep"), "a too deep rule compiled");
    }
    assert!(ids.iter().any(|i| i == "fuzz/fuzz-good"), "the good rule was lost: {ids:?}");
});
