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
}

/// Runs `check`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let rules = RuleArgs {
        no_default_rules: !args.paths.is_empty(),
        rules: args.paths,
    };
    let compiled = rules.compile()?;
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
