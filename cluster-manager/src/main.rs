use clap::Parser;
use conclave_common::cli::{CommonArgs, run_service};

/// Conclave cluster-manager: worker registry, schedulers, liveness, cluster events.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run_service(&args.common, cluster_manager::run)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
