//! The Conclave load generator: drives a running stack (or the bare baseline
//! server) with its own Socket.IO client and measures login, relogin,
//! fan-out, idle memory per connection and scheduler throughput.

pub mod chaos;
pub mod curve;
pub mod plot;
pub mod rest;
pub mod sio;
pub mod stats;
pub mod store;

use conclave_common::grpc::Channel;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use serde::Serialize;
use serde_json::{Value, json};
use sio::Client;
use stats::{Summary, percentiles_ms, summarize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const ACK_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the stack under test is.
#[derive(Debug, Clone)]
pub struct Target {
    /// host:port of the portal's Socket.IO server.
    pub portal: String,
    pub management: String,
    pub cluster: String,
    /// The portal process, for its memory.
    pub portal_pid: Option<u32>,
    /// The conference agent, whose children are the conference nodes.
    pub agent_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginReport {
    pub logins: usize,
    pub concurrency: usize,
    pub failed: usize,
    pub latency: Summary,
    pub logins_per_second: f64,
    /// The latency at each percentile 1..=100, ms (the CDF plot's points).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percentiles_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloginReport {
    pub relogins: usize,
    pub failed: usize,
    pub latency: Summary,
    /// Texts sent to the cut participant that were not in its relogin reply.
    pub messages_lost: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub room_size: usize,
    pub rounds: usize,
    /// From the send to the last receiver having the message.
    pub last_receiver: Summary,
    pub messages_lost: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_connection: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchedulerReport {
    pub seconds: f64,
    pub new_rooms_per_second: f64,
    pub existing_rooms_per_second: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// One login at a time: the latency of the path itself.
    pub login_sequential: Option<LoginReport>,
    pub baseline_sequential: Option<LoginReport>,
    /// Many at once: throughput, and latency with queueing.
    pub login: Option<LoginReport>,
    pub baseline_login: Option<LoginReport>,
    pub relogin: Option<ReloginReport>,
    pub fanout: Vec<FanoutReport>,
    pub idle: Option<IdleReport>,
    /// The same idle connections on the bare server: what the Socket.IO
    /// library itself costs.
    pub baseline_idle: Option<IdleReport>,
    pub scheduler: Option<SchedulerReport>,
    /// Connections that come and go: what stays of them in the portal.
    pub churn: Option<ChurnReport>,
    /// Rooms per machine: what a room's conference node costs.
    pub rooms: Option<RoomsReport>,
    pub baseline_churn: Option<ChurnReport>,
    pub rest: Option<rest::RestReport>,
    /// The login and idle scenarios again on a stack where everything is
    /// TLS: clients over wss, every gRPC call mutual TLS.
    pub tls_login_sequential: Option<LoginReport>,
    pub tls_login: Option<LoginReport>,
    pub tls_idle: Option<IdleReport>,
    /// Token creations and consumptions on each store (SQLite, PostgreSQL).
    pub stores: Vec<store::StoreReport>,
    /// The sustained-load curve: the same load on 1, 2, 4 portals.
    pub curve: Vec<curve::CurvePoint>,
}

fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(conclave_common::grpc::channel(
        addr,
        Duration::from_secs(10),
    )?)
}

fn login_info(token: &str, sdk: &str) -> Value {
    json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": sdk, "version": "5.1"}}})
}

/// Rooms for load: participant notifications off unless `notify`, so that
/// a crowd joining does not turn into a storm of join events.
pub async fn make_rooms(
    management: &str,
    count: usize,
    notify: bool,
) -> anyhow::Result<Vec<String>> {
    let m = ManagementClient::new(channel(management)?);
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let id = m
            .clone()
            .create_room(mgmt::CreateRoomRequest {
                name: format!("load {i}"),
                notifying: Some(mgmt::Notifying {
                    participant_activities: notify,
                    stream_change: notify,
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .id;
        ids.push(id);
    }
    Ok(ids)
}

/// Log one participant into each room, one room at a time, so every room has
/// its conference node before a measured burst (a burst of new rooms would
/// outrun the agent's warm pool, as in OWT). The warm clients stay connected.
pub async fn warm_rooms(target: &Target, rooms: &[String]) -> anyhow::Result<Vec<Client>> {
    let mut warm = Vec::with_capacity(rooms.len());
    for room in rooms {
        let mut last = String::new();
        let mut ok = None;
        for _ in 0..100 {
            let token = make_tokens_in(&target.management, std::slice::from_ref(room), 1)
                .await?
                .remove(0)
                .1;
            let c = Client::connect(&target.portal).await?;
            match c
                .call(
                    "login",
                    &[login_info(&token, "conclave-loadgen")],
                    ACK_TIMEOUT,
                )
                .await
            {
                Ok(ack) if ack.first().and_then(Value::as_str) == Some("ok") => {
                    ok = Some(c);
                    break;
                }
                Ok(ack) => last = format!("{ack:?}"),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        warm.push(ok.ok_or_else(|| anyhow::anyhow!("room {room} did not open: {last}"))?);
    }
    Ok(warm)
}

/// `n` tokens in fresh rooms of `room_size`.
pub async fn make_tokens(
    management: &str,
    n: usize,
    room_size: usize,
    notify: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let rooms = make_rooms(management, n.div_ceil(room_size.max(1)), notify).await?;
    make_tokens_in(management, &rooms, n).await
}

/// `n` tokens spread evenly over `room_ids`, made 32 at a time.
pub async fn make_tokens_in(
    management: &str,
    room_ids: &[String],
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let m = ManagementClient::new(channel(management)?);
    let room_size = n.div_ceil(room_ids.len().max(1));
    let sem = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let room = room_ids[i / room_size.max(1)].clone();
        let mut m = m.clone();
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let token = m
                .create_token(mgmt::CreateTokenRequest {
                    room_id: room.clone(),
                    user: format!("user{i}"),
                    role: "presenter".into(),
                    preference: None,
                })
                .await
                .map(|r| r.into_inner().token);
            (room, token)
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        let (room, token) = t.await?;
        out.push((room, token?));
    }
    Ok(out)
}

/// Connect to `portal` and log in with `token` as SDK type `sdk`.
async fn connect_and_login(portal: &str, token: &str, sdk: &str) -> anyhow::Result<Client> {
    let client = Client::connect(portal).await?;
    if let Err(ack) = client
        .call_ok("login", &[login_info(token, sdk)], ACK_TIMEOUT)
        .await?
    {
        anyhow::bail!("login refused: {ack}");
    }
    Ok(client)
}

/// Connect and log in every token, `concurrency` at a time; the clients
/// that logged in, and the report.
pub async fn logins(
    portal: &str,
    tokens: Vec<String>,
    concurrency: usize,
    sdk: &str,
    progress: bool,
) -> (Vec<Client>, LoginReport) {
    logins_over(
        std::slice::from_ref(&portal.to_string()),
        tokens,
        concurrency,
        sdk,
        progress,
    )
    .await
}

/// [`logins`] spread over `portals` in turn, as a load balancer would.
pub async fn logins_over(
    portals: &[String],
    tokens: Vec<String>,
    concurrency: usize,
    sdk: &str,
    progress: bool,
) -> (Vec<Client>, LoginReport) {
    let n = tokens.len();
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, token) in tokens.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let portal = portals[i % portals.len()].clone();
        let sdk = sdk.to_string();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            let result = connect_and_login(&portal, &token, &sdk).await;
            let elapsed = t0.elapsed();
            let k = done.fetch_add(1, Ordering::Relaxed) + 1;
            if progress && k.is_multiple_of(1000) {
                eprintln!("  {k}/{n} logins");
            }
            result.map(|c| (c, elapsed))
        }));
    }
    collect_logins(tasks, concurrency, started).await
}

/// One login started every `1 / rate` s whatever the others are doing (an
/// open loop: a fixed offered load), spread over `portals` in turn. Each
/// latency counts from when its login was due, so a stack that falls
/// behind shows it. `concurrency` in the report is 0.
pub async fn paced_logins(
    portals: &[String],
    tokens: Vec<String>,
    rate: f64,
    sdk: &str,
) -> (Vec<Client>, LoginReport) {
    let started = Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.into_iter().enumerate() {
        let due = started + every * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let portal = portals[i % portals.len()].clone();
        let sdk = sdk.to_string();
        tasks.push(tokio::spawn(async move {
            let result = connect_and_login(&portal, &token, &sdk).await;
            result.map(|c| (c, due.elapsed()))
        }));
    }
    collect_logins(tasks, 0, started).await
}

type LoginTask = tokio::task::JoinHandle<anyhow::Result<(Client, Duration)>>;

/// Wait for every login task: the clients that logged in, and the report.
async fn collect_logins(
    tasks: Vec<LoginTask>,
    concurrency: usize,
    started: Instant,
) -> (Vec<Client>, LoginReport) {
    let n = tasks.len();
    let mut clients = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok((c, elapsed))) => {
                latencies.push(elapsed);
                clients.push(c);
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("  {failed} logins failed, first: {e}");
    }
    let total = started.elapsed();
    (
        clients,
        LoginReport {
            logins: n,
            concurrency,
            failed,
            latency: summarize(&latencies),
            logins_per_second: (latencies.len() as f64 / total.as_secs_f64() * 10.0).round() / 10.0,
            percentiles_ms: percentiles_ms(&latencies),
        },
    )
}

