use clap::Parser;
use conclave_common::cli::{CommonArgs, run_service};

/// Conclave management: rooms and one-time join tokens.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run_service(&args.common, management::run)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
