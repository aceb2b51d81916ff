//! Graceful shutdown: one cancellation token that every task of a service
//! selects on, cancelled by SIGINT or SIGTERM, and, for a service whose
//! parent asks for it, by the end of its standard input.

use tokio_util::sync::CancellationToken;

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Resolves on the first SIGINT or SIGTERM.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; waiting for SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Set to `true` by a parent that holds a pipe to the service's standard
/// input (the local-stack launcher, tests): the service stops when the pipe
/// closes, which the kernel does when the parent dies however it died
/// (SIGKILL included). Also the conference node's `exit_with_stdin` key.
pub const EXIT_WITH_STDIN_ENV: &str = "CONCLAVE_EXIT_WITH_STDIN";

/// Whether this process's parent asked it to stop when standard input ends.
pub fn exit_with_stdin_requested() -> bool {
    std::env::var(EXIT_WITH_STDIN_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Cancel `token` when standard input reaches its end (or fails).
pub fn watch_stdin(token: CancellationToken, why: &'static str) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        tracing::warn!("standard input closed: {why}");
        token.cancel();
    });
}

/// A token cancelled when the process receives SIGINT or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
    });
    token
}