/// `rooms` fresh rooms (notifications off), each opened by one connected
/// warm participant, and `n` tokens spread over them.
pub(crate) async fn prepare(
    target: &Target,
    rooms: usize,
    n: usize,
) -> anyhow::Result<(Vec<Client>, Vec<String>)> {
    let rooms = make_rooms(&target.management, rooms, false).await?;
    let warm = warm_rooms(target, &rooms).await?;
    let tokens = make_tokens_in(&target.management, &rooms, n)
        .await?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    Ok((warm, tokens))
}

/// The login scenario on the stack: `n` logins into warm rooms of
/// `room_size`, `concurrency` at a time.
pub async fn login_scenario(
    target: &Target,
    n: usize,
    concurrency: usize,
    room_size: usize,
    sdk: &str,
) -> anyhow::Result<LoginReport> {
    let (warm, tokens) = prepare(target, n.div_ceil(room_size.max(1)), n).await?;
    let (clients, report) = logins(&target.portal, tokens, concurrency, sdk, true).await;
    close_all(clients).await;
    close_all(warm).await;
    Ok(report)
}

/// Log out and close every client, and give the portal a moment. (A
/// client of an official SDK type that only disconnected would be held for
/// its relogin.)
pub async fn close_all(clients: Vec<Client>) {
    for chunk in clients.chunks(256) {
        futures_util::future::join_all(
            chunk
                .iter()
                .map(|c| c.call("logout", &[], Duration::from_secs(5))),
        )
        .await;
    }
    for c in &clients {
        c.disconnect();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(clients);
}

/// Relogin: pairs in rooms of two; the first of each pair (a C++ client, so
/// it has a ticket) is cut, the second sends it a text, then the first
/// reconnects and relogins. Measures connect + relogin, and checks the text
/// is in the reply's messages.
pub async fn relogin(target: &Target, pairs: usize, sdk: &str) -> anyhow::Result<ReloginReport> {
    let rooms = make_rooms(&target.management, 1, false).await?;
    let warm = warm_rooms(target, &rooms).await?;
    let tokens = make_tokens_in(&target.management, &rooms, pairs * 2).await?;
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut lost = 0;
    for pair in tokens.chunks(2) {
        let a = Client::connect(&target.portal).await?;
        let ack = a
            .call("login", &[login_info(&pair[0].1, "C++")], ACK_TIMEOUT)
            .await?;
        let ticket = ack[1]["reconnectionTicket"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let pid = a.sid.clone();
        let b = Client::connect(&target.portal).await?;
        b.call("login", &[login_info(&pair[1].1, sdk)], ACK_TIMEOUT)
            .await?;
        a.cut();
        drop(a);
        let text = format!("for {pid}");
        b.call("text", &[json!({"to": pid, "message": text})], ACK_TIMEOUT)
            .await?;
        let t0 = Instant::now();
        let back = Client::connect(&target.portal).await?;
        match back.call("relogin", &[json!(ticket)], ACK_TIMEOUT).await {
            Ok(ack) if ack.first().and_then(Value::as_str) == Some("ok") => {
                latencies.push(t0.elapsed());
                let replayed = ack[1]["messages"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|m| m["data"]["message"] == text.as_str()));
                // The conference delivers notifications asynchronously: a text
                // that reached the portal after the relogin arrives as an event.
                let got = replayed
                    || back
                        .wait_event("text", Duration::from_secs(2))
                        .await
                        .is_some_and(|e| e.data["message"] == text.as_str());
                if !got {
                    lost += 1;
                }
            }
            _ => failed += 1,
        }
        b.call("logout", &[], ACK_TIMEOUT).await.ok();
        b.disconnect();
        back.call("logout", &[], ACK_TIMEOUT).await.ok();
        back.disconnect();
    }
    close_all(warm).await;
    Ok(ReloginReport {
        relogins: pairs,
        failed,
        latency: summarize(&latencies),
        messages_lost: lost,
    })
}

/// Fan-out: `size` participants in one room; one sends `text` to all, the
/// time until the last receiver has it.
pub async fn fanout(
    target: &Target,
    size: usize,
    rounds: usize,
    concurrency: usize,
    sdk: &str,
) -> anyhow::Result<FanoutReport> {
    let (warm, tokens) = prepare(target, 1, size).await?;
    let (clients, report) = logins(&target.portal, tokens, concurrency, sdk, false).await;
    if report.failed > 0 {
        anyhow::bail!("{} of {size} fan-out logins failed", report.failed);
    }
    // let the join notifications settle, then drop them
    tokio::time::sleep(Duration::from_millis(300 + size as u64)).await;
    for c in &clients {
        let mut ev = c.events.lock().await;
        while ev.try_recv().is_ok() {}
    }
    let clients = Arc::new(clients);
    let mut samples = Vec::new();
    let mut lost = 0;
    for round in 0..rounds {
        let message = format!("round {round}");
        let waiters: Vec<_> = (0..clients.len())
            .map(|i| {
                let clients = clients.clone();
                let message = message.clone();
                tokio::spawn(async move {
                    loop {
                        let e = clients[i]
                            .wait_event("text", Duration::from_secs(10))
                            .await?;
                        if e.data["message"] == message.as_str() {
                            return Some(e.at);
                        }
                    }
                })
            })
            .collect();
        let sent = tokio::time::Instant::now();
        clients[0]
            .call(
                "text",
                &[json!({"to": "all", "message": message})],
                ACK_TIMEOUT,
            )
            .await?;
        let mut last = sent;
        for w in waiters {
            match w.await? {
                Some(at) => last = last.max(at),
                None => lost += 1,
            }
        }
        samples.push(last.duration_since(sent));
    }
    let clients = Arc::try_unwrap(clients).map_err(|_| anyhow::anyhow!("clients still shared"))?;
    close_all(clients).await;
    close_all(warm).await;
    Ok(FanoutReport {
        room_size: size,
        rounds,
        last_receiver: summarize(&samples),
        messages_lost: lost,
    })
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Log `tokens` in at `addr`, hold them idle, and measure process `pid`'s
/// resident memory before and after.
async fn hold_idle(
    addr: &str,
    pid: u32,
    tokens: Vec<String>,
    concurrency: usize,
    sdk: &str,
    progress: bool,
) -> IdleReport {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid).unwrap_or_default();
    let (clients, report) = logins(addr, tokens, concurrency, sdk, progress).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid).unwrap_or_default();
    if report.failed > 0 {
        eprintln!("  {} idle logins failed", report.failed);
    }
    let held = clients.len();
    close_all(clients).await;
    IdleReport {
        connections: held,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_connection: ((after.saturating_sub(before)) as f64 / held.max(1) as f64 * 10.0)
            .round()
            / 10.0,
    }
}

