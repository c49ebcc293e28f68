//! pcap / pcapng captures: `capture::read_capture` (with a whole-slice reader and with a reader
//! that returns short reads, which must agree), then the full capture -> NetFlow/IPFIX/sFlow
//! path of `read_flows(.., InputFormat::Pcap, ..)`.
#![no_main]

use flowprint::flow::capture::read_capture;
use flowprint::flow::ingest::{InputFormat, read_flows};
use libfuzzer_sys::fuzz_target;

mod common;
use std::io::{self, BufReader, Read};

/// A reader that hands out at most `chunk` bytes per `read`, like a pipe or a socket.
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

/// (result, datagrams delivered, sum of payload lengths)
fn run<R: Read>(
    r: R,
) -> (
    Result<flowprint::flow::capture::CaptureStats, String>,
    u64,
    usize,
) {
    let (mut n, mut bytes) = (0u64, 0usize);
    let result = read_capture(r, &mut |d| {
        n += 1;
        bytes += d.payload.len();
    })
    .map_err(|e| e.to_string());
    (result, n, bytes)
}

fuzz_target!(|data: &[u8]| {
    let (whole, n, bytes) = run(data);
    if let Ok(stats) = &whole {
        assert_eq!(stats.datagrams, n, "{stats:?}");
        assert_eq!(stats.skipped, stats.packets - stats.datagrams, "{stats:?}");
        assert!(stats.fragments <= stats.skipped, "{stats:?}");
    }
    // The same capture delivered in short reads must read the same.
    let chunk = 1 + data.len() % 61;
    let trickled = run(Trickle { data, chunk });
    assert_eq!(
        whole, trickled.0,
        "short reads of {chunk} bytes changed the result"
    );
    assert_eq!(
        (n, bytes),
        (trickled.1, trickled.2),
        "short reads changed the datagrams"
    );

    let (mut flows, mut errors) = (0u64, 0u64);
    let result = read_flows(
        BufReader::new(data),
        "fuzz",
        InputFormat::Pcap,
        &mut |f| {
            flows += 1;
            common::check_flow(&f);
        },
        &mut |e| {
            errors += 1;
            let _ = e.to_string();
        },
    );
    if let Ok(stats) = result {
        assert_eq!(stats.flows, flows, "{stats:?}");
        assert_eq!(stats.skipped, errors, "{stats:?}");
    }
});
