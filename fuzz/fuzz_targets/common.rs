//! Checks shared by the fuzz targets (not a target itself).

use flowprint::flow::Flow;
use flowprint::flow::ingest::{InputFormat, flow_to_json, read_flows};

/// Milliseconds of 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z: `format_rfc3339` documents
/// that years outside 0000-9999 are not read back.
const YEAR_0_MS: i64 = -62_167_219_200_000;
const YEAR_10000_MS: i64 = 253_402_300_800_000;

/// Every flow a reader hands out: serialize it with `flow_to_json` and, where the documented
/// round trip applies (`InputFormat::Jsonl` "reads it back to an equal flow"), read it back.
#[allow(dead_code)]
pub fn check_flow(f: &Flow) {
    let _ = f.duration_ms();
    let json = flow_to_json(f);
    let in_range = |t: i64| (YEAR_0_MS..YEAR_10000_MS).contains(&t);
    if !(in_range(f.start_ms) && in_range(f.end_ms)) {
        return;
    }
    let line = json.to_string();
    let mut back = Vec::new();
    let result = read_flows(
        line.as_bytes(),
        "round-trip",
        InputFormat::Jsonl,
        &mut |g| back.push(g),
        &mut |e| panic!("flow_to_json output not read back: {e}\n{line}"),
    );
    assert!(result.is_ok(), "{result:?}\n{line}");
    assert_eq!(back.len(), 1, "{line}");
    assert_eq!(&back[0], f, "JSON round trip changed the flow\n{line}");
}
