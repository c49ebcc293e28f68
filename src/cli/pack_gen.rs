//! `flowprint pack gen`: generate a pack from a catalogue of download sizes.

use super::{DiagFormat, has_errors, print_diagnostics};
use flowprint::pack::generate::{
    self, Catalogue, Matching, Model, Options, Scheme, Transport, read_packages, read_sizes_csv,
};
use regex::Regex;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Above this many record-matching rules, `pack gen` warns about evaluation cost.
const RECORD_RULES_WARN: usize = 2_000;

/// Arguments of `pack gen`.
#[derive(clap::Args)]
pub struct GenArgs {
    #[command(subcommand)]
    source: Source,
}

#[derive(clap::Subcommand)]
enum Source {
    /// From Debian/Ubuntu `Packages` indexes (plain, .gz, .xz, .bz2 or .zst).
    #[command(disable_version_flag = true)]
    Debian(Box<DebianArgs>),
    /// From a CSV catalogue: product, version, size, servers (header required).
    #[command(disable_version_flag = true)]
    Sizes(Box<SizesArgs>),
}

#[derive(clap::Args)]
struct DebianArgs {
    /// A `Packages` index (repeatable: main, updates, security...).
    #[arg(long = "packages", required = true, value_name = "FILE")]
    packages: Vec<PathBuf>,
    /// A mirror the packages are downloaded from: a domain name or `*.suffix` (repeatable).
    #[arg(long = "from", required = true, value_name = "DOMAIN")]
    from: Vec<String>,
    /// Only packages whose name this regular expression matches.
    #[arg(long = "packages-matching", value_name = "REGEX")]
    filter: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct SizesArgs {
    /// The catalogue (CSV with a header; may be compressed).
    #[arg(long, value_name = "FILE")]
    csv: PathBuf,
    /// Servers of rows whose `servers` column is empty (repeatable).
    #[arg(long = "from", value_name = "DOMAIN")]
    from: Vec<String>,
    /// Only products whose name this regular expression matches.
    #[arg(long = "products-matching", value_name = "REGEX")]
    filter: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct Common {
    /// The pack's name (default: debian-packages, download-sizes).
    #[arg(long)]
    name: Option<String>,
    /// The pack's version (semver).
    #[arg(long, default_value = "0.1.0")]
    version: String,
    /// The directory to write (default: ./NAME).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: Option<PathBuf>,
    /// Replace a pack already in the directory.
    #[arg(long)]
    force: bool,
    /// One line for pack.yaml.
    #[arg(long)]
    description: Option<String>,
    /// SPDX licence of the generated pack.
    #[arg(long, default_value = "NOASSERTION")]
    license: String,
    /// Network of the downloads (sets the per-packet overhead; see docs/pack-gen.md).
    #[arg(long, value_parser = super::args::one_of::<Transport>(Transport::VALUES), default_value = "ipv4")]
    transport: Transport,
    /// Protocol of the downloads (sets the constant overhead).
    #[arg(long, value_parser = super::args::one_of::<Scheme>(Scheme::VALUES), default_value = "both")]
    scheme: Scheme,
    /// Overhead in percent of the file size (overrides --transport).
    #[arg(long, value_name = "PERCENT")]
    overhead: Option<f64>,
    /// Allowed deviation in percent of the file size (overrides --transport).
    #[arg(long, value_name = "PERCENT")]
    tolerance: Option<f64>,
    /// Constant overhead in bytes (overrides --scheme).
    #[arg(long, value_name = "BYTES")]
    fixed: Option<u64>,
    /// Allowed deviation of the constant in bytes (overrides --scheme).
    #[arg(long, value_name = "BYTES")]
    slack: Option<u64>,
    /// Confidence of a size that no other product shares.
    #[arg(long, default_value_t = 0.7)]
    confidence: f64,
    /// Leave out rules whose window admits more products than this (they say too little).
    #[arg(long, default_value_t = 10)]
    max_products: usize,
    /// Sum the records of one connection (`transfer`) or match single records (`record`).
    #[arg(long = "match", value_parser = super::args::one_of::<Matching>(Matching::VALUES), default_value = "transfer")]
    matching: Matching,
    /// Window of transfer rules.
    #[arg(long, default_value = "1h")]
    window: String,
    /// Do not compile the written pack.
    #[arg(long)]
    no_check: bool,
}

fn regex(r: &Option<String>) -> anyhow::Result<Option<Regex>> {
    r.as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("bad regular expression: {e}"))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Prints what was skipped in `cat` (read from `path`).
fn report(path: &Path, cat: &Catalogue) {
    for m in &cat.malformed {
        eprintln!(
            "{}:{}: skipped: {}",
            path.display(),
            m.line,
            flowprint::text::printable(&m.message)
        );
    }
    let more = cat.malformed_count - cat.malformed.len() as u64;
    if more > 0 {
        eprintln!("{}: {more} more malformed entries skipped", path.display());
    }
    eprintln!(
        "{}: {} entries ({}), {} malformed",
        path.display(),
        cat.entries.len(),
        cat.compression,
        cat.malformed_count
    );
}

fn open(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Runs `pack gen`.
pub fn run(args: GenArgs) -> anyhow::Result<i32> {
    let (cat, servers, common, kind, default_name, source, select) = match args.source {
        Source::Debian(a) => {
            let select = regex(&a.filter)?;
            let mut all = Catalogue::default();
            for p in &a.packages {
                let cat =
                    read_packages(open(p)?).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                report(p, &cat);
                all.compression = cat.compression;
                all.malformed_count += cat.malformed_count;
                all.malformed.extend(cat.malformed);
                all.entries.extend(cat.entries);
            }
            let names: Vec<String> = a.packages.iter().map(|p| file_name(p)).collect();
            let mut source = format!(
                "`pack gen debian` from {} (mirrors {})",
                names.join(", "),
                a.from.join(", ")
            );
            if let Some(m) = &a.filter {
                source.push_str(&format!(", packages matching `{m}`"));
            }
            (
                all,
                a.from,
                a.common,
                "Debian package",
                "debian-packages",
                source,
                select,
            )
        }
        Source::Sizes(a) => {
            let select = regex(&a.filter)?;
            let cat = read_sizes_csv(open(&a.csv)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.csv.display()))?;
            report(&a.csv, &cat);
            let mut source = format!("`pack gen sizes` from {}", file_name(&a.csv));
            if let Some(m) = &a.filter {
                source.push_str(&format!(", products matching `{m}`"));
            }
            (
                cat,
                a.from,
                a.common,
                "download",
                "download-sizes",
                source,
                select,
            )
        }
    };
    if cat.entries.is_empty() {
        anyhow::bail!("no entries to generate rules from");
    }
    let preset = Model::preset(common.transport, common.scheme);
    let model = Model {
        overhead_pct: common.overhead.unwrap_or(preset.overhead_pct),
        tolerance_pct: common.tolerance.unwrap_or(preset.tolerance_pct),
        fixed: common.fixed.unwrap_or(preset.fixed),
        slack: common.slack.unwrap_or(preset.slack),
    };
    let window_ms = flowprint::flow::time::parse_duration_ms(&common.window)
        .map_err(|e| anyhow::anyhow!("--window: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("--window: a transfer window is needed"))?;
    let name = common.name.unwrap_or_else(|| default_name.to_string());
    let opts = Options {
        description: common.description.unwrap_or_else(|| {
            format!(
                "Downloads of {} known files ({kind}s), recognised by their exact size",
                cat.entries.len()
            )
        }),
        name: name.clone(),
        version: common.version,
        license: common.license,
        servers,
        model,
        confidence: common.confidence,
        max_products: common.max_products,
        select,
        matching: common.matching,
        window_ms: window_ms.max(0) as u64,
        kind: kind.to_string(),
        source,
    };
    let started = Instant::now();
    let pack = generate::generate(&cat, &opts)?;
    if pack.stats.rules == 0 {
        anyhow::bail!(
            "no rules to write: nothing selected, or every size is shared by more than {} products",
            opts.max_products
        );
    }
    let dir = common.output.unwrap_or_else(|| PathBuf::from(&name));
    pack.write_to(&dir, common.force)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let s = &pack.stats;
    eprintln!(
        "wrote {}: {} rules in {:.2} s ({} certain, {} without a version, {} sharing their size with other products); {} entries left out by the selection, {} rules dropped (more than {} products within reach)",
        dir.display(),
        s.rules,
        started.elapsed().as_secs_f64(),
        s.unique,
        s.version_ambiguous,
        s.shared,
        s.left_out,
        s.dropped,
        opts.max_products
    );

    if opts.matching == Matching::Record && s.rules > RECORD_RULES_WARN {
        eprintln!(
            "warning: {} record rules: every record from their servers is checked against each of them, \
             which is slow beyond a few thousand (docs/pack-gen.md); the default --match transfer \
             looks sizes up by interval",
            s.rules
        );
    }
    if common.no_check {
        return Ok(0);
    }
    let started = Instant::now();
    let mut c = flowprint::compiler::Compiler::new();
    let mut sources = flowprint::sources::Sources::default();
    sources.add_path(&dir);
    c.add_sources(&sources);
    let compiled = c.compile();
    print_diagnostics(&compiled, DiagFormat::Text)?;
    eprintln!(
        "checked {}: {} rule(s) compiled in {} ms, {} error(s), {} warning(s)",
        dir.display(),
        compiled.ruleset.len(),
        started.elapsed().as_millis(),
        compiled.errors(),
        compiled.warnings()
    );
    Ok(if has_errors(&compiled) { 1 } else { 0 })
}
