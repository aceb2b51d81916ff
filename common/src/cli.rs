//! Command-line flags every Conclave binary shares.

use crate::config::{self, ConfigError};
use crate::telemetry::{LogConfig, TraceConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Flags common to every service; flatten into the binary's own parser.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// TOML configuration file (keys as printed by --print-config).
    #[arg(long, short = 'c', env = "CONCLAVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. --set manager.check_alive_count=5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the effective configuration (defaults and overrides) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
    /// Ask the gRPC health service at HOST:PORT, exit 0 if it is serving.
    #[arg(long, value_name = "HOST:PORT")]
    pub health_check: Option<String>,
}

/// A service configuration: serde-loadable with defaults, with `[log]` and
/// `[trace]` tables.
pub trait ServiceConfig: Serialize + DeserializeOwned + Default {
    /// The service's name in exported traces (`service.name`).
    const SERVICE: &'static str;
    fn log(&self) -> &LogConfig;
    fn trace(&self) -> &TraceConfig;
    /// The `[tls]` table of a service with gRPC (mutual TLS); none for
    /// services without gRPC.
    fn tls(&self) -> Option<&crate::tls::ServiceTls> {
        None
    }
}

/// What every binary's `main` does: answer `--health-check` or
/// `--print-config`, else load the configuration, start telemetry and run the
/// service until SIGINT or SIGTERM.
pub async fn run_service<C, F, Fut, E>(
    args: &CommonArgs,
    run: F,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    C: ServiceConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let config: C = args.load()?;
    if let Some(endpoint) = &args.health_check {
        // the check speaks the service's own gRPC: TLS when it has [tls]
        if let Some(tls) = config.tls() {
            crate::grpc::configure_tls(tls)?;
        }
        health_check_exit(endpoint).await;
    }
    if args.print_config {
        print!("{}", config::to_toml(&config));
        return Ok(());
    }
    let telemetry =
        crate::telemetry::init(C::SERVICE, config.log(), config.trace(), args.log_json)?;
    if let Some(tls) = config.tls() {
        crate::grpc::configure_tls(tls)?;
    }
    let open_files = crate::limits::raise_open_files();
    tracing::debug!(?open_files, "limit on open files");
    let shutdown = crate::shutdown::on_signal();
    if crate::shutdown::exit_with_stdin_requested() {
        crate::shutdown::watch_stdin(
            shutdown.clone(),
            "the parent process is gone, shutting down",
        );
    }
    let result = run(config, shutdown).await;
    telemetry.shutdown().await;
    result?;
    Ok(())
}

impl CommonArgs {
    /// Defaults, then the file, then `CONCLAVE_*` variables, then `--set`.
    pub fn load<T: Serialize + DeserializeOwned + Default>(&self) -> Result<T, ConfigError> {
        config::load(self.config.as_deref(), std::env::vars(), &self.set)
    }
}

/// `--health-check HOST:PORT`: exit 0 when the server reports SERVING, 1
/// otherwise (for container health checks in images without a shell).
pub async fn health_check_exit(endpoint: &str) -> ! {
    match crate::grpc::health_check(endpoint, "").await {
        Ok(true) => std::process::exit(0),
        Ok(false) => {
            eprintln!("{endpoint}: not serving");
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("{endpoint}: {e}");
            std::process::exit(1)
        }
    }
}
