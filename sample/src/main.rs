use clap::Parser;
use conclave_common::cli::{CommonArgs, run_service};

/// Conclave's sample application server and conference page.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // an HTTP server: its health check asks /healthz, not gRPC health
    if let Some(addr) = args.common.health_check.take() {
        std::process::exit(if conclave_sample::healthy(&addr).await {
            0
        } else {
            1
        });
    }
    run_service(&args.common, conclave_sample::run)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
