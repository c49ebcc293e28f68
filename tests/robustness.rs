//! No input makes the rule compiler or the flow readers panic.

use flowprint::compiler::Compiler;
use flowprint::flow::ingest::{InputFormat, read_flows};
use proptest::prelude::*;

/// Fragments of the language, so that random text often gets deep into the grammar.
const TOKENS: &[&str] = &[
    "rule ",
    "list ",
    "when ",
    "then ",
    "over ",
    "and ",
    "or ",
    "not ",
    "in ",
    "matches ",
    "has ",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    "==",
    "!=",
    "<",
    ">=",
    "~",
    "+-",
    "..",
    "=",
    "\"",
    "\\",
    "/",
    "peer.port",
    "peer.domain",
    "host.addr",
    "bytes",
    "tcp.flags",
    "os.family",
    "software",
    "version",
    "confidence",
    "0.5",
    "1.5",
    "443",
    "70000",
    "58.3 MB",
    "5%",
    "30 s",
    "10.0.0.0/8",
    "fe80::1",
    "300.1.1.1",
    "\"*.a.example\"",
    "\"x\"",
    "domains",
    "addresses",
    "ports",
    "numbers",
    "syn",
    "tcp",
    "title",
    "status",
    "stable",
    "x",
    "\n",
    " ",
    "#c\n",
    "é",
    "\u{0}",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn compiler_never_panics(parts in proptest::collection::vec(proptest::sample::select(TOKENS), 0..60)) {
        let text: String = parts.concat();
        let mut c = Compiler::new();
        c.add_source("p", "fuzz.rules", &text);
        let compiled = c.compile();
        for d in &compiled.diagnostics {
            let _ = d.render(&compiled.sources);
            let _ = d.to_json(&compiled.sources);
        }
    }

    #[test]
    fn compiler_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let mut c = Compiler::new();
        c.add_source("p", "fuzz.rules", &text);
        let compiled = c.compile();
        for d in &compiled.diagnostics {
            let _ = d.render(&compiled.sources);
        }
    }

    #[test]
    fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), fmt in 0usize..4) {
        let format = [InputFormat::Auto, InputFormat::NfdumpCsv, InputFormat::Goflow2, InputFormat::Jsonl][fmt];
        let _ = read_flows(bytes.as_slice(), "fuzz", format, &mut |_| {}, &mut |_| {});
    }
}
