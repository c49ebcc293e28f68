//! Generation: a catalogue and options to the text of a pack.

use super::*;

/// How a download must appear in the flow records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// Stateful `transfer ~ S +- T`: the peer's bytes summed over the records of one
    /// connection (downloads split by the exporter's active timeout are found).
    Transfer,
    /// `peer.bytes ~ S +- T` on one record: indexed by size, cheapest for very large packs,
    /// but misses downloads split over several records.
    Record,
}

named_values!(Matching {
    Transfer = "transfer": "sum the records of one connection, sizes looked up by interval",
    Record = "record": "match single records, one rule per file",
});

/// What [`generate`] makes and from what.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pack's name (lowercase letters, digits and `-`, starting with a letter).
    pub name: String,
    /// The pack's version (semver).
    pub version: String,
    /// One line for `pack.yaml`.
    pub description: String,
    /// The SPDX licence of the generated pack.
    pub license: String,
    /// Servers of entries that name none.
    pub servers: Vec<String>,
    /// The byte-count model.
    pub model: Model,
    /// Confidence of a rule whose size no other product shares.
    pub confidence: f64,
    /// Rules whose window admits more products than this are not written: they say too little.
    pub max_products: usize,
    /// Write rules only for products this matches (all entries still count as neighbours).
    pub select: Option<Regex>,
    /// Record or transfer matching.
    pub matching: Matching,
    /// Window of transfer rules, in ms.
    pub window_ms: u64,
    /// What the catalogue is, for `README.md` (e.g. "Debian package").
    pub kind: String,
    /// How the pack was made (the command line), for `README.md`.
    pub source: String,
}

/// Counts of how the rules came out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Entries read (after merging exact duplicates).
    pub entries: usize,
    /// Entries that `select` left out (they still count as neighbours).
    pub left_out: usize,
    /// Rules not written because more than `max_products` products are within reach.
    pub dropped: usize,
    /// Rules written.
    pub rules: usize,
    /// Rules that conclude product and version at full confidence.
    pub unique: usize,
    /// Rules whose window admits other versions of the same product (no version concluded).
    pub version_ambiguous: usize,
    /// Rules whose window admits other products (confidence divided).
    pub shared: usize,
}

/// A generated pack: relative paths and their text.
#[derive(Debug, Clone)]
pub struct GeneratedPack {
    /// `pack.yaml`, `README.md` and `rules/*.rules`, with their contents.
    pub files: Vec<(PathBuf, String)>,
    /// How the rules came out.
    pub stats: Stats,
}

/// Whether `name` can name a pack: lowercase letters, digits and `-`, starting with a letter.
pub fn valid_pack_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64
}

/// Products within reach are counted up to this many.
const COUNTED: usize = 100;

/// One rule to be: entries merged when product, version, size and servers are equal.
struct Item<'a> {
    entry: &'a Entry,
    archs: BTreeSet<&'a str>,
    servers: usize,
    center: u64,
    tol: u64,
}

/// What else a transfer that fires an item's rule could have been.
#[derive(Default)]
struct Near<'a> {
    /// Distinct products within reach, the item's own included; stops growing past the limit.
    products: std::collections::HashSet<&'a str>,
    /// Other versions of the item's own product within reach.
    versions: usize,
    /// A few "product version" names for the description.
    names: Vec<String>,
}

fn check_options(opts: &Options) -> Result<Vec<String>, GenError> {
    if !valid_pack_name(&opts.name) {
        return Err(GenError::Option(format!(
            "`{}` is not a pack name (lowercase letters, digits and `-`, starting with a letter)",
            opts.name
        )));
    }
    semver::Version::parse(&opts.version)
        .map_err(|e| GenError::Option(format!("version `{}`: {e}", opts.version)))?;
    if !(opts.confidence > 0.0 && opts.confidence <= 1.0) {
        return Err(GenError::Option("the confidence must be in (0, 1]".into()));
    }
    if opts.window_ms == 0 {
        return Err(GenError::Option("the window must be longer than 0".into()));
    }
    if opts.max_products == 0 {
        return Err(GenError::Option("at least one product per window".into()));
    }
    opts.model.check()?;
    opts.servers.iter().map(|s| normalize_server(s)).collect()
}

