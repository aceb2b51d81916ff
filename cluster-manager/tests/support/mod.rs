//! Helpers shared by the cluster manager's integration tests: a manager on a
//! loopback port, a client, and workers driven by the real cluster-worker client.
#![allow(dead_code)]

use cluster_manager::{ClusterManager, Config};
use conclave_common::cluster_worker::{ClusterConfig, ClusterWorker};
use conclave_common::grpc::Channel;
use conclave_common::load::ManualLoad;
use conclave_proto::cluster::v1 as pb;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
#[allow(unused_imports)] // not every test file waits
pub use conclave_stack::testing::eventually;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Running {
    pub manager: ClusterManager,
    pub shutdown: CancellationToken,
    pub addr: String,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.manager.stopped().await.unwrap();
    }
}

pub fn config(listen: &str) -> Config {
    Config {
        listen: listen.to_string(),
        ..Config::loopback()
    }
}

pub async fn start(config: Config) -> Running {
    let shutdown = CancellationToken::new();
    let manager = cluster_manager::start(config, shutdown.clone())
        .await
        .unwrap();
    let addr = manager.local_addr().to_string();
    Running {
        manager,
        shutdown,
        addr,
    }
}

pub fn client(addr: &str) -> ClusterManagerClient<Channel> {
    ClusterManagerClient::new(conclave_common::grpc::channel(addr, Duration::from_secs(2)).unwrap())
}

pub fn worker_config(addr: &str) -> ClusterConfig {
    ClusterConfig {
        manager: addr.to_string(),
        join_retry: 5,
        report_load_interval: 100,
        ..ClusterConfig::default()
    }
}

pub fn info(port: u32) -> pb::WorkerInfo {
    pb::WorkerInfo {
        ip: "127.0.0.1".into(),
        hostname: "test-host".into(),
        port,
        grpc_endpoint: format!("127.0.0.1:{port}"),
        max_load: 0.85,
        ..Default::default()
    }
}

pub async fn worker(
    addr: &str,
    purpose: &str,
    port: u32,
    load: f64,
) -> (ClusterWorker, ManualLoad) {
    let load_source = ManualLoad::new(load);
    let w = ClusterWorker::join(
        worker_config(addr),
        purpose.parse().expect("a Conclave purpose"),
        info(port),
        Arc::new(load_source.clone()),
    )
    .await
    .unwrap();
    (w, load_source)
}

/// The worker's load as the manager sees it.
pub async fn load_of(addr: &str, id: &str) -> Option<f64> {
    client(addr)
        .get_worker_attr(pb::GetWorkerAttrRequest {
            worker_id: id.to_string(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().load)
}

pub async fn schedule(addr: &str, purpose: &str, task: &str) -> Result<String, tonic::Status> {
    client(addr)
        .schedule(pb::ScheduleRequest {
            purpose: purpose.into(),
            task: task.into(),
            preference: None,
            reserve_time_ms: 30_000,
        })
        .await
        .map(|r| r.into_inner().id)
}

/// Any purpose string, as the manager accepts (and refuses) them.
pub async fn get_scheduled(addr: &str, purpose: &str, task: &str) -> Result<String, tonic::Status> {
    client(addr)
        .get_scheduled(pb::GetScheduledRequest {
            purpose: purpose.into(),
            task: task.into(),
        })
        .await
        .map(|r| r.into_inner().worker_id)
}

/// The tasks the manager holds for worker `id`.
pub async fn tasks_of(addr: String, id: String) -> Vec<String> {
    client(&addr)
        .get_tasks(pb::GetTasksRequest { worker_id: id })
        .await
        .unwrap()
        .into_inner()
        .tasks
}
