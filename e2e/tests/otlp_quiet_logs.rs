//! Spans are exported whatever the log filter: a service logging only
//! warnings (as production often does) still sends whole traces.

use conclave_common::grpc::GrpcServer;
use conclave_common::telemetry::{LogConfig, TraceConfig};
use conclave_stack::trace_collector::{TraceCollector, render_tree};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[test]
fn a_warn_log_filter_does_not_empty_the_traces() {
    // The test's own filter must be the one configured below. No other
    // thread exists yet.
    unsafe { std::env::remove_var("RUST_LOG") };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let collector = TraceCollector::start("127.0.0.1:0").await.unwrap();
            let log = LogConfig {
                filter: "warn".into(),
                ..LogConfig::default()
            };
            let trace = TraceConfig {
                otlp_endpoint: collector.endpoint(),
                export_delay: 50,
                ..TraceConfig::default()
            };
            let telemetry =
                conclave_common::telemetry::init("quiet-service", &log, &trace, false).unwrap();
            assert!(conclave_common::telemetry::exporting());
            let stop = CancellationToken::new();
            let server = GrpcServer::start("127.0.0.1:0", Default::default(), &[], stop.clone())
                .await
                .unwrap();
            let endpoint = server.local_addr().to_string();

            let span = tracing::info_span!("login", trace_id = tracing::field::Empty);
            let served = conclave_common::trace::root(span, async {
                conclave_common::grpc::health_check(&endpoint, "").await
            })
            .await;
            assert_eq!(served, Ok(true));

            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let spans = collector.spans();
                let root = spans.iter().find(|s| s.name == "login");
                let check = root.and_then(|root| {
                    spans.iter().find(|s| {
                        s.trace_id == root.trace_id
                            && s.name == "/grpc.health.v1.Health/Check"
                            && s.kind == "server"
                    })
                });
                if check.is_some() {
                    assert!(spans.iter().all(|s| s.service == "quiet-service"));
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no whole trace with log filter `warn`; received:\n{}",
                    render_tree(&spans)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stop.cancel();
            telemetry.shutdown().await;
        });
}
