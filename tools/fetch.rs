//! `mailtool fetch`: to be written.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct FetchArgs {}

pub fn run(_args: FetchArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
