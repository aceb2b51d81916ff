use clap::Parser;
use conclave_common::cli::{CommonArgs, run_service};

/// Conclave management: rooms and one-time join tokens.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Copy the configured store (the SQLite file in data_dir, or
    /// store.url) into TARGET and exit: a `postgres://` URL, or a directory
    /// for a SQLite file. Services, rooms and unconsumed tokens; records
    /// TARGET has already are kept, so it can run again.
    #[arg(long, value_name = "TARGET")]
    copy_store_to: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(target) = &args.copy_store_to {
        let config: management::Config = args.common.load()?;
        let report = management::copy_store(&config, target).await?;
        println!(
            "copied {} services, {} rooms, {} tokens ({} already there)",
            report.services, report.rooms, report.tokens, report.skipped
        );
        return Ok(());
    }
    run_service(&args.common, management::run)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
