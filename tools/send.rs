//! `mailtool send`: to be written.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct SendArgs {}

pub fn run(_args: SendArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
