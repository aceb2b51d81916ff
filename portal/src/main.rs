use clap::Parser;
use conclave_common::cli::{CommonArgs, run_service};

/// Conclave portal: the Socket.IO endpoint OWT clients log in to.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run_service(&args.common, portal::run)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
