//! The store benchmark (issue 21): token creations and consumptions per
//! second through management's gRPC, on whichever store the stack's
//! management uses (the embedded SQLite, or PostgreSQL); the run measures
//! both, one stack after the other.

use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    /// "sqlite" or "postgres".
    pub store: String,
    pub parallel: usize,
    /// `CreateToken` for this long, from `parallel` workers.
    pub seconds: f64,
    pub created_per_second: f64,
    pub create_failed: usize,
    /// Every token made, consumed once by `parallel` workers.
    pub consumed: usize,
    pub consumed_per_second: f64,
    pub consume_failed: usize,
}

pub async fn store_tokens(
    management: &str,
    store: &str,
    seconds: f64,
    parallel: usize,
) -> anyhow::Result<StoreReport> {
    let channel = conclave_common::grpc::channel(management, Duration::from_secs(10))?;
    let room = ManagementClient::new(channel.clone())
        .create_room(mgmt::CreateRoomRequest {
            name: "store bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;
    let made = Arc::new(Mutex::new(Vec::new()));
    let (created_per_second, create_failed) = {
        let (channel, made) = (channel.clone(), made.clone());
        crate::rest::rate(seconds, parallel, move |w, i| {
            let (channel, made, room) = (channel.clone(), made.clone(), room.clone());
            async move {
                let reply = ManagementClient::new(channel)
                    .create_token(mgmt::CreateTokenRequest {
                        room_id: room,
                        user: format!("u{w}-{i}"),
                        role: "presenter".into(),
                        preference: None,
                    })
                    .await;
                match reply.ok().and_then(|r| {
                    conclave_common::token::JoinToken::decode(&r.into_inner().token).ok()
                }) {
                    Some(t) => {
                        made.lock().unwrap().push(t.token_id);
                        true
                    }
                    None => false,
                }
            }
        })
        .await
    };
    let ids: Vec<String> = std::mem::take(&mut *made.lock().unwrap());
    let consumed = ids.len();
    let chunks: Vec<Vec<String>> = ids
        .chunks(consumed.div_ceil(parallel.max(1)).max(1))
        .map(<[String]>::to_vec)
        .collect();
    let started = Instant::now();
    let workers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let mut failed = 0;
                for id in chunk {
                    if ManagementClient::new(channel.clone())
                        .consume_token(mgmt::ConsumeTokenRequest { token_id: id })
                        .await
                        .is_err()
                    {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let mut consume_failed = 0;
    for w in workers {
        consume_failed += w.await.unwrap_or(usize::MAX / 2);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(StoreReport {
        store: store.to_string(),
        parallel,
        seconds,
        created_per_second,
        create_failed,
        consumed,
        consumed_per_second: ((consumed - consume_failed.min(consumed)) as f64 / elapsed).round(),
        consume_failed,
    })
}
