//! Helpers for tests that start the real binaries: find a third-party tool,
//! start a service process and read the address it bound from its log.

pub use crate::process::ServiceProcess;
pub use conclave_common::handshake::field;
use std::path::PathBuf;

/// A binary of this workspace, built next to the running test's target
/// directory (`cargo test --workspace` builds every binary first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "binary `{name}` not found near {}: run `cargo build --workspace` (scripts/test.sh does)",
        exe.display()
    );
}

/// The `grpcurl` to test with: `$GRPCURL`, else one on PATH. `None` means the
/// caller should skip (the test setup in `scripts/test.sh` installs it; under
/// `CI=true` a missing grpcurl is a failure, not a skip).
pub fn grpcurl() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GRPCURL")
        && !p.is_empty()
    {
        return Some(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("grpcurl"))
            .find(|p| p.is_file())
    });
    if found.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("grpcurl is required under CI=true: run the tests through scripts/test.sh");
    }
    found
}

/// Run a command to completion: (success, stdout and stderr).
pub fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Poll `check` every 25 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The services `grpcurl list` shows, sorted: one per line of its output.
pub fn listed_services(grpcurl_list: &str) -> Vec<String> {
    let mut names: Vec<String> = grpcurl_list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    names.sort();
    names
}

/// What reflection should list on a server serving `service`: exactly it,
/// health and reflection.
pub fn expected_services(service: &str) -> Vec<String> {
    let mut names: Vec<String> = [
        service,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .map(String::from)
    .to_vec();
    names.sort();
    names
}