/// Hold `n` logged-in idle participants and measure the portal's memory.
pub async fn idle(
    target: &Target,
    n: usize,
    room_size: usize,
    concurrency: usize,
    sdk: &str,
) -> anyhow::Result<IdleReport> {
    let pid = target
        .portal_pid
        .ok_or_else(|| anyhow::anyhow!("the portal's pid is needed"))?;
    let (warm, tokens) = prepare(target, n.div_ceil(room_size.max(1)), n).await?;
    let report = hold_idle(&target.portal, pid, tokens, concurrency, sdk, true).await;
    close_all(warm).await;
    Ok(report)
}

/// Hold `n` connections logged in to the bare server and measure it.
pub async fn idle_bare(
    addr: &str,
    pid: u32,
    n: usize,
    concurrency: usize,
    sdk: &str,
) -> IdleReport {
    let tokens = (0..n).map(|i| format!("bare-idle-{i}")).collect();
    hold_idle(addr, pid, tokens, concurrency, sdk, false).await
}

#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    /// Connect/disconnect cycles measured (after as many again to warm up).
    pub cycles: usize,
    /// Of them, cycles that logged in and out between connect and disconnect.
    pub logged_in: usize,
    pub failed: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// RSS growth over the measured cycles, per cycle (can be negative).
    pub bytes_per_cycle: f64,
}

