//! nfdump binary files: every corpus `*.nfcapd` decoded and compared record by record with the
//! CSV nfdump printed for it; the same files recompressed with every codec (by nfdump itself
//! when installed, and by repacking their blocks here); truncated, bit-flipped and lying files
//! (no panic, errors reported, no allocation beyond the block limit).
//!
//! A quick throughput figure, next to nfdump on the same file:
//! `NFCAPD_BENCH=FILE cargo test --release --test nfcapd -- --ignored --nocapture throughput`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use flowprint::flow::Flow;
use flowprint::flow::ingest::nfcapd::{
    CodecError, FileError, HeaderError, MAX_BLOCK, is_nfcapd, read_nfcapd,
};
use flowprint::flow::ingest::{InputFormat, ReadError, ReadStats, read_flows};

// ---------------------------------------------------------------------------------------------
// Allocation probe: the largest single allocation made by the current thread.

struct Probe;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Probe = Probe;

// ---------------------------------------------------------------------------------------------
// Helpers

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/corpus/exports"
    ));
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        eprintln!("skipped: corpus {} not found", dir.display());
        None
    }
}

fn nfcapd_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nfcapd"))
        .collect();
    files.sort();
    files
}

/// What one read produced.
struct Decoded {
    flows: Vec<Flow>,
    errors: Vec<ReadError>,
    result: io::Result<ReadStats>,
}

fn decode_from(reader: impl Read, name: &str) -> Decoded {
    let (mut flows, mut errors) = (Vec::new(), Vec::new());
    let result = read_nfcapd(reader, name, &mut |f| flows.push(f), &mut |e| {
        errors.push(e)
    });
    Decoded {
        flows,
        errors,
        result,
    }
}

fn decode(bytes: &[u8]) -> Decoded {
    decode_from(bytes, "test")
}

/// A file that must decode without any error.
fn decode_clean(bytes: &[u8], name: &str) -> Vec<Flow> {
    let d = decode_from(bytes, name);
    let stats = d.result.unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(d.errors.is_empty(), "{name}: {:?}", d.errors);
    assert_eq!(stats.flows as usize, d.flows.len());
    assert_eq!(stats.skipped, 0);
    d.flows
}

fn csv_flows(path: &Path) -> Vec<Flow> {
    let text = fs::read(path).unwrap();
    let mut flows = Vec::new();
    let name = path.display().to_string();
    read_flows(
        text.as_slice(),
        &name,
        InputFormat::NfdumpCsv,
        &mut |f| flows.push(f),
        &mut |e| panic!("{e}"),
    )
    .unwrap();
    flows
}

/// What nfdump's CSV shows of a flow; times to the second, as the CSV prints them.
type Key = (
    (IpAddr, IpAddr, u16, u16, u8),
    (u64, u64, u64, u64, u8),
    (i64, i64, Option<IpAddr>),
);

fn key(f: &Flow) -> Key {
    (
        (f.src, f.dst, f.src_port, f.dst_port, f.proto),
        (f.packets, f.bytes, f.rev_packets, f.rev_bytes, f.tcp_flags),
        (
            f.start_ms.div_euclid(1000),
            f.end_ms.div_euclid(1000),
            f.exporter,
        ),
    )
}

/// Same flows, in the same order or else as multisets.
fn assert_same(name: &str, got: &[Flow], want: &[Flow]) {
    assert_eq!(got.len(), want.len(), "{name}: number of flows");
    let mut g: Vec<Key> = got.iter().map(key).collect();
    let mut w: Vec<Key> = want.iter().map(key).collect();
    if g != w {
        g.sort();
        w.sort();
        for (a, b) in g.iter().zip(&w) {
            assert_eq!(a, b, "{name}: first differing flow (sorted)");
        }
    }
}

