//! `flowprint check`

use super::{DiagFormat, RuleArgs, has_errors, print_diagnostics};
use std::path::PathBuf;

/// Arguments of `check`.
#[derive(clap::Args)]
pub struct Args {
    /// Rule files or pack directories; without any, the bundled packs are checked.
    pub paths: Vec<PathBuf>,
    /// Diagnostics as text or JSON lines.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiagFormat,
    /// Also load the packs installed here (packs the checked ones depend on).
    #[arg(long, value_name = "DIR")]
    pub packs_dir: Option<PathBuf>,
    /// A local overrides file to check with the rules.
    #[arg(long, value_name = "FILE")]
    pub overrides: Option<PathBuf>,
}

/// Runs `check`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    // The bundled packs are checked without paths, and loaded as context when a checked pack
    // depends on one of them.
    let needs_bundled = args.paths.iter().any(|p| {
        flowprint::sources::manifest::Manifest::read(p).is_ok_and(|m| {
            m.depends.keys().any(|d| {
                flowprint::embedded::PACK_MANIFESTS
                    .iter()
                    .any(|(name, _)| name == d)
            })
        })
    });
    let rules = RuleArgs {
        no_default_rules: !args.paths.is_empty() && !needs_bundled,
        rules: args.paths,
        packs_dir: args.packs_dir,
        overrides: args.overrides,
    };
    let compiled = rules.compile();
    print_diagnostics(&compiled, args.format)?;
    if args.format == DiagFormat::Text {
        eprintln!(
            "checked {} file(s): {} rule(s) compiled, {} error(s), {} warning(s)",
            compiled.sources.iter().count(),
            compiled.ruleset.len(),
            compiled.errors(),
            compiled.warnings()
        );
    }
    Ok(if has_errors(&compiled) { 1 } else { 0 })
}
