use clap::Parser;
use conclave_common::cli::CommonArgs;

/// Conclave cluster manager: worker registry, schedulers, liveness, cluster events.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Ask the gRPC health service at HOST:PORT and exit 0 if it is serving.
    #[arg(long, value_name = "HOST:PORT")]
    health_check: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(endpoint) = args.health_check {
        conclave_common::cli::health_check_exit(&endpoint).await;
    }
    let config: cluster_manager::Config = args.common.load()?;
    if args.common.print_config {
        print!("{}", conclave_common::config::to_toml(&config));
        return Ok(());
    }
    conclave_common::telemetry::init(&config.log, args.common.log_json);
    let shutdown = conclave_common::shutdown::on_signal();
    cluster_manager::run(config, shutdown).await?;
    Ok(())
}
