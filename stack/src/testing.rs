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

/// Whether a third-party server the tests start (`what`) is on this
/// machine; a skip with a reason when not, but under `CI=true` a failure:
/// the test command installs it (`install` says how).
pub fn required(found: bool, what: &str, install: &str) -> bool {
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{what} is required under CI=true: run the tests through scripts/test.sh ({install})"
            );
        }
        eprintln!("SKIPPED: no {what} ({install})");
    }
    found
}

/// The first port of the kernel's ephemeral range (what binding port 0 hands out).
fn ephemeral_ports_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
}

/// A free port on the loopback address (free when asked: bind it soon).
/// Taken below the kernel's ephemeral range, so that no process binding
/// port 0 (a conference node, a client's connection) is given it before
/// its user binds it; each port at most once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static FIRST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let low = ephemeral_ports_start();
    const FLOOR: u32 = 10_000;
    if low > FLOOR + 1_000 {
        let span = low - FLOOR;
        // test processes that run at once start at different places
        let first = *FIRST.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            (std::process::id().wrapping_mul(7_919) ^ nanos) % span
        });
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (FLOOR + (first + n) % span) as u16;
            let free = |host: &str| std::net::TcpListener::bind((host, port)).is_ok();
            if free("0.0.0.0") && free("127.0.0.1") {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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

/// gRPC clients and look-ups the tests of every crate share.
pub mod grpc {
    use conclave_common::grpc::Channel;
    use conclave_common::purpose::Purpose;
    use conclave_proto::agent::v1::node_manager_client::NodeManagerClient;
    use conclave_proto::cluster::v1 as cluster;
    use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
    use conclave_proto::conference::v1::conference_client::ConferenceClient;
    use conclave_proto::management::v1 as mgmt;
    use conclave_proto::management::v1::management_client::ManagementClient;
    use conclave_proto::portal::v1::portal_client::PortalClient;
    use std::time::Duration;

    /// Tests wait longer than OWT's 2 s: a busy CI machine is slow.
    const DEADLINE: Duration = Duration::from_secs(6);

    fn channel(addr: &str) -> Channel {
        conclave_common::grpc::channel(addr, DEADLINE).expect("a valid address")
    }

    pub fn manager(addr: &str) -> ClusterManagerClient<Channel> {
        ClusterManagerClient::new(channel(addr))
    }

    pub fn management(addr: &str) -> ManagementClient<Channel> {
        ManagementClient::new(channel(addr))
    }

    pub fn node_manager(addr: &str) -> NodeManagerClient<Channel> {
        NodeManagerClient::new(channel(addr))
    }

    pub fn conference(addr: &str) -> ConferenceClient<Channel> {
        ConferenceClient::new(channel(addr))
    }

    pub fn portal(addr: &str) -> PortalClient<Channel> {
        PortalClient::new(channel(addr))
    }

    /// A room named `name` for at most `limit` participants; its id.
    pub async fn create_room(management_addr: &str, name: &str, limit: i32) -> String {
        management(management_addr)
            .create_room(mgmt::CreateRoomRequest {
                name: name.into(),
                participant_limit: Some(limit),
                ..Default::default()
            })
            .await
            .expect("CreateRoom")
            .into_inner()
            .id
    }

    /// A join token for `user` as `role` in `room`.
    pub async fn create_token(management_addr: &str, room: &str, user: &str, role: &str) -> String {
        management(management_addr)
            .create_token(mgmt::CreateTokenRequest {
                room_id: room.into(),
                user: user.into(),
                role: role.into(),
                preference: None,
            })
            .await
            .expect("CreateToken")
            .into_inner()
            .token
    }

    /// The worker the manager has `task` of `purpose` scheduled on.
    pub async fn scheduled(
        manager_addr: &str,
        purpose: Purpose,
        task: &str,
    ) -> Result<String, tonic::Status> {
        manager(manager_addr)
            .get_scheduled(cluster::GetScheduledRequest {
                purpose: purpose.to_string(),
                task: task.into(),
            })
            .await
            .map(|r| r.into_inner().worker_id)
    }

    /// The tasks the manager lists for `worker`.
    pub async fn tasks_of(manager_addr: &str, worker: &str) -> Vec<String> {
        manager(manager_addr)
            .get_tasks(cluster::GetTasksRequest {
                worker_id: worker.into(),
            })
            .await
            .expect("GetTasks")
            .into_inner()
            .tasks
    }
}

#[cfg(test)]
mod tests {
    use super::{ephemeral_ports_start, free_port};

    #[test]
    fn free_ports_are_bindable_distinct_and_below_the_ephemeral_range() {
        let low = ephemeral_ports_start();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for port in ports {
            assert!(
                u32::from(port) < low,
                "{port} is in the ephemeral range from {low}"
            );
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bindable");
        }
    }
}
