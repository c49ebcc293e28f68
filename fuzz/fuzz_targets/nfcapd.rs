//! nfdump binary files (`nfcapd.*`): header, block framing, the four decompressors, V3
//! records. Read twice, from a slice and from a reader that returns short reads; both must
//! give the same flows, errors and counts.
#![no_main]

use flowprint::flow::ingest::nfcapd::{is_nfcapd, read_nfcapd};
use libfuzzer_sys::fuzz_target;

mod common;
use std::io::{self, Read};

struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

type Outcome = (Result<(u64, u64, u64), String>, Vec<String>, Vec<String>);

fn run<R: Read>(r: R) -> Outcome {
    let (mut flows, mut errors) = (Vec::new(), Vec::new());
    let result = read_nfcapd(
        r,
        "fuzz",
        &mut |f| {
            common::check_flow(&f);
            flows.push(format!("{f:?}"))
        },
        &mut |e| errors.push(e.to_string()),
    );
    let result = result
        .map(|s| (s.lines, s.flows, s.skipped))
        .map_err(|e| e.to_string());
    if let Ok((_, _, skipped)) = result {
        assert_eq!(skipped, errors.len() as u64, "skipped vs errors reported");
    }
    (result, flows, errors)
}

fuzz_target!(|data: &[u8]| {
    let _ = is_nfcapd(data);
    let whole = run(data);
    let chunk = 1 + data.len() % 113;
    let trickled = run(Trickle { data, chunk });
    assert!(
        whole == trickled,
        "short reads of {chunk} bytes changed the result"
    );
});