/// One cycle: connect; with a token, log in as `sdk` and out; disconnect,
/// and wait until the server has closed the socket.
async fn churn_cycle(portal: &str, token: Option<&str>, sdk: &str) -> anyhow::Result<()> {
    let client = match token {
        Some(token) => connect_and_login(portal, token, sdk).await?,
        None => Client::connect(portal).await?,
    };
    if token.is_some() {
        let ack = client.call("logout", &[], ACK_TIMEOUT).await?;
        if ack.first().and_then(Value::as_str) != Some("ok") {
            anyhow::bail!("logout refused: {ack:?}");
        }
    }
    client.disconnect();
    let closed = Instant::now();
    while !client.closed() && closed.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Run one cycle per entry of `tokens` (`None`: connect and disconnect
/// only), `concurrency` at a time; how many failed.
async fn churn_cycles(
    portal: &str,
    tokens: Vec<Option<String>>,
    concurrency: usize,
    sdk: &str,
) -> usize {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(tokens.len());
    for token in tokens {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let portal = portal.to_string();
        let sdk = sdk.to_string();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            churn_cycle(&portal, token.as_deref(), &sdk).await
        }));
    }
    let mut failed = 0;
    let mut first = None;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed += 1;
                first.get_or_insert(e.to_string());
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first {
        eprintln!("  {failed} churn cycles failed, first: {e}");
    }
    failed
}

