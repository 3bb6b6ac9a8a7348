//! `mailtool stress`: to be written.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct StressArgs {}

pub fn run(_args: StressArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
