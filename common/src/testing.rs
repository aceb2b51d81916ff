//! Helpers for tests that start the real binaries: find a third-party tool,
//! start a service process and read the address it bound from its log.

pub use crate::handshake::field;
pub use crate::process::ServiceProcess;
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