/// Warm up with `cycles` cycles, measure process `pid`, run `cycles` more
/// and measure again once the server has settled.
async fn measure_churn(
    portal: &str,
    pid: u32,
    warm_up: Vec<Option<String>>,
    measured: Vec<Option<String>>,
    concurrency: usize,
    sdk: &str,
) -> ChurnReport {
    let mut failed = churn_cycles(portal, warm_up, concurrency, sdk).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid).unwrap_or_default();
    let cycles = measured.len();
    let logged_in = measured.iter().filter(|t| t.is_some()).count();
    failed += churn_cycles(portal, measured, concurrency, sdk).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid).unwrap_or_default();
    ChurnReport {
        cycles,
        logged_in,
        failed,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_cycle: ((after as f64 - before as f64) * 1024.0 / cycles.max(1) as f64).round(),
    }
}

/// Every other cycle logs in (and out): tokens for half of `n`.
fn churn_plan(n: usize, tokens: &mut impl Iterator<Item = String>) -> Vec<Option<String>> {
    (0..n)
        .map(|i| if i % 2 == 0 { tokens.next() } else { None })
        .collect()
}

/// Connections that come and go, half of them logging in as `sdk` and out
/// in between, `concurrency` at a time: the portal's memory after `n`
/// cycles (after `n` more to warm up) against before. Nothing of a closed
/// connection should stay.
pub async fn churn(
    target: &Target,
    n: usize,
    concurrency: usize,
    sdk: &str,
) -> anyhow::Result<ChurnReport> {
    let pid = target
        .portal_pid
        .ok_or_else(|| anyhow::anyhow!("the portal's pid is needed"))?;
    let (warm, tokens) = prepare(target, 1, n.div_ceil(2) * 2).await?;
    let mut tokens = tokens.into_iter();
    let warm_up = churn_plan(n, &mut tokens);
    let measured = churn_plan(n, &mut tokens);
    let report = measure_churn(&target.portal, pid, warm_up, measured, concurrency, sdk).await;
    close_all(warm).await;
    Ok(report)
}

