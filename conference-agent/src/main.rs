use clap::Parser;
use conclave_common::cli::{CommonArgs, run_service};

/// Conclave conference-agent: spawns and supervises conference nodes, one room per node.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run_service(&args.common, conference_agent::run)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
