use clap::Parser;
use conclave_common::cli::{CommonArgs, run_service};

/// Conclave conference node: the controller of one room, spawned by a conference agent.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// This node's id (`<agent worker id>_<n>`); same as --set node_id=ID.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(id) = args.node_id.take() {
        args.common.set.push(format!("node_id={id}"));
    }
    run_service(&args.common, conference::run)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
