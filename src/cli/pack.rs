//! `flowprint pack`: create, test, build, sign, verify, install and list rule packs.

use super::pack_gen;

/// Arguments of `pack`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Generate a pack from a catalogue of exact download sizes.
    Gen(pack_gen::GenArgs),
}

/// Runs `pack`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    match args.what {
        What::Gen(a) => pack_gen::run(a),
    }
}