/// Turns a catalogue into a pack. Entries without servers get `opts.servers`; an entry
/// without any is an error.
pub fn generate(cat: &Catalogue, opts: &Options) -> Result<GeneratedPack, GenError> {
    let defaults = check_options(opts)?;
    // Server sets, numbered in order of first use.
    let mut server_sets: Vec<Vec<String>> = Vec::new();
    let mut set_index: HashMap<Vec<String>, usize> = HashMap::new();
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut merged: HashMap<(&str, &str, u64, usize), usize> = HashMap::new();
    for e in &cat.entries {
        let mut set: Vec<String> = if e.servers.is_empty() {
            defaults.clone()
        } else {
            e.servers.clone()
        };
        if set.is_empty() {
            return Err(GenError::Option(format!(
                "line {}: {} {} has no servers, and no default servers (--from) are given",
                e.line, e.product, e.version
            )));
        }
        set.sort();
        set.dedup();
        let next = server_sets.len();
        let servers = *set_index.entry(set.clone()).or_insert(next);
        if servers == next {
            server_sets.push(set);
        }
        let key = (e.product.as_str(), e.version.as_str(), e.size, servers);
        if let Some(&i) = merged.get(&key) {
            items[i].archs.extend(e.arch.as_deref());
            continue;
        }
        merged.insert(key, items.len());
        let (center, tol) = opts.model.window(e.size);
        items.push(Item {
            entry: e,
            archs: e.arch.as_deref().into_iter().collect(),
            servers,
            center,
            tol,
        });
    }
    // Within each server set, by expected size: neighbours are found by scanning outwards.
    items.sort_by(|a, b| {
        (
            a.servers,
            a.center,
            &a.entry.product,
            &a.entry.version,
            &a.archs,
        )
            .cmp(&(
                b.servers,
                b.center,
                &b.entry.product,
                &b.entry.version,
                &b.archs,
            ))
    });
    let list_names: Vec<String> = if server_sets.len() == 1 {
        vec!["servers".into()]
    } else {
        (1..=server_sets.len())
            .map(|i| format!("servers_{i}"))
            .collect()
    };
    let mut stats = Stats {
        entries: items.len(),
        ..Default::default()
    };
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut rules: BTreeMap<(&str, &str, u64), String> = BTreeMap::new();
    for i in 0..items.len() {
        let item = &items[i];
        if opts
            .select
            .as_ref()
            .is_some_and(|r| !r.is_match(&item.entry.product))
        {
            stats.left_out += 1;
            continue;
        }
        // Products are counted up to COUNTED: beyond, the confidence is at its floor anyway.
        let near = near(&items, i, opts.max_products.min(COUNTED));
        if near.products.len() > opts.max_products {
            stats.dropped += 1;
            continue;
        }
        let text = rule_text(item, &near, opts, &list_names, &mut ids, &mut stats);
        rules.insert(
            (&item.entry.product, &item.entry.version, item.entry.size),
            text,
        );
    }
    stats.rules = rules.len();
    let header = format!(
        "# Generated by `flowprint pack gen` ({}); regenerate instead of editing.\n\n",
        opts.kind
    );
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for ((product, _, _), text) in &rules {
        files
            .entry(file_for(product))
            .or_insert_with(|| header.clone())
            .push_str(text);
    }
    let mut lists = header.clone();
    for (name, set) in list_names.iter().zip(&server_sets) {
        let names: Vec<String> = set.iter().map(|s| format!("\"{}\"", escape(s))).collect();
        let _ = writeln!(lists, "list {name} = domains {{ {} }}", names.join(", "));
    }
    let mut out = vec![(PathBuf::from("rules/servers.rules"), lists)];
    for (file, body) in files {
        out.push((PathBuf::from(format!("rules/{file}.rules")), body));
    }
    out.push((PathBuf::from("pack.yaml"), manifest(opts)));
    let readme = readme(opts, cat, &stats, &server_sets);
    out.push((PathBuf::from("README.md"), readme));
    Ok(GeneratedPack { files: out, stats })
}

