//! `conclave-chaos`: the load generator's chaos mode. Starts a whole stack
//! of real processes here (etcd, two managers, management replicas, two
//! agents, two portals), has participants text their rooms over both
//! portals, and kills, stops or drains a process every few seconds; prints
//! what was lost (nothing, it should be), the recovery times and the
//! memory of every service, and exits non-zero when anything was lost.

use clap::Parser;
use loadgen::chaos::{Config, FaultKind};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(version)]
struct Args {
    #[arg(long, default_value_t = 500)]
    participants: usize,
    #[arg(long, default_value_t = 50)]
    room_size: usize,
    /// Length of the run, in seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Seconds from one fault to the next (at least).
    #[arg(long, default_value_t = 3.0)]
    fault_every: f64,
    /// Seconds a stopped process stays stopped.
    #[arg(long, default_value_t = 5.0)]
    stall: f64,
    /// Seconds between two texts of one participant.
    #[arg(long, default_value_t = 2.0)]
    text_every: f64,
    /// Seed of the fault order (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the service binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The faults to inflict, comma-separated (default: all): kill-portal,
    /// kill-node, kill-agent, kill-leader, kill-management, stop-portal,
    /// stop-node, stop-agent, stop-leader, stop-management, drain-portal.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match args.bin_dir {
        Some(d) => d,
        None => conclave_stack::Options::beside_this_executable().bin_dir,
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let kinds = if args.kinds.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.kinds
            .iter()
            .map(|k| FaultKind::from_key(k).ok_or_else(|| anyhow::anyhow!("no fault kind {k}")))
            .collect::<anyhow::Result<_>>()?
    };
    let data_dir = std::env::temp_dir().join(format!("conclave-chaos-{}", std::process::id()));
    let config = Config {
        participants: args.participants,
        room_size: args.room_size,
        duration: Duration::from_secs(args.seconds),
        fault_every: Duration::from_secs_f64(args.fault_every),
        stall: Duration::from_secs_f64(args.stall),
        text_every: Duration::from_secs_f64(args.text_every),
        kinds,
        seed,
        bin_dir,
        data_dir: data_dir.clone(),
    };
    let report = loadgen::chaos::run(config).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let report = report.map_err(|e| anyhow::anyhow!(e))?;
    println!("{}", report.markdown());
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if !report.clean() {
        anyhow::bail!("seats, texts or processes were lost (above)");
    }
    Ok(())
}
