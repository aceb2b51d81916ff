//! The gRPC server layer's metrics against made-up methods: a caller who
//! invents paths gets UNIMPLEMENTED and one `method="unknown"` series, not a
//! series per path.

use conclave_common::grpc::{GrpcServer, channel};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn made_up_methods_share_one_metrics_series() {
    let metrics = conclave_common::metrics::handle();
    let stop = CancellationToken::new();
    let server = GrpcServer::start("127.0.0.1:0", Default::default(), &[], stop.clone())
        .await
        .unwrap();
    let endpoint = server.local_addr().to_string();
    let mut grpc = tonic::client::Grpc::new(channel(&endpoint, Duration::from_secs(5)).unwrap());

    for i in 0..50 {
        grpc.ready().await.unwrap();
        let path = format!("/made.up.v{i}.Service/Method{i}").parse().unwrap();
        let status = grpc
            .unary::<_, tonic_health::pb::HealthCheckResponse, _>(
                tonic::Request::new(HealthCheckRequest::default()),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
    assert!(
        conclave_common::grpc::health_check(&endpoint, "")
            .await
            .unwrap()
    );

    let text = metrics.render();
    assert!(!text.contains("made.up"), "{text}");
    let sample = |series: &str| {
        text.lines()
            .find(|l| l.starts_with(series) && l.contains("method=\"unknown\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(sample("grpc_server_requests_total"), Some(50.0), "{text}");
    assert_eq!(sample("grpc_client_requests_total"), Some(50.0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("grpc_server_requests_total")
                && l.contains("method=\"/grpc.health.v1.Health/Check\"")),
        "known methods keep their name: {text}"
    );
    stop.cancel();
}
