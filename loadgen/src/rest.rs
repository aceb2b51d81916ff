//! The REST benchmark (issue 17): token creations per second through OWT's
//! REST API with MAuth, as the official client makes them (a new connection
//! per request, replay protection on), against gRPC `CreateToken` in the same
//! run; and what the replay check itself costs per request.

use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use conclave_stack::owt_rest::OwtRest;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct RestReport {
    pub seconds: f64,
    pub parallel: usize,
    pub rest_tokens_per_second: f64,
    pub rest_failed: usize,
    pub grpc_tokens_per_second: f64,
    pub grpc_failed: usize,
    /// One MAuth replay check (timestamp window and cnonce), with the guard
    /// holding `replay_remembered` cnonces.
    pub replay_check_ns: f64,
    pub replay_remembered: usize,
}

/// Run `make` from `parallel` workers for `seconds`; (successes/s, failures).
pub(crate) async fn rate<F, Fut>(seconds: f64, parallel: usize, make: F) -> (f64, usize)
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..parallel)
        .map(|w| {
            let (ok, failed, make) = (ok.clone(), failed.clone(), make.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let counter = if make(w, i).await { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        (ok.load(Ordering::Relaxed) as f64 / elapsed).round(),
        failed.load(Ordering::Relaxed),
    )
}

pub async fn rest_tokens(
    management: &str,
    rest_addr: &str,
    seconds: f64,
    parallel: usize,
) -> anyhow::Result<RestReport> {
    let mut m = ManagementClient::new(conclave_common::grpc::channel(
        management,
        Duration::from_secs(10),
    )?);
    let service = m
        .create_service(mgmt::CreateServiceRequest {
            name: format!("bench-{}", std::process::id()),
            key: None,
        })
        .await?
        .into_inner();
    let rest = OwtRest::new(&service.id, &service.key, rest_addr);
    let room = rest.create_room("bench", serde_json::json!({})).await?;
    anyhow::ensure!(room.status == 200, "creating a room over REST: {room:?}");
    let room = room.json()["_id"].as_str().unwrap_or_default().to_string();
    // the same room, owned by another service, for gRPC
    let grpc_room = m
        .create_room(mgmt::CreateRoomRequest {
            name: "bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;

    let (rest_rate, rest_failed) = {
        let (rest, room) = (rest.clone(), room.clone());
        rate(seconds, parallel, move |w, i| {
            let (rest, room) = (rest.clone(), room.clone());
            async move {
                rest.create_token(&room, &format!("u{w}-{i}"), "presenter")
                    .await
                    .is_ok_and(|a| a.status == 200)
            }
        })
        .await
    };
    let (grpc_rate, grpc_failed) = rate(seconds, parallel, move |w, i| {
        let (mut m, room) = (m.clone(), grpc_room.clone());
        async move {
            m.create_token(mgmt::CreateTokenRequest {
                room_id: room,
                user: format!("u{w}-{i}"),
                role: "presenter".into(),
                preference: None,
            })
            .await
            .is_ok()
        }
    })
    .await;

    // the replay check alone, on a guard as full as a busy minute leaves it
    let guard = management::mauth::ReplayGuard::new(300_000, 1_000_000);
    let now = 1_700_000_000_000i64;
    let remembered = 200_000;
    for i in 0..remembered {
        guard.check("svc", &format!("{i:016x}"), now, now)?;
    }
    let n = 200_000;
    let started = Instant::now();
    for i in 0..n {
        guard.check("svc", &format!("x{i:015x}"), now, now + 1)?;
    }
    let replay_check_ns = started.elapsed().as_nanos() as f64 / n as f64;

    Ok(RestReport {
        seconds,
        parallel,
        rest_tokens_per_second: rest_rate,
        rest_failed,
        grpc_tokens_per_second: grpc_rate,
        grpc_failed,
        replay_check_ns: replay_check_ns.round(),
        replay_remembered: remembered + n,
    })
}
