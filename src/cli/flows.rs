//! `flowprint flows`: the decoded, normalized flows of any input, one per line.

use flowprint::flow::Flow;
use flowprint::flow::ingest::{InputFormat, flow_to_json};
use std::io::Write;
use std::time::Instant;

/// Output of `flows` and `collect`.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// flowprint's CSV (header line first).
    Csv,
    /// flowprint's JSON flow schema, one object per line.
    Json,
}

/// Arguments of `flows`.
#[derive(clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Only count the flows (decode without printing) and report the rate on stderr.
    #[arg(long)]
    pub count: bool,
    /// Format of the inputs (detected from content by default).
    #[arg(long, value_parser = super::args::one_of::<InputFormat>(InputFormat::VALUES), default_value = "auto")]
    pub input_format: InputFormat,
    /// Flow files or directories (read recursively in time order); `-` for stdin.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
}

/// The CSV header of [`write_csv`].
pub const CSV_HEADER: &str = "start,end,src,src_port,dst,dst_port,proto,bytes,packets,rev_bytes,rev_packets,tcp_flags,src_ttl,dst_ttl,src_name,dst_name,exporter,sampling";

/// A name carried by a record (TLS SNI, HTTP Host: chosen by whoever sent the packet) as a CSV
/// field: control characters escaped (`\u{1b}`; never sent to a terminal), and the field
/// quoted when it holds a comma, a quote or a backslash escape, as RFC 4180 says.
fn csv_name(name: Option<&str>) -> std::borrow::Cow<'_, str> {
    let Some(n) = name else {
        return "".into();
    };
    let shown = flowprint::text::printable(n);
    if shown.contains([',', '"', '\\']) {
        format!("\"{}\"", shown.replace('"', "\"\"")).into()
    } else {
        shown
    }
}

/// Writes one flow as a CSV line.
pub fn write_csv(out: &mut impl Write, f: &Flow) -> std::io::Result<()> {
    let opt = |v: Option<u8>| v.map(|x| x.to_string()).unwrap_or_default();
    writeln!(
        out,
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        flowprint::flow::time::format_rfc3339(f.start_ms),
        flowprint::flow::time::format_rfc3339(f.end_ms),
        f.src,
        f.src_port,
        f.dst,
        f.dst_port,
        f.proto,
        f.bytes,
        f.packets,
        f.rev_bytes,
        f.rev_packets,
        flowprint::flow::tcp_flags::to_nfdump(f.tcp_flags),
        opt(f.src_ttl),
        opt(f.dst_ttl),
        csv_name(f.src_name.as_deref()),
        csv_name(f.dst_name.as_deref()),
        f.exporter.map(|e| e.to_string()).unwrap_or_default(),
        f.sampling
    )
}

/// Writes one flow in the chosen format.
pub fn write_flow(out: &mut impl Write, format: Format, f: &Flow) -> std::io::Result<()> {
    match format {
        Format::Csv => write_csv(out, f),
        Format::Json => {
            serde_json::to_writer(&mut *out, &flow_to_json(f))?;
            out.write_all(b"\n")
        }
    }
}

/// Runs `flows`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if args.format == Format::Csv && !args.count {
        writeln!(out, "{CSV_HEADER}")?;
    }
    let started = Instant::now();
    let mut write_error = None;
    let totals = super::read_inputs(&args.inputs, args.input_format, &mut |f| {
        if !args.count
            && write_error.is_none()
            && let Err(e) = write_flow(&mut out, args.format, &f)
        {
            write_error = Some(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let (total, skipped, unreadable) = (totals.flows, totals.skipped, totals.unreadable);
    out.flush()?;
    let secs = started.elapsed().as_secs_f64();
    if args.count {
        println!("{total}");
    }
    let failed = if totals.failed > 0 {
        format!(" ({} unreadable or cut short)", totals.failed)
    } else {
        String::new()
    };
    eprintln!(
        "{total} flows from {} input(s){failed} in {:.3} s ({:.2} M flows/s), {skipped} malformed record(s) skipped",
        totals.inputs,
        secs,
        total as f64 / secs.max(1e-9) / 1e6
    );
    Ok(if unreadable { 2 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_csv_cannot_add_columns_rows_or_terminal_escapes() {
        let mut f = Flow::new(
            "10.0.0.1".parse().unwrap(),
            1,
            "192.0.2.1".parse().unwrap(),
            443,
            6,
        );
        f.dst_name = Some("evil.example,\"x\"\n1970,\u{1b}[31m".into());
        let mut out = Vec::new();
        write_csv(&mut out, &f).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(!line.contains('\u{1b}'), "{line}");
        assert!(
            line.contains(r#","evil.example,""x""\n1970,\u{1b}[31m","#),
            "{line}"
        );
        // A plain name is written as it is.
        f.dst_name = Some("www.example.com".into());
        let mut out = Vec::new();
        write_csv(&mut out, &f).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains(",www.example.com,")
        );
    }
}
