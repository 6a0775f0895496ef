//! `respawn ctl restore`: rolls a zone back to a cold snapshot
//! (point-in-time restore, [`respawn_zone::rollback`]), working on the
//! stores directly.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use respawn_harness::zone::StoreFlags;
use respawn_zone::rollback::{self, RestorePoint};
use respawn_zone::ServerConfig;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Zone name (or numeric id).
    #[arg(long)]
    zone: String,
    /// A tick number, or a UTC time like 2026-11-26T10:00:00Z.
    #[arg(long)]
    at: String,
    /// Do it; without this flag only say what would be done.
    #[arg(long)]
    yes: bool,
    /// The zone server's configuration file (to find the zone's id).
    #[arg(long, env = "RESPAWN_ZONE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    stores: StoreFlags,
}

pub async fn run(args: RestoreArgs) -> Result<()> {
    let config = ServerConfig::load_or_defaults(args.config.as_deref())?;
    let zone = config.zone(&args.zone).map_err(anyhow::Error::msg)?;
    let at: RestorePoint = args.at.parse().map_err(|e| anyhow!("--at {e}"))?;
    let stores = crate::build_stores(&args.stores).await?;
    let plan = rollback::plan(&stores, zone.zone_id, at).await?;
    println!(
        "zone {} (id {}): cold snapshot at tick {} taken at {} ms, {} players; {} newer cold snapshots would be deleted",
        zone.name, zone.zone_id, plan.target.tick, plan.target.taken_at_ms, plan.players, plan.newer
    );
    if !args.yes {
        println!("dry run: rerun with --yes to restore (stop the zone server first)");
        return Ok(());
    }
    let deleted = rollback::apply(&stores, plan).await?;
    println!(
        "restored: {deleted} newer cold snapshots and the history after the point deleted, hot snapshot and journal reset; start the zone server"
    );
    Ok(())
}
