//! `flowprint pack gen`: generate a pack from a catalogue of download sizes.

/// Arguments of `pack gen`.
#[derive(clap::Args)]
pub struct GenArgs {}

/// Runs `pack gen`.
pub fn run(_args: GenArgs) -> anyhow::Result<i32> {
    anyhow::bail!("pack gen is being written")
}