/// The items (with the same servers) whose windows overlap item `i`'s: a transfer that fires
/// its rule could have been any of those files. Items are sorted by expected size, and both
/// ends of a window grow with the size, so the scan stops at the first item out of reach on
/// each side, or once more than `limit` products are found.
fn near<'a>(items: &[Item<'a>], i: usize, limit: usize) -> Near<'a> {
    let it = &items[i];
    let mut n = Near::default();
    n.products.insert(it.entry.product.as_str());
    let (lo, hi) = (it.center.saturating_sub(it.tol), it.center + it.tol);
    let mut visit = |o: &Item<'a>| {
        let p = o.entry.product.as_str();
        if p == it.entry.product {
            if o.entry.version != it.entry.version {
                n.versions += 1;
            }
        } else {
            n.products.insert(p);
        }
        if n.names.len() < 8 && !std::ptr::eq(o, it) {
            let name = format!("{} {}", o.entry.product, o.entry.version);
            if !n.names.contains(&name)
                && (p != it.entry.product || o.entry.version != it.entry.version)
            {
                n.names.push(name);
            }
        }
        n.products.len() <= limit
    };
    for o in items[..i].iter().rev() {
        if o.servers != it.servers || o.center + o.tol < lo || !visit(o) {
            break;
        }
    }
    for o in &items[i + 1..] {
        if o.servers != it.servers || o.center.saturating_sub(o.tol) > hi || !visit(o) {
            break;
        }
    }
    n
}

/// The rules file of a product: its first letter or digit, or `other`.
fn file_for(product: &str) -> String {
    match product.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => c.to_ascii_lowercase().to_string(),
        Some(c) if c.is_ascii_digit() => "0-9".into(),
        _ => "other".into(),
    }
}

/// A rule id from product, version and architectures, unique among `ids`.
fn rule_id(item: &Item<'_>, ids: &mut BTreeSet<String>) -> String {
    let mut raw = format!("{}-{}", item.entry.product, item.entry.version);
    for a in &item.archs {
        raw.push('-');
        raw.push_str(a);
    }
    let mut id = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '-'
        };
        if !(c == '-' && (id.is_empty() || id.ends_with('-'))) {
            id.push(c);
        }
    }
    let mut id = id.trim_end_matches('-').to_string();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        id.insert_str(0, "p-");
    }
    id.truncate(120);
    let base = id.trim_end_matches('-').to_string();
    let mut id = base.clone();
    let mut n = 2;
    while ids.contains(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    ids.insert(id.clone());
    id
}

/// Escapes text for a string literal of the rule language.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration_text(ms: u64) -> String {
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

fn rule_text(
    item: &Item<'_>,
    near: &Near<'_>,
    opts: &Options,
    list_names: &[String],
    ids: &mut BTreeSet<String>,
    stats: &mut Stats,
) -> String {
    let e = item.entry;
    let k = near.products.len().max(1);
    let confidence = ((opts.confidence / k as f64) * 1000.0).floor().max(1.0) / 1000.0;
    let with_version = near.versions == 0;
    if k > 1 {
        stats.shared += 1;
    } else if with_version {
        stats.unique += 1;
    }
    if !with_version {
        stats.version_ambiguous += 1;
    }
    let id = rule_id(item, ids);
    let arch = if item.archs.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            item.archs.iter().copied().collect::<Vec<_>>().join(", ")
        )
    };
    let mut desc = format!(
        "A download of {} ({} bytes",
        e.file.as_deref().unwrap_or("the file"),
        group_digits(e.size)
    );
    if let Some(h) = &e.sha256 {
        let _ = write!(desc, ", sha256 {h}");
    }
    let _ = write!(
        desc,
        "): {} ± {} bytes in flow records.",
        group_digits(item.center),
        group_digits(item.tol)
    );
    if !near.names.is_empty() {
        let _ = write!(
            desc,
            " Also within reach: {}{}; {}.",
            near.names.join(", "),
            if near.names.len() == 8 {
                " and maybe more"
            } else {
                ""
            },
            match (k, with_version) {
                (1, _) => "the version is left open".to_string(),
                (_, true) => format!("confidence divided by {k} products"),
                (_, false) => format!("confidence divided by {k} products, the version left open"),
            }
        );
    }
    let list = &list_names[item.servers];
    let mut t = String::new();
    let _ = writeln!(t, "rule {id} {{");
    let _ = writeln!(
        t,
        "    title       \"{} {}{} downloaded\"",
        escape(&e.product),
        escape(&e.version),
        escape(&arch)
    );
    let _ = writeln!(t, "    description \"{}\"", escape(&desc));
    let _ = writeln!(t, "    status      experimental");
    let _ = writeln!(
        t,
        "    tags        [\"software\", \"download\", \"generated\"]"
    );
    let hi = item.center + item.tol;
    match opts.matching {
        Matching::Transfer => {
            let _ = writeln!(
                t,
                "    when  peer.domain in {list} and proto == tcp and peer.bytes <= {hi} B"
            );
            let _ = writeln!(
                t,
                "    over  {} transfer ~ {} B +- {} B",
                duration_text(opts.window_ms),
                item.center,
                item.tol
            );
        }
        Matching::Record => {
            let _ = writeln!(
                t,
                "    when  peer.domain in {list} and proto == tcp and peer.bytes ~ {} B +- {} B",
                item.center, item.tol
            );
        }
    }
    let version = if with_version {
        format!(" version \"{}\"", escape(&e.version))
    } else {
        String::new()
    };
    let _ = writeln!(
        t,
        "    then  software = \"{}\"{version} confidence {confidence}",
        escape(&e.product)
    );
    t.push_str("}\n\n");
    t
}