/// The same cycles on the bare server.
pub async fn churn_bare(addr: &str, pid: u32, n: usize, concurrency: usize) -> ChurnReport {
    let mut tokens = (0..).map(|i| format!("bare-churn-{i}"));
    let warm_up = churn_plan(n, &mut tokens);
    let measured = churn_plan(n, &mut tokens);
    measure_churn(addr, pid, warm_up, measured, concurrency, "C++").await
}

#[derive(Debug, Clone, Serialize)]
pub struct RoomsReport {
    pub rooms: usize,
    pub failed: usize,
    /// The first login into each new room: its node comes from the agent's
    /// warm pool.
    pub first_login: Summary,
    /// Conference node processes (the agent's children) before and after.
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// What the rooms added, per room: private memory, the growth of each
    /// node process that grew or is new (so nodes of earlier rooms that
    /// give memory back meanwhile do not count against it), and
    /// proportional set size, that plus the change of all nodes' shared
    /// part (the binary's text, shared by all nodes, counted once in all).
    pub pss_kib_per_room: f64,
    pub private_kib_per_room: f64,
    /// What `ps` shows per node (the shared text counted in each).
    pub rss_kib_per_node: f64,
}

/// Memory of one process from `/proc/<pid>/smaps_rollup`: (RSS, PSS,
/// private), KiB.
pub fn smaps_kib(pid: u32) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some((
        field("Rss:"),
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    ))
}

/// The processes whose parent is `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // "pid (comm) state ppid ...": comm may hold anything
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// (RSS, PSS, private) of each of the agent's node processes, by pid.
fn nodes_memory(agent: u32) -> std::collections::HashMap<u32, (u64, u64, u64)> {
    children(agent)
        .into_iter()
        .filter_map(|pid| Some((pid, smaps_kib(pid)?)))
        .collect()
}

/// What the nodes added between two [`nodes_memory`] snapshots, KiB:
/// (PSS, private). Private is the sum of each process's growth (a new one
/// from nothing; one that shrank counts as 0); PSS adds to it the change
/// of the shared part of all of them together (PSS minus private).
fn nodes_added(
    before: &std::collections::HashMap<u32, (u64, u64, u64)>,
    after: &std::collections::HashMap<u32, (u64, u64, u64)>,
) -> (f64, f64) {
    let grown: f64 = after
        .iter()
        .map(|(pid, &(_, _, private))| {
            let was = before.get(pid).map_or(0, |m| m.2);
            private.saturating_sub(was) as f64
        })
        .sum();
    let shared = |m: &std::collections::HashMap<u32, (u64, u64, u64)>| -> f64 {
        m.values()
            .map(|&(_, pss, private)| pss as f64 - private as f64)
            .sum()
    };
    (grown + shared(after) - shared(before), grown)
}

