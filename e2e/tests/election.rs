//! Standby cluster managers through a real etcd (issue 20, first part):
//! one leads, the other answers every call with `Unavailable` naming the
//! leader; the leader killed, the standby takes over; the leader paused past
//! its lease does not serve when it resumes.

use conclave_e2e::{Flavor, PyClient};
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_stack::etcd::{self, Etcd};
use conclave_stack::testing::{ServiceProcess, workspace_bin};
use std::time::{Duration, Instant};

/// The `--set` flags of a manager campaigning in `etcd` with a 2 s lease.
fn election(etcd: &Etcd) -> Vec<String> {
    vec![
        format!("election.etcd=[\"{}\"]", etcd.url),
        "election.ttl=2".to_string(),
    ]
}

/// A manager of the test's own, campaigning in `etcd`, on `listen`.
fn manager_on(etcd: &Etcd, listen: &str) -> (ServiceProcess, String) {
    let bin = workspace_bin("cluster-manager");
    let mut sets = vec![format!("listen={listen}"), "metrics.listen=".into()];
    sets.extend(election(etcd));
    let args: Vec<String> = sets
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServiceProcess::start_named(
        "cluster-manager",
        bin.to_str().unwrap(),
        &args,
        &[("RUST_LOG", "info")],
        "gRPC server listening",
        "local_addr",
    )
    .unwrap()
}

fn manager(etcd: &Etcd) -> (ServiceProcess, String) {
    manager_on(etcd, "127.0.0.1:0")
}

/// The whole stack on two managers in one election: the topology's own
/// (a, process 0) and b, a process of the test's; every worker is given
/// both addresses. (Fields drop in order: the stack before etcd.)
struct TwoManagers {
    stack: conclave_e2e::Stack,
    b: ServiceProcess,
    a_addr: String,
    b_addr: String,
    etcd: Etcd,
}

impl TwoManagers {
    async fn start() -> TwoManagers {
        TwoManagers::start_with(&[]).await
    }

    /// As `start`, with more settings for the portal.
    async fn start_with(portal: &[&str]) -> TwoManagers {
        let etcd = Etcd::start().unwrap();
        let (pa, pb) = (conclave_e2e::free_port(), conclave_e2e::free_port());
        let (a_addr, b_addr) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
        let list = format!("cluster.manager={a_addr},{b_addr}");
        let stack = conclave_e2e::stack_edited(|o| {
            o.manager = vec![format!("listen={a_addr}")];
            o.manager.extend(election(&etcd));
            for sets in [&mut o.management, &mut o.agent, &mut o.portal] {
                sets.push(list.clone());
            }
            o.portal.extend(portal.iter().map(|s| s.to_string()));
        })
        .await;
        let (b, _) = manager_on(&etcd, &b_addr);
        TwoManagers {
            stack,
            b,
            a_addr,
            b_addr,
            etcd,
        }
    }

    /// Start b again on its address (after it was killed).
    fn restart_b(&mut self) {
        self.b = manager_on(&self.etcd, &self.b_addr).0;
    }

    /// Start a again on its address (after it was killed).
    async fn restart_a(&mut self) {
        let mut sets = vec![format!("listen={}", self.a_addr)];
        sets.extend(election(&self.etcd));
        self.stack.restart_manager_with(sets).await;
    }
}

/// A worker call: Ok, or the status a standby answers.
async fn call(addr: &str) -> Result<(), tonic::Status> {
    let channel = conclave_common::grpc::channel(addr, Duration::from_secs(2)).unwrap();
    ClusterManagerClient::new(channel)
        .get_workers(cluster::GetWorkersRequest {
            purpose: "all".into(),
        })
        .await
        .map(|_| ())
}