fn exact(got: &[Flow], want: &[Flow], name: &str) {
    assert_eq!(
        got, want,
        "{name}: flows differ from the uncompressed file's"
    );
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Rewrites an uncompressed layout-2 file with every block payload passed through `compress`
/// and the header's compression byte set to `codec`.
fn repack(plain: &[u8], codec: u8, compress: &dyn Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    assert_eq!(plain[16], 0, "repack needs an uncompressed file");
    let off_appendix = u64::from_le_bytes(plain[24..32].try_into().unwrap()) as usize;
    let mut out = plain[..40].to_vec();
    out[16] = codec;
    let mut pos = 40;
    while pos + 12 <= plain.len() {
        let size = le32(plain, pos + 4) as usize;
        let payload = &plain[pos + 12..pos + 12 + size];
        if pos == off_appendix {
            let at = out.len() as u64;
            out[24..32].copy_from_slice(&at.to_le_bytes());
        }
        let packed = compress(payload);
        out.extend_from_slice(&plain[pos..pos + 4]);
        out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        out.extend_from_slice(&plain[pos + 8..pos + 12]);
        out.extend_from_slice(&packed);
        pos += 12 + size;
    }
    assert_eq!(pos, plain.len(), "trailing bytes in the source file");
    out
}

fn lz4(p: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress(p)
}

fn bz2(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    bzip2::read::BzEncoder::new(p, bzip2::Compression::best())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A zstd frame from the reference `zstd` command when installed, else from ruzstd's encoder.
fn zstd(p: &[u8]) -> Vec<u8> {
    if let Ok(mut child) = Command::new("zstd")
        .args(["-q", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        let mut stdin = child.stdin.take().unwrap();
        let data = p.to_vec();
        let writer = std::thread::spawn(move || io::Write::write_all(&mut stdin, &data));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success());
        return out.stdout;
    }
    ruzstd::encoding::compress_to_vec(p, ruzstd::encoding::CompressionLevel::Fastest)
}

/// LZO1X made of one literal run: valid for any decoder, though it exercises no matches
/// (nfdump's own LZO output, below, does).
fn lzo_literals(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match p.len() {
        0 => {}
        n @ 1..=3 => out.push(17 + n as u8),
        n @ 4..=18 => out.push(n as u8 - 3),
        n => {
            out.push(0);
            let rest = n - 18;
            let zeros = (rest - 1) / 255;
            out.extend(std::iter::repeat_n(0, zeros));
            out.push((rest - zeros * 255) as u8);
        }
    }
    out.extend_from_slice(p);
    out.extend_from_slice(&[0x11, 0, 0]);
    out
}

/// Every codec as (header value, name, compressor).
type Codec = (u8, &'static str, fn(&[u8]) -> Vec<u8>);
const CODECS: [Codec; 4] = [
    (1, "lzo", lzo_literals),
    (2, "bz2", bz2),
    (3, "lz4", lz4),
    (4, "zstd", zstd),
];

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("flowprint-nfcapd-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// nfdump's write options for each codec it supports: 1.7.1 has `-z` (LZO), `-y` (LZ4) and
/// `-j` (BZ2); later releases take `-z=lzo|lz4|bz2|zstd`.
fn nfdump_codecs() -> Option<Vec<(&'static str, Vec<&'static str>)>> {
    let help = Command::new("nfdump").arg("-h").output().ok()?;
    let help =
        String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    if help.contains("LZ4 compress flows") {
        Some(vec![
            ("lzo", vec!["-z"]),
            ("lz4", vec!["-y"]),
            ("bz2", vec!["-j"]),
        ])
    } else {
        let mut v = vec![
            ("lzo", vec!["-z=lzo"]),
            ("lz4", vec!["-z=lz4"]),
            ("bz2", vec!["-z=bz2"]),
        ];
        if help.to_ascii_lowercase().contains("zstd") {
            v.push(("zstd", vec!["-z=zstd"]));
        }
        Some(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus

#[test]
fn corpus_files_match_nfdump_csv() {
    let Some(dir) = corpus() else { return };
    let files = nfcapd_files(&dir);
    assert!(!files.is_empty());
    let (mut total, mut v6) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = fs::read(path).unwrap();
        assert!(is_nfcapd(&bytes), "{name}: not recognised");
        let got = decode_clean(&bytes, &name);
        let csv = path.with_file_name(name.replace(".nfcapd", ".nfdump.csv"));
        assert!(csv.exists(), "{}: no CSV", csv.display());
        assert_same(&name, &got, &csv_flows(&csv));
        total += got.len();
        v6 += got.iter().filter(|f| f.src.is_ipv6()).count();
    }
    assert!(v6 > 0, "the corpus should hold IPv6 flows");
    eprintln!(
        "{} files, {total} flows ({v6} IPv6) equal to nfdump's CSV",
        files.len()
    );
}

#[test]
fn repacked_with_every_codec_decode_the_same() {
    let Some(dir) = corpus() else { return };
    for path in nfcapd_files(&dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let plain = fs::read(&path).unwrap();
        let want = decode_clean(&plain, &name);
        for (byte, codec, compress) in CODECS {
            if codec == "zstd" && !name.starts_with('a') {
                continue; // one process per block: keep the run short
            }
            let packed = repack(&plain, byte, &compress);
            exact(
                &decode_clean(&packed, &name),
                &want,
                &format!("{name} repacked {codec}"),
            );
        }
    }
}

#[test]
fn nfdump_compressed_files_decode_the_same() {
    let Some(dir) = corpus() else { return };
    let Some(codecs) = nfdump_codecs() else {
        eprintln!("skipped: nfdump is not installed");
        return;
    };
    let tmp = TempDir::new("nfdump");
    let mut checked = 0;
    for path in nfcapd_files(&dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let want = decode_clean(&fs::read(&path).unwrap(), &name);
        for (codec, args) in &codecs {
            let out = tmp.0.join(format!("{name}.{codec}"));
            let status = Command::new("nfdump")
                .arg("-r")
                .arg(&path)
                .args(args)
                .arg("-w")
                .arg(&out)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "nfdump -w {codec} {name}");
            let bytes = fs::read(&out).unwrap();
            assert_ne!(bytes[16], 0, "{name}: nfdump wrote no {codec} file");
            exact(
                &decode_clean(&bytes, &name),
                &want,
                &format!("{name} nfdump {codec}"),
            );
            checked += 1;
        }
    }
    eprintln!(
        "{checked} nfdump-compressed files ({}) decode to the same flows",
        codecs.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile input

fn small_file() -> Option<Vec<u8>> {
    let dir = corpus()?;
    Some(fs::read(dir.join("anydesk.ipfix.nfcapd")).unwrap())
}

#[test]
fn truncated_at_every_offset() {
    let Some(plain) = small_file() else { return };
    let mut files = vec![("none", plain.clone())];
    for (byte, codec, compress) in CODECS {
        files.push((codec, repack(&plain, byte, &compress)));
    }
    let full = decode_clean(&plain, "full").len();
    assert!(full > 1);
    for (codec, bytes) in &files {
        for cut in 0..bytes.len() {
            let d = decode(&bytes[..cut]);
            match d.result {
                Err(e) => {
                    assert!(cut < 40, "{codec} cut {cut}: {e}");
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                }
                Ok(stats) => {
                    assert!(d.flows.len() <= full);
                    assert!(
                        d.flows.len() < full || !d.errors.is_empty(),
                        "{codec} cut at {cut}: all {full} flows and no error"
                    );
                    assert_eq!(stats.skipped as usize, d.errors.len());
                }
            }
        }
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let Some(plain) = small_file() else { return };
    let mut files = vec![plain.clone()];
    for (byte, codec, compress) in CODECS {
        if codec != "zstd" {
            files.push(repack(&plain, byte, &compress));
        }
    }
    files.push(repack(&plain, 4, &|p| {
        ruzstd::encoding::compress_to_vec(p, ruzstd::encoding::CompressionLevel::Fastest)
    }));
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut outcomes = [0usize; 3];
    for file in &files {
        for _ in 0..1500 {
            let mut bytes = file.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let d = decode(&bytes);
            outcomes[match (&d.result, d.errors.is_empty()) {
                (Err(_), _) => 0,
                (Ok(_), false) => 1,
                (Ok(_), true) => 2,
            }] += 1;
        }
    }
    eprintln!(
        "byte flips: {} rejected, {} with errors, {} read cleanly",
        outcomes[0], outcomes[1], outcomes[2]
    );
    assert!(outcomes[1] > 0);
}

/// A layout-2 header announcing `blocks` data blocks.
fn header(compression: u8, blocks: u32) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[..4].copy_from_slice(&[0x0C, 0xA5, 2, 0]);
    h[4..8].copy_from_slice(&0x0107_0100u32.to_le_bytes());
    h[16] = compression;
    h[36..40].copy_from_slice(&blocks.to_le_bytes());
    h
}

fn block_header(records: u32, size: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&records.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[3, 0, 0, 0]);
    b
}

#[test]
fn huge_block_claims_are_refused_without_allocating() {
    for (compression, size) in [(0u8, u32::MAX), (3, 0x8000_0000), (1, MAX_BLOCK as u32 + 1)] {
        let mut file = header(compression, 1);
        file.extend(block_header(1, size));
        file.extend_from_slice(&[0xAB; 64]);
        LARGEST.with(|c| c.set(0));
        let d = decode(&file);
        let largest = LARGEST.with(Cell::get);
        assert!(
            largest < 1 << 20,
            "allocated {largest} bytes for a {size}-byte claim"
        );
        assert!(d.flows.is_empty());
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert!(
            d.errors[0].reason.to_string().contains("exceeds"),
            "{}",
            d.errors[0]
        );
        assert_eq!(d.errors[0].line, 1);
        assert_eq!(d.result.unwrap().skipped, 1);
    }
    // A claim within the limit on a short file allocates what the file holds, not the claim.
    let mut file = header(0, 1);
    file.extend(block_header(1, MAX_BLOCK as u32));
    file.extend_from_slice(&[0xAB; 64]);
    LARGEST.with(|c| c.set(0));
    let d = decode(&file);
    assert!(LARGEST.with(Cell::get) < 1 << 20);
    assert!(
        d.errors[0].reason.to_string().contains("truncated"),
        "{}",
        d.errors[0]
    );
}

/// The one data block of a corpus file (header, payload) and its appendix.
fn split(file: &[u8]) -> (&[u8], &[u8]) {
    let size = le32(file, 44) as usize;
    file[40..].split_at(12 + size)
}

#[test]
fn a_bad_block_is_reported_and_the_next_one_read() {
    let Some(dir) = corpus() else { return };
    let plain = fs::read(dir.join("443-chrome.nfv5.nfcapd")).unwrap();
    let want = decode_clean(&plain, "chrome");
    let (block, appendix) = split(&plain);

    // Record sizes that overrun their block.
    let mut bad = block.to_vec();
    let first_record_size = 12 + 2;
    bad[first_record_size..first_record_size + 2].copy_from_slice(&0xFFF0u16.to_le_bytes());
    let mut file = header(0, 2);
    file[18] = 1;
    file.extend_from_slice(&bad);
    file.extend_from_slice(block);
    file.extend_from_slice(appendix);
    let d = decode(&file);
    exact(&d.flows, &want, "after a bad block");
    assert_eq!(d.errors.len(), 1);
    assert_eq!(d.errors[0].line, 1);
    assert!(
        d.errors[0].reason.to_string().contains("overruns"),
        "{}",
        d.errors[0]
    );

    // A block that does not decompress.
    let packed = repack(&plain, 3, &lz4);
    let (good, appendix) = split(&packed);
    let mut garbage = good.to_vec();
    for b in &mut garbage[12..] {
        *b = 0xFF;
    }
    let mut file = header(3, 2);
    file[18] = 1;
    file.extend_from_slice(&garbage);
    file.extend_from_slice(good);
    file.extend_from_slice(appendix);
    let d = decode(&file);
    exact(&d.flows, &want, "after a corrupt LZ4 block");
    assert_eq!(d.errors.len(), 1);
    assert!(
        d.errors[0].reason.to_string().starts_with("LZ4 block"),
        "{}",
        d.errors[0]
    );

    // An element whose length overruns its record: that record only is skipped.
    let mut bad = block.to_vec();
    let v3 = 12 + 32; // block header, exporter record
    assert_eq!(bad[v3], 11);
    bad[v3 + 14..v3 + 16].copy_from_slice(&0x4000u16.to_le_bytes());
    let mut file = header(0, 1);
    file.extend_from_slice(&bad);
    let d = decode(&file);
    assert!(d.flows.is_empty());
    assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
    assert!(
        d.errors[0]
            .reason
            .to_string()
            .starts_with("record 2: element 1"),
        "{}",
        d.errors[0]
    );
}

#[test]
fn headers_that_cannot_be_read() {
    let kind = |bytes: &[u8]| decode(bytes).result.unwrap_err();
    let e = kind(b"ts,te,td,sa,da\n");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("not an nfdump file"), "{e}");
    let mut v1 = header(0, 1);
    v1[2] = 1;
    assert!(kind(&v1).to_string().contains("nfdump 1.6"));
    assert!(kind(&v1[..20]).to_string().contains("nfdump 1.6"));
    let mut enc = header(0, 1);
    enc[17] = 1;
    assert!(kind(&enc).to_string().contains("encrypted"));
    assert!(kind(&header(9, 1)).to_string().contains("compression 9"));
    assert!(kind(&[0xA5, 0x0C, 0, 2]).to_string().contains("big-endian"));
    assert!(kind(&header(0, 1)[..30]).to_string().contains("truncated"));
    assert!(kind(&[]).to_string().contains("only 0 bytes"));

    let mut v3 = header(0, 1);
    v3[2] = 3;
    assert!(kind(&v3).to_string().contains("nfdump 1.8"));
    v3[2] = 7;
    assert!(kind(&v3).to_string().contains("version 7"));
    assert!(!is_nfcapd(&v3));
    assert!(is_nfcapd(&header(0, 1)));

    // The io::Error carries the typed error: the input's name and the header's problem.
    let typed = |bytes: &[u8]| {
        let e = kind(bytes);
        let f = e
            .get_ref()
            .and_then(|e| e.downcast_ref::<FileError>())
            .unwrap_or_else(|| panic!("not a FileError: {e:?}"))
            .clone();
        assert_eq!(f.to_string(), e.to_string());
        assert_eq!(f.input, "test");
        f.error
    };
    assert_eq!(typed(b"ts,te,td,sa,da\n"), HeaderError::Magic(0x7374));
    assert_eq!(typed(&v1), HeaderError::Layout1);
    assert_eq!(typed(&v3), HeaderError::Layout(7));
    assert_eq!(typed(&enc), HeaderError::Encrypted(1));
    assert_eq!(
        typed(&header(9, 1)),
        HeaderError::Compression(CodecError::UnknownCompression(9))
    );
    assert_eq!(typed(&[0xA5, 0x0C, 0, 2]), HeaderError::BigEndian);
    assert_eq!(
        typed(&header(0, 1)[..30]),
        HeaderError::Truncated { got: 30 }
    );
    assert_eq!(typed(&[]), HeaderError::Short(0));
    assert!(is_nfcapd(&v1));
    assert!(!is_nfcapd(b"ts,te"));
    assert!(!is_nfcapd(&[0x0C, 0xA5]));

    // A file still being written (no blocks announced) is read to its end without complaint.
    let d = decode(&header(0, 0));
    assert!(d.errors.is_empty() && d.flows.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Synthetic records: every element the reader uses, laid out as nfdump 1.7 writes them

fn element(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut e = kind.to_le_bytes().to_vec();
    e.extend_from_slice(&(4 + body.len() as u16).to_le_bytes());
    e.extend_from_slice(body);
    e
}

/// A V3 record (type 11) of `elements` for exporter `sysid`.
fn v3_record(sysid: u16, flags: u8, elements: &[Vec<u8>]) -> Vec<u8> {
    let size = 12 + elements.iter().map(Vec::len).sum::<usize>();
    let mut r = Vec::new();
    r.extend_from_slice(&11u16.to_le_bytes());
    r.extend_from_slice(&(size as u16).to_le_bytes());
    r.extend_from_slice(&(elements.len() as u16).to_le_bytes());
    r.extend_from_slice(&[0, 0]);
    r.extend_from_slice(&sysid.to_le_bytes());
    r.extend_from_slice(&[flags, 10]);
    for e in elements {
        r.extend_from_slice(e);
    }
    r
}

/// EXgenericFlow: times, counters, ports, protocol, TCP flags.
#[allow(clippy::too_many_arguments)]
fn generic(
    first: u64,
    last: u64,
    packets: u64,
    bytes: u64,
    sp: u16,
    dp: u16,
    proto: u8,
    flags: u8,
) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [first, last, last + 5, packets, bytes] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&sp.to_le_bytes());
    b.extend_from_slice(&dp.to_le_bytes());
    b.extend_from_slice(&[proto, flags, 0, 0]);
    element(1, &b)
}

/// nfdump's in-memory IPv6: two native u64, the high half first.
fn v6_words(a: &str) -> Vec<u8> {
    let v = u128::from(a.parse::<std::net::Ipv6Addr>().unwrap());
    let mut b = ((v >> 64) as u64).to_le_bytes().to_vec();
    b.extend_from_slice(&(v as u64).to_le_bytes());
    b
}

fn exporter_record(sysid: u16, family: u16, ip: [u8; 16]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&7u16.to_le_bytes());
    r.extend_from_slice(&32u16.to_le_bytes());
    r.extend_from_slice(&10u32.to_le_bytes());
    r.extend_from_slice(&ip);
    r.extend_from_slice(&family.to_le_bytes());
    r.extend_from_slice(&sysid.to_le_bytes());
    r.extend_from_slice(&0u32.to_le_bytes());
    r
}

fn sampler_record(sysid: u16, id: i64, packet: u32, space: u32) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&15u16.to_le_bytes());
    r.extend_from_slice(&24u16.to_le_bytes());
    r.extend_from_slice(&sysid.to_le_bytes());
    r.extend_from_slice(&0u16.to_le_bytes());
    r.extend_from_slice(&id.to_le_bytes());
    r.extend_from_slice(&packet.to_le_bytes());
    r.extend_from_slice(&space.to_le_bytes());
    r
}

fn file_of(records: &[Vec<u8>]) -> Vec<u8> {
    let payload: Vec<u8> = records.concat();
    let mut file = header(0, 1);
    file.extend(block_header(records.len() as u32, payload.len() as u32));
    file.extend(payload);
    file
}

#[test]
fn synthetic_records_fill_every_field() {
    // Exporter 1: nfdump 1.7.1's host-order address (AF_INET, IPv4 in the third u32).
    let mut host_order = [0u8; 16];
    host_order[8..12].copy_from_slice(&0xC000_0201u32.to_le_bytes());
    // Exporter 2: later 1.7 releases' network-order, IPv4-mapped address.
    let mapped: [u8; 16] = "::ffff:198.51.100.7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    // Exporter 3: AF_INET6 in host order.
    let v6_exporter: [u8; 16] = v6_words("2001:db8:ffff::9").try_into().unwrap();
    let mut ttl = vec![0, 0x40, 61, 64];
    let records = vec![
        exporter_record(1, 2, host_order),
        exporter_record(2, 0, mapped),
        exporter_record(3, 10, v6_exporter),
        sampler_record(1, 5, 1, 99),
        sampler_record(2, -1, 1, 9),
        // IPv6 TCP biflow with out counters, TTL, its own sampler and exporter address.
        v3_record(
            1,
            2,
            &[
                generic(
                    1_700_000_000_123,
                    1_700_000_001_456,
                    10,
                    1000,
                    50000,
                    443,
                    6,
                    0x1b,
                ),
                element(
                    3,
                    &[v6_words("2001:db8::1"), v6_words("2606:4700::6810:84e5")].concat(),
                ),
                element(5, &[1u64, 7, 700].map(u64::to_le_bytes).concat()),
                element(42, &ttl),
                element(
                    18,
                    &[&5u64.to_le_bytes()[..], &1u16.to_le_bytes(), &[0, 0]].concat(),
                ),
                element(99, &[1, 2, 3, 4, 5, 6]),
                element(13, &v6_words("2001:db8:ffff::1")),
            ],
        ),
        // IPv4 ICMP echo, exporter from exporter record 2, generic sampler of exporter 2.
        v3_record(
            2,
            2,
            &[
                generic(1_000, 2_000, 1, 84, 0, 0x0800, 1, 0),
                element(
                    2,
                    &[0x0A00_0001u32, 0x0808_0808].map(u32::to_le_bytes).concat(),
                ),
            ],
        ),
        // Unsampled, exporter from exporter record 3; TTL 0 means none.
        v3_record(
            3,
            0,
            &[
                generic(5, 6, 2, 120, 53, 5353, 17, 0),
                element(
                    2,
                    &[0xC0A8_0001u32, 0xE000_00FB].map(u32::to_le_bytes).concat(),
                ),
                element(42, &[0, 0, 0, 0]),
            ],
        ),
        // Exporter 1 through the record header only.
        v3_record(
            1,
            0,
            &[generic(0, 0, 1, 1, 1, 1, 17, 0), element(2, &[0; 8])],
        ),
    ];
    let flows = decode_clean(&file_of(&records), "synthetic");
    assert_eq!(flows.len(), 4);
    let f = &flows[0];
    assert_eq!(
        (f.start_ms, f.end_ms),
        (1_700_000_000_123, 1_700_000_001_456)
    );
    assert_eq!(f.src, "2001:db8::1".parse::<IpAddr>().unwrap());
    assert_eq!(f.dst, "2606:4700::6810:84e5".parse::<IpAddr>().unwrap());
    assert_eq!(
        (f.src_port, f.dst_port, f.proto, f.tcp_flags),
        (50000, 443, 6, 0x1b)
    );
    assert_eq!(
        (f.packets, f.bytes, f.rev_packets, f.rev_bytes),
        (10, 1000, 7, 700)
    );
    assert_eq!((f.src_ttl, f.dst_ttl, f.sampling), (Some(61), None, 100));
    assert_eq!(f.exporter, Some("2001:db8:ffff::1".parse().unwrap()));
    let f = &flows[1];
    assert_eq!(
        (f.src.to_string(), f.dst.to_string()),
        ("10.0.0.1".into(), "8.8.8.8".into())
    );
    assert_eq!((f.proto, f.dst_port, f.sampling), (1, 0x0800, 10));
    assert_eq!(f.exporter, Some("198.51.100.7".parse().unwrap()));
    let f = &flows[2];
    assert_eq!((f.src_ttl, f.sampling, f.rev_packets), (None, 1, 0));
    assert_eq!(f.exporter, Some("2001:db8:ffff::9".parse().unwrap()));
    assert_eq!(flows[3].exporter, Some("192.0.2.1".parse().unwrap()));

    // Elements too short for their struct are reported with the record.
    ttl.truncate(2);
    let short = v3_record(
        1,
        0,
        &[
            generic(0, 0, 1, 1, 1, 1, 17, 0),
            element(2, &[0; 8]),
            element(42, &ttl),
        ],
    );
    let d = decode(&file_of(&[short]));
    assert!(d.flows.is_empty());
    assert_eq!(
        d.errors[0].reason.to_string(),
        "record 1: EXipInfo element has 2 bytes, needs 4"
    );
    assert!(
        matches!(
            d.errors[0].reason,
            flowprint::flow::ingest::Reason::Block(
                flowprint::flow::ingest::nfcapd::BlockError::Record { record: 1, .. }
            )
        ),
        "{:?}",
        d.errors[0].reason
    );
    let no_addr = v3_record(1, 0, &[generic(0, 0, 1, 1, 1, 1, 17, 0)]);
    let d = decode(&file_of(&[no_addr]));
    assert!(
        d.errors[0]
            .reason
            .to_string()
            .contains("without IPv4 or IPv6"),
        "{}",
        d.errors[0]
    );
}

// ---------------------------------------------------------------------------------------------
// Throughput

#[test]
#[ignore = "measurement: set NFCAPD_BENCH=FILE"]
fn throughput() {
    let Ok(path) = std::env::var("NFCAPD_BENCH") else {
        eprintln!("set NFCAPD_BENCH to an nfcapd file");
        return;
    };
    let bytes = fs::read(&path).unwrap();
    for run in 0..3 {
        let start = Instant::now();
        let (mut n, mut sum) = (0u64, 0u64);
        let stats = read_nfcapd(
            bytes.as_slice(),
            &path,
            &mut |f| {
                n += 1;
                sum = sum.wrapping_add(f.bytes);
            },
            &mut |e| panic!("{e}"),
        )
        .unwrap();
        let s = start.elapsed().as_secs_f64();
        eprintln!(
            "run {run}: {} flows in {:.3} s = {:.2} M flows/s (from memory; checksum {sum})",
            stats.flows,
            s,
            n as f64 / s / 1e6
        );
    }
    let start = Instant::now();
    let file = fs::File::open(&path).unwrap();
    let mut first = None;
    let stats = read_nfcapd(
        file,
        &path,
        &mut |f| {
            first.get_or_insert(f);
        },
        &mut |e| panic!("{e}"),
    )
    .unwrap();
    eprintln!(
        "from the file: {} flows in {:.3} s; first: {first:?}",
        stats.flows,
        start.elapsed().as_secs_f64()
    );
}