/// Rooms per machine: `n` new rooms, one login each as `sdk` (a moment
/// apart, so each finds the warm pool refilled), and what their conference
/// nodes cost.
pub async fn rooms(target: &Target, n: usize, sdk: &str) -> anyhow::Result<RoomsReport> {
    let agent = target
        .agent_pid
        .ok_or_else(|| anyhow::anyhow!("the agent's pid is needed"))?;
    let rooms = make_rooms(&target.management, n, false).await?;
    let tokens = make_tokens_in(&target.management, &rooms, n).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = nodes_memory(agent);
    let mut clients = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut failed = 0;
    for (_, token) in tokens {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        match connect_and_login(&target.portal, &token, sdk).await {
            Ok(c) => {
                latencies.push(t0.elapsed());
                clients.push(c);
            }
            Err(e) => {
                failed += 1;
                eprintln!("  a first login failed: {e}");
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = nodes_memory(agent);
    close_all(clients).await;
    let (pss_added, private_added) = nodes_added(&before, &after);
    let per_room = |added: f64| (added / n.max(1) as f64 * 10.0).round() / 10.0;
    let rss_after: u64 = after.values().map(|m| m.0).sum();
    Ok(RoomsReport {
        rooms: n,
        failed,
        first_login: summarize(&latencies),
        nodes_before: before.len(),
        nodes_after: after.len(),
        pss_kib_per_room: per_room(pss_added),
        private_kib_per_room: per_room(private_added),
        rss_kib_per_node: (rss_after as f64 / after.len().max(1) as f64 * 10.0).round() / 10.0,
    })
}

/// `Schedule` calls per second, for new tasks and for one existing task.
pub async fn scheduler(
    target: &Target,
    seconds: f64,
    parallel: usize,
) -> anyhow::Result<SchedulerReport> {
    let c = ClusterManagerClient::new(channel(&target.cluster)?);
    let run = |existing: bool| {
        let c = c.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let count = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..parallel)
                .map(|w| {
                    let mut c = c.clone();
                    let count = count.clone();
                    tokio::spawn(async move {
                        let mut i = 0u64;
                        while Instant::now() < deadline {
                            let task = if existing {
                                "bench-existing".to_string()
                            } else {
                                format!("bench-{w}-{i}")
                            };
                            i += 1;
                            let req = cluster::ScheduleRequest {
                                purpose: "conference".into(),
                                task,
                                preference: None,
                                reserve_time_ms: 1000,
                            };
                            if c.schedule(req).await.is_ok() {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
            count.load(Ordering::Relaxed) as f64 / seconds
        }
    };
    let new_rooms = run(false).await;
    let existing = run(true).await;
    Ok(SchedulerReport {
        seconds,
        new_rooms_per_second: new_rooms.round(),
        existing_rooms_per_second: existing.round(),
    })
}

/// A table a person reads.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let row = |name: &str, l: &LoginReport| {
        format!(
            "{name:<22} {:>7} {:>5} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9.1}\n",
            l.logins,
            l.failed,
            l.latency.p50_ms,
            l.latency.p90_ms,
            l.latency.p99_ms,
            l.latency.max_ms,
            l.logins_per_second
        )
    };
    out.push_str(&format!(
        "{:<22} {:>7} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
        "login (ms)", "n", "fail", "p50", "p90", "p99", "max", "per s"
    ));
    for (name, l) in [
        ("stack, 1 at a time", &r.login_sequential),
        ("bare ack, 1 at a time", &r.baseline_sequential),
    ] {
        if let Some(l) = l {
            out.push_str(&row(name, l));
        }
    }
    if let Some(l) = &r.login {
        out.push_str(&row(&format!("stack, {} at once", l.concurrency), l));
    }
    if let Some(l) = &r.baseline_login {
        out.push_str(&row(&format!("bare ack, {} at once", l.concurrency), l));
    }
    if let Some(l) = &r.tls_login_sequential {
        out.push_str(&row("stack TLS, 1 at a time", l));
    }
    if let Some(l) = &r.tls_login {
        out.push_str(&row(&format!("stack TLS, {} at once", l.concurrency), l));
    }
    for (what, a, b) in [
        ("1 at a time", &r.login_sequential, &r.baseline_sequential),
        ("at once", &r.login, &r.baseline_login),
    ] {
        if let (Some(a), Some(b)) = (a, b)
            && b.latency.p50_ms > 0.0
        {
            out.push_str(&format!(
                "stack / bare p50, {what}: {:.2}x\n",
                a.latency.p50_ms / b.latency.p50_ms
            ));
        }
    }
    if let Some(x) = &r.relogin {
        out.push_str(&format!(
            "\nrelogin (ms)           n={} fail={} p50={:.3} p90={:.3} p99={:.3} max={:.3} lost={}\n",
            x.relogins, x.failed, x.latency.p50_ms, x.latency.p90_ms, x.latency.p99_ms, x.latency.max_ms, x.messages_lost
        ));
    }
    if !r.fanout.is_empty() {
        out.push_str("\nfan-out, last receiver (ms)\n");
        for f in &r.fanout {
            out.push_str(&format!(
                "  room of {:>5}: p50={:.3} max={:.3} over {} rounds, lost={}\n",
                f.room_size,
                f.last_receiver.p50_ms,
                f.last_receiver.max_ms,
                f.rounds,
                f.messages_lost
            ));
        }
    }
    for (name, i) in [
        ("portal", &r.idle),
        ("portal over TLS", &r.tls_idle),
        ("bare server", &r.baseline_idle),
    ] {
        if let Some(i) = i {
            out.push_str(&format!(
                "\nidle: {} connections, {name} RSS {} -> {} KiB, {:.1} KiB per connection",
                i.connections, i.rss_before_kib, i.rss_after_kib, i.kib_per_connection
            ));
        }
    }
    out.push('\n');
    for (name, c) in [("portal", &r.churn), ("bare server", &r.baseline_churn)] {
        if let Some(c) = c {
            out.push_str(&format!(
                "\nchurn: {} connect/disconnect cycles ({} logged in and out, {} failed), {name} RSS {} -> {} KiB, {:.0} bytes per cycle",
                c.cycles, c.logged_in, c.failed, c.rss_before_kib, c.rss_after_kib, c.bytes_per_cycle
            ));
        }
    }
    if r.churn.is_some() || r.baseline_churn.is_some() {
        out.push('\n');
    }
    if let Some(x) = &r.rooms {
        out.push_str(&format!(
            "\nrooms: {} new rooms ({} failed), first login p50={:.3} p99={:.3} ms; nodes {} -> {}; per room PSS {:.1} KiB, private {:.1} KiB (RSS per node {:.1} KiB)\n",
            x.rooms, x.failed, x.first_login.p50_ms, x.first_login.p99_ms, x.nodes_before, x.nodes_after, x.pss_kib_per_room, x.private_kib_per_room, x.rss_kib_per_node
        ));
    }
    if let Some(x) = &r.rest {
        out.push_str(&format!(
            "\ntokens: REST with MAuth {:.0}/s (failed {}), gRPC CreateToken {:.0}/s (failed {}), {} in parallel; replay check {:.0} ns with {} cnonces remembered\n",
            x.rest_tokens_per_second, x.rest_failed, x.grpc_tokens_per_second, x.grpc_failed, x.parallel, x.replay_check_ns, x.replay_remembered
        ));
    }
    for s in &r.stores {
        out.push_str(&format!(
            "\ntokens on {:<8}: {:.0} created/s (failed {}), {:.0} consumed/s over {} (failed {}), {} in parallel",
            s.store, s.created_per_second, s.create_failed, s.consumed_per_second, s.consumed, s.consume_failed, s.parallel
        ));
    }
    if !r.stores.is_empty() {
        out.push('\n');
    }
    if let Some(s) = &r.scheduler {
        out.push_str(&format!(
            "\nscheduler: {:.0} Schedule/s for new rooms, {:.0}/s for an existing room\n",
            s.new_rooms_per_second, s.existing_rooms_per_second
        ));
    }
    if !r.curve.is_empty() {
        out.push_str(&format!(
            "\nload curve: {} logins at {:.0}/s offered (p50, p99 ms, logins/s), then {} in flight (logins/s)\n",
            r.curve[0].paced.logins, r.curve[0].rate, r.curve[0].saturated.concurrency
        ));
        for p in &r.curve {
            out.push_str(&format!(
                "  {} portal(s): {:.3} {:.3} {:.0} (failed {}); {:.0}/s (failed {})\n",
                p.portals,
                p.paced.latency.p50_ms,
                p.paced.latency.p99_ms,
                p.paced.logins_per_second,
                p.paced.failed,
                p.saturated.logins_per_second,
                p.saturated.failed
            ));
            for c in &p.services {
                out.push_str(&format!(
                    "    {:<17} ({} processes): {:>8.1} KiB and {:>7.1} ms CPU per 1 000\n",
                    c.service, c.processes, c.kib_per_1000, c.cpu_ms_per_1000
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::nodes_added;
    use std::collections::HashMap;

    #[test]
    fn what_rooms_add_counts_growth_not_what_other_nodes_give_back() {
        // (RSS, PSS, private) by pid
        let before = HashMap::from([(1, (10_000, 3_000, 1_000)), (2, (10_000, 3_500, 1_500))]);
        let after = HashMap::from([
            // an earlier room's node gave back 1 000 KiB
            (1, (9_000, 1_900, 0)),
            // the warm node that took a room grew by 400
            (2, (10_400, 3_800, 1_900)),
            // the new warm node
            (3, (9_000, 1_700, 1_000)),
        ]);
        let (pss, private) = nodes_added(&before, &after);
        assert_eq!(private, 1_400.0);
        // shared part: before 2 000 + 2 000, after 1 900 + 1 900 + 700
        assert_eq!(pss, 1_400.0 + 500.0);
    }
}
