//! `Failover`: a comma-separated list of replicas; calls move past one that
//! cannot be reached, stay on the one that answered, and come back when it
//! is the only one left.

use conclave_common::grpc::{Failover, GrpcServer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn check(
    replicas: &Failover,
    seen: &std::sync::Mutex<Vec<usize>>,
) -> Result<(), tonic::Status> {
    let mut attempt = 0;
    replicas
        .call(|channel| {
            attempt += 1;
            seen.lock().unwrap().push(attempt);
            async move {
                HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .map(|_| ())
            }
        })
        .await
}

#[tokio::test]
async fn calls_move_past_an_unreachable_replica_and_stay_where_answered() {
    // a port nothing listens on
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let stop = CancellationToken::new();
    let server = GrpcServer::start("127.0.0.1:0", Default::default(), &[], stop.clone())
        .await
        .unwrap();
    let live = server.local_addr().to_string();
    let replicas = Failover::new(&format!("{dead_addr}, {live}"), Duration::from_secs(2)).unwrap();
    assert_eq!(replicas.addresses(), [dead_addr.as_str(), live.as_str()]);

    let seen = std::sync::Mutex::new(Vec::new());
    check(&replicas, &seen).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 2],
        "the dead one, then the live one"
    );
    seen.lock().unwrap().clear();
    check(&replicas, &seen).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [1],
        "straight to the one that answered"
    );

    // with every replica gone, the caller gets Unavailable
    stop.cancel();
    server.stopped().await.unwrap();
    seen.lock().unwrap().clear();
    let status = check(&replicas, &seen).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(seen.lock().unwrap().len(), 2, "both tried");

    assert!(Failover::new(" , ", Duration::from_secs(1)).is_err());
}
