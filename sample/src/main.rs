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
    // an HTTP server: its health check asks /healthz, not gRPC health;
    // over https when the page is served so, trusting the configured CA
    if let Some(addr) = args.common.health_check.take() {
        let config: conclave_sample::config::Config = args.common.load()?;
        let tls = if config.tls.enabled() {
            let ca = [&config.rest_ca, &config.grpc_tls.ca]
                .into_iter()
                .find(|ca| !ca.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("an https health check needs rest_ca or grpc_tls.ca to trust")
                })?;
            Some(conclave_sample::owt_rest::TlsClient::from_ca_file(ca)?)
        } else {
            None
        };
        std::process::exit(if conclave_sample::healthy(&addr, tls.as_ref()).await {
            0
        } else {
            1
        });
    }
    run_service(&args.common, conclave_sample::run)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
