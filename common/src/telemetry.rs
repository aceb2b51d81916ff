//! Logging through `tracing`: an env filter, human-readable lines by default,
//! JSON lines on request.

use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// The `[log]` table of every service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "human" (default) or "json".
    pub format: String,
    /// Filter directives as in RUST_LOG (default "info"); RUST_LOG wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "human".into(),
            filter: "info".into(),
        }
    }
}

/// Install the global subscriber. Safe to call more than once (tests start
/// several services in one process); later calls are no-ops.
pub fn init(config: &LogConfig, force_json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: piped logs (containers, tests) stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let result = if force_json || config.format.eq_ignore_ascii_case("json") {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder.try_init()
    };
    // Already installed: keep the first subscriber.
    drop(result);
}