fn manifest(opts: &Options) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!(
        "name: {}\nversion: {}\ndescription: {}\nauthors: [\"flowprint pack gen\"]\nlicense: {}\n",
        opts.name,
        opts.version,
        q(&opts.description),
        q(&opts.license)
    )
}

fn readme(opts: &Options, cat: &Catalogue, stats: &Stats, sets: &[Vec<String>]) -> String {
    let m = &opts.model;
    let mut r = String::new();
    let _ = writeln!(r, "# {}\n", opts.name);
    let _ = writeln!(r, "{}\n", opts.description);
    let _ = writeln!(
        r,
        "Generated by `flowprint pack gen`: {}. Regenerate rather than edit; see \
         `docs/pack-gen.md` of flowprint.\n",
        opts.source
    );
    let _ = writeln!(r, "| | |\n|---|---|");
    let _ = writeln!(
        r,
        "| entries | {} (input {}) |",
        stats.entries, cat.compression
    );
    let _ = writeln!(r, "| malformed, skipped | {} |", cat.malformed_count);
    let _ = writeln!(
        r,
        "| left out by the selection (still counted as neighbours) | {} |",
        stats.left_out
    );
    let _ = writeln!(
        r,
        "| not written: more than {} products within reach | {} |",
        opts.max_products, stats.dropped
    );
    let _ = writeln!(r, "| rules | {} |", stats.rules);
    let _ = writeln!(r, "| product and version certain | {} |", stats.unique);
    let _ = writeln!(
        r,
        "| version left open (other versions within reach) | {} |",
        stats.version_ambiguous
    );
    let _ = writeln!(
        r,
        "| confidence divided (other products within reach) | {} |",
        stats.shared
    );
    let _ = writeln!(
        r,
        "| expected bytes | size × {:.4} + {} B, ± (size × {:.2} % + {} B) |",
        1.0 + m.overhead_pct / 100.0,
        m.fixed,
        m.tolerance_pct,
        m.slack
    );
    let _ = writeln!(
        r,
        "| matching | {} |",
        match opts.matching {
            Matching::Transfer => format!("transfer (over {})", duration_text(opts.window_ms)),
            Matching::Record => "one record".into(),
        }
    );
    let _ = writeln!(r, "| base confidence | {} |\n", opts.confidence);
    let _ = writeln!(r, "Servers:\n");
    for s in sets {
        let _ = writeln!(r, "- {}", s.join(", "));
    }
    r
}

impl GeneratedPack {
    /// Writes the pack into `dir` (created if missing). Existing generated `rules/*.rules`
    /// files that the pack no longer has are removed when `replace` is set; otherwise a
    /// directory that already holds a `pack.yaml` is refused.
    pub fn write_to(&self, dir: &Path, replace: bool) -> Result<(), GenError> {
        if dir.join("pack.yaml").exists() && !replace {
            return Err(GenError::Option(format!(
                "{} already holds a pack (use --force to replace it)",
                dir.display()
            )));
        }
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules)?;
        if replace {
            for e in std::fs::read_dir(&rules)? {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "rules") {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        for (path, text) in &self.files {
            std::fs::write(dir.join(path), text)?;
        }
        Ok(())
    }
}