async fn until_serving(addr: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if call(addr).await.is_ok() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_the_standby_names_it_and_takes_over_when_it_dies() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start().unwrap();
    let (mut a, a_addr) = manager(&etcd);
    assert!(
        until_serving(&a_addr, Duration::from_secs(10))
            .await
            .is_some(),
        "the first manager leads"
    );
    let (b, b_addr) = manager(&etcd);
    // the standby names the leader
    let mut named = None;
    for _ in 0..100 {
        match call(&b_addr).await {
            Err(s) if s.message().contains(&a_addr) => {
                named = Some(s);
                break;
            }
            Ok(()) => panic!("a standby served"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let named = named.expect("the standby names the leader");
    // a client given both addresses, standby first, reaches the leader
    let both = format!("{b_addr},{a_addr}");
    assert!(call(&both).await.is_ok(), "the list finds the leader");
    assert_eq!(named.code(), tonic::Code::Unavailable);
    assert_eq!(
        named.message(),
        format!("this cluster manager is a standby: the leader is {a_addr}")
    );
    // the leader killed: the standby leads once the lease (2 s) runs out
    a.signal("KILL");
    let killed = Instant::now();
    a.wait_exit(Duration::from_secs(5));
    let took = until_serving(&b_addr, Duration::from_secs(10))
        .await
        .expect("the standby takes over");
    eprintln!(
        "ELECTION-TIMING leader SIGKILL: the standby serves {:.0} ms after the kill",
        killed.elapsed().as_secs_f64() * 1000.0
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    // the same list follows the new leader, the dead address first now
    let both = format!("{a_addr},{b_addr}");
    assert!(call(&both).await.is_ok(), "the list follows the new leader");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_does_not_serve_when_it_resumes() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start().unwrap();
    let (a, a_addr) = manager(&etcd);
    assert!(
        until_serving(&a_addr, Duration::from_secs(10))
            .await
            .is_some()
    );
    let (b, b_addr) = manager(&etcd);
    a.signal("STOP");
    let took = until_serving(&b_addr, Duration::from_secs(10))
        .await
        .expect("the standby takes over from the paused leader");
    eprintln!(
        "ELECTION-TIMING leader SIGSTOP: the standby serves {:.0} ms after the pause",
        took.as_secs_f64() * 1000.0
    );
    a.signal("CONT");
    // the first answer after the resume already refuses
    let status = call(&a_addr)
        .await
        .expect_err("the old leader must not serve");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // and it follows the new leader from then on
    let mut follows = false;
    for _ in 0..100 {
        if let Err(s) = call(&a_addr).await
            && s.message().contains(&b_addr)
        {
            follows = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(follows, "the old leader names the new one");
    assert!(call(&b_addr).await.is_ok(), "the new leader keeps serving");
    drop((a, b));
}

/// The whole stack on two managers (issue 20): every worker is given both
/// addresses and follows the leader. The leader killed: the standby takes
/// over, workers rejoin it and re-announce their tasks, nobody logged in
/// is dropped, the room keeps its agent, and logins work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_follows_the_new_leader_when_the_old_one_dies() {
    if !etcd::available() || !conclave_e2e::have_clients() {
        return;
    }
    let TwoManagers {
        mut stack,
        b,
        a_addr: _,
        b_addr,
        etcd: _etcd,
    } = TwoManagers::start().await;
    let room = stack.room(-1).await;
    let mut stayer = stack.logged_in(&room, "stayer").await;
    let agent_before = stack.room_agent(&room).await;
    // logins into a room nobody is in yet need the scheduler: the leader
    let fresh = stack.room(-1).await;
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(stack.token(&fresh, &format!("t{i}"), "viewer").await);
    }
    let served = stack.token(&room, "served", "viewer").await;
    stack.processes[0].signal("KILL");
    let killed = Instant::now();
    stack.processes[0].wait_exit(Duration::from_secs(5));
    // a login into the stayer's room joins its node directly: no leader needed
    let mut c = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    let ack = c.login(&served, "1.2").await;
    assert_eq!(
        ack[0], "ok",
        "a login into a served room during the failover: {ack:?}"
    );
    eprintln!(
        "ELECTION-TIMING whole stack, leader SIGKILL: a login into a served room answered {:.0} ms after the kill",
        killed.elapsed().as_secs_f64() * 1000.0
    );
    c.quit().await;
    let mut tokens = tokens.into_iter();
    let first_ok = conclave_e2e::until_a_login_succeeds(
        &stack.url(),
        killed,
        Duration::from_secs(30),
        Duration::from_millis(100),
        || tokens.next(),
    )
    .await;
    let first_ok = first_ok.expect("logins work again on the new leader");
    eprintln!(
        "ELECTION-TIMING whole stack, leader SIGKILL: first successful login {:.0} ms after the kill",
        first_ok.as_secs_f64() * 1000.0
    );
    assert!(first_ok < Duration::from_secs(6), "{first_ok:?}");
    stayer.assert_still_seated().await;
    // the new leader has the room where it was
    let scheduled = ClusterManagerClient::new(
        conclave_common::grpc::channel(&b_addr, Duration::from_secs(2)).unwrap(),
    )
    .get_scheduled(cluster::GetScheduledRequest {
        purpose: "conference".into(),
        task: room.clone(),
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(scheduled.worker_id, agent_before, "the room kept its agent");
    stayer.quit().await;
    drop(b);
}

/// An event that falls between two `Watch` streams: the leader and a
/// conference agent die together, so no manager ever reports the agent
/// lost. The portal, watching again on the new leader, reads the worker
/// list once that leader is in service, misses the agent, and treats it
/// as lost: its participant gets `drop` instead of hanging on a dead node.
/// (The portal's own check of its nodes, `portal.node_check_interval`, is
/// another way to the same `drop`; it is off here, so that what is tested
/// is the watch.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_between_two_watches_is_noticed() {
    if !etcd::available() || !conclave_e2e::have_clients() {
        return;
    }
    use conclave_e2e::PyClient;
    let TwoManagers {
        stack,
        b,
        a_addr: _,
        b_addr: _,
        etcd: _etcd,
    } = TwoManagers::start_with(&["portal.node_check_interval=0"]).await;
    let room = stack.room(-1).await;
    let mut c: PyClient = stack.logged_in(&room, "on-the-agent").await;
    // the leader and the only agent, at once
    stack.processes[0].signal("KILL");
    stack.processes[2].signal("KILL");
    let killed = Instant::now();
    let dropped = c.wait_event("drop", 15.0).await;
    assert!(
        dropped.is_some(),
        "the participant of the lost agent is dropped"
    );
    eprintln!(
        "ELECTION-TIMING leader and agent killed together: drop {:.0} ms after",
        killed.elapsed().as_secs_f64() * 1000.0
    );
    // The `drop` can come sooner by another way: the portal, out of
    // contact with any manager past its liveness bound, takes its
    // participants back and finds nothing listening at their node. The
    // watch still finds the agent missing, REJOIN_GRACE (5 s) after the new
    // leader went in service. (The log reaches the test through a pipe.)
    let mut logs = Vec::new();
    let found = conclave_stack::testing::eventually(Duration::from_secs(10), || {
        logs.extend(stack.drain_logs(3));
        let found = logs
            .iter()
            .any(|l| l.contains("a worker is gone since the watch was interrupted"));
        async move { found }
    })
    .await;
    assert!(
        found,
        "the portal found the agent missing from the new leader's list"
    );
    c.quit().await;
    drop(b);
}

/// etcd itself away: the leader cannot renew its lease, so it serves only
/// until the last renewal etcd confirmed runs out (the TTL less a margin:
/// 1.7 s with a 2 s TTL), because from then on etcd, seen by others, may
/// have let the lease expire and elected someone else. Once etcd is back,
/// a leader is elected and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_away_the_leader_serves_until_its_lease_could_have_lapsed() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start().unwrap();
    let (a, a_addr) = manager(&etcd);
    assert!(
        until_serving(&a_addr, Duration::from_secs(10))
            .await
            .is_some()
    );
    let (b, b_addr) = manager(&etcd);
    etcd.pause();
    let paused = Instant::now();
    let mut last_served = None;
    while paused.elapsed() < Duration::from_secs(5) {
        if call(&a_addr).await.is_ok() {
            last_served = Some(paused.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last_served = last_served.expect("the leader served on for a while");
    eprintln!(
        "ELECTION-TIMING etcd paused: the leader served until {:.0} ms after",
        last_served.as_secs_f64() * 1000.0
    );
    assert!(last_served < Duration::from_millis(2000), "{last_served:?}");
    assert!(
        call(&a_addr).await.is_err() && call(&b_addr).await.is_err(),
        "nobody leads without etcd"
    );
    etcd.resume();
    let both = format!("{a_addr},{b_addr}");
    assert!(
        until_serving(&both, Duration::from_secs(15))
            .await
            .is_some(),
        "a leader again once etcd is back"
    );
    drop((a, b));
}

/// Repeated failovers of the whole stack, for RELIABILITY.md: the leading
/// manager killed, the first login after it timed, the killed manager
/// started again (it stands by), and again, alternating.
/// `CONCLAVE_FAILOVERS` sets how many (default 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failovers_of_the_whole_stack() {
    if !etcd::available() || !conclave_e2e::have_clients() {
        return;
    }
    let rounds: usize = std::env::var("CONCLAVE_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut two = TwoManagers::start().await;
    let (a_addr, b_addr) = (two.a_addr.clone(), two.b_addr.clone());
    let room = two.stack.room(-1).await;
    let mut stayer = two.stack.logged_in(&room, "stayer").await;
    let mut timings = Vec::new();
    for round in 0..rounds {
        // the leader serves, the other stands by
        let a_leads = until_serving(&a_addr, Duration::from_secs(10))
            .await
            .is_some()
            && call(&b_addr).await.is_err();
        // a room nobody is in yet: its logins need the leader
        let fresh = two.stack.room(-1).await;
        let mut tokens: Vec<String> = Vec::new();
        for i in 0..30 {
            tokens.push(
                two.stack
                    .token(&fresh, &format!("r{round}u{i}"), "viewer")
                    .await,
            );
        }
        let killed = Instant::now();
        if a_leads {
            two.stack.processes[0].signal("KILL");
            two.stack.processes[0].wait_exit(Duration::from_secs(5));
        } else {
            two.b.signal("KILL");
            two.b.wait_exit(Duration::from_secs(5));
        }
        let mut tokens = tokens.into_iter();
        let took = conclave_e2e::until_a_login_succeeds(
            &two.stack.url(),
            killed,
            Duration::from_secs(30),
            Duration::from_millis(100),
            || tokens.next(),
        )
        .await
        .expect("logins work again");
        eprintln!(
            "ELECTION-TIMING failover {} ({} killed): first login {:.0} ms after",
            round + 1,
            if a_leads { "a" } else { "b" },
            took.as_secs_f64() * 1000.0
        );
        timings.push(took);
        stayer.assert_still_seated().await;
        // the killed one back, standing by
        if a_leads {
            two.restart_a().await;
        } else {
            two.restart_b();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    timings.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "ELECTION-TIMING {} failovers: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        timings.len(),
        ms(&timings[0]),
        ms(&timings[timings.len() / 2]),
        ms(timings.last().unwrap())
    );
    assert!(
        timings.iter().all(|t| *t < Duration::from_secs(6)),
        "{timings:?}"
    );
    stayer.quit().await;
}

/// The leading manager of the whole stack paused past its lease, then
/// resumed: the standby takes over, the workers move to it and stay there
/// (the resumed one answers as a standby), nobody is dropped, logins work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_stays_with_the_new_leader_when_the_paused_one_resumes() {
    if !etcd::available() || !conclave_e2e::have_clients() {
        return;
    }
    let TwoManagers {
        stack,
        b,
        a_addr,
        b_addr,
        etcd: _etcd,
    } = TwoManagers::start().await;
    let room = stack.room(-1).await;
    let mut stayer = stack.logged_in(&room, "stayer").await;
    stack.processes[0].signal("STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    stack.processes[0].signal("CONT");
    let resumed = Instant::now();
    let token = stack.token(&room, "after", "viewer").await;
    let mut tokens = vec![token].into_iter();
    let took = conclave_e2e::until_a_login_succeeds(
        &stack.url(),
        resumed,
        Duration::from_secs(10),
        Duration::from_millis(100),
        || tokens.next(),
    )
    .await;
    assert!(took.is_some(), "a login after the resume");
    stayer.assert_still_seated().await;
    // the workers are on the new leader, and stay there
    tokio::time::sleep(Duration::from_secs(2)).await;
    let workers = ClusterManagerClient::new(
        conclave_common::grpc::channel(&b_addr, Duration::from_secs(2)).unwrap(),
    )
    .get_workers(cluster::GetWorkersRequest {
        purpose: "all".into(),
    })
    .await
    .unwrap()
    .into_inner()
    .workers;
    assert!(
        workers.iter().any(|w| w.starts_with("portal-"))
            && workers.iter().any(|w| w.starts_with("conference-")),
        "portal and agent on the new leader: {workers:?}"
    );
    let status = call(&a_addr).await.expect_err("the resumed one stands by");
    assert!(status.message().contains(&b_addr), "{status:?}");
    stayer.quit().await;
    drop(b);
}
