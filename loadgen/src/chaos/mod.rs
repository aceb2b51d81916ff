//! Chaos soak (issue 24): a real multi-process stack on this machine (etcd,
//! two cluster managers in one election, management replicas, two agents,
//! two portals), participants texting their rooms over both portals, and a
//! fault every few seconds: a process killed, stopped past the liveness
//! bounds, or a portal drained. Killed processes are started again, as a
//! restart policy would. Every seat, text and participant event is checked.
//!
//! One fault at a time: the next one comes `fault_every` after the last,
//! and not before every participant received a text sent after it (the
//! recovery this measures). Two faults at once are out of scope (see
//! RELIABILITY.md).

mod cluster;
mod participant;

use cluster::Cluster;
use participant::{Ledger, Participant, Shared};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum FaultKind {
    KillPortal,
    KillNode,
    KillAgent,
    KillLeader,
    KillManagement,
    StopPortal,
    StopNode,
    StopAgent,
    StopLeader,
    StopManagement,
    DrainPortal,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::KillPortal,
        FaultKind::KillNode,
        FaultKind::KillAgent,
        FaultKind::KillLeader,
        FaultKind::KillManagement,
        FaultKind::StopPortal,
        FaultKind::StopNode,
        FaultKind::StopAgent,
        FaultKind::StopLeader,
        FaultKind::StopManagement,
        FaultKind::DrainPortal,
    ];

    /// The short name the command line takes (`kill-portal`).
    pub fn key(self) -> &'static str {
        match self {
            FaultKind::KillPortal => "kill-portal",
            FaultKind::KillNode => "kill-node",
            FaultKind::KillAgent => "kill-agent",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillManagement => "kill-management",
            FaultKind::StopPortal => "stop-portal",
            FaultKind::StopNode => "stop-node",
            FaultKind::StopAgent => "stop-agent",
            FaultKind::StopLeader => "stop-leader",
            FaultKind::StopManagement => "stop-management",
            FaultKind::DrainPortal => "drain-portal",
        }
    }

    pub fn from_key(key: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.key() == key)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillPortal => "SIGKILL portal",
            FaultKind::KillNode => "SIGKILL conference node",
            FaultKind::KillAgent => "SIGKILL agent",
            FaultKind::KillLeader => "SIGKILL leading manager",
            FaultKind::KillManagement => "SIGKILL management replica",
            FaultKind::StopPortal => "SIGSTOP portal",
            FaultKind::StopNode => "SIGSTOP conference node",
            FaultKind::StopAgent => "SIGSTOP agent",
            FaultKind::StopLeader => "SIGSTOP leading manager",
            FaultKind::StopManagement => "SIGSTOP management replica",
            FaultKind::DrainPortal => "SIGTERM (drain) portal",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub participants: usize,
    pub room_size: usize,
    pub duration: Duration,
    /// The shortest time from one fault to the next.
    pub fault_every: Duration,
    /// How long a stopped process stays stopped (past the liveness bounds:
    /// the manager's ~4 s, the agent's node checks ~3.5 s).
    pub stall: Duration,
    /// Each participant texts its room this often.
    pub text_every: Duration,
    pub kinds: Vec<FaultKind>,
    pub seed: u64,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
}

/// Recovery times of one fault kind.
#[derive(Debug, Default, Serialize)]
pub struct KindReport {
    pub count: usize,
    /// Seconds from the fault to the last participant receiving a text
    /// sent after it.
    pub recovery_p50: f64,
    pub recovery_p99: f64,
    pub recovery_max: f64,
    /// Faults after which some participant never received again.
    pub unrecovered: usize,
    /// Deliveries lost or duplicated of texts sent from 2 s before one of
    /// these faults until 2 s before the next.
    pub lost: usize,
    pub duplicated: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub participants: usize,
    pub rooms: usize,
    pub seconds: f64,
    pub seed: u64,
    pub management_replicas: usize,
    pub faults: BTreeMap<String, KindReport>,
    /// Every fault in order: (seconds into the run, kind, what it hit).
    pub timeline: Vec<(f64, String, String)>,
    pub texts_sent: usize,
    pub texts_acked: usize,
    /// Deliveries expected (acked texts × room size) and made.
    pub deliveries_expected: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Of those, the ones a portal SIGKILL took in flight: a text the
    /// killed portal had emitted (its node counts it delivered) but that
    /// never left the process is lost; one that reached the client before
    /// the portal could answer its node is replayed after the relogin, so
    /// the client gets it twice. The OWT protocol has no client
    /// acknowledgement and its official SDKs no sequence numbers, so no
    /// server can tell these apart (RELIABILITY.md).
    pub lost_in_flight: usize,
    pub duplicated_in_flight: usize,
    /// Texts not acked `ok` (refused during a gap, or no ack), which the
    /// sender knows to send again; those delivered anyway are not losses.
    pub texts_unacked: usize,
    pub phantoms: usize,
    pub seats_lost: usize,
    pub relogins: usize,
    pub relogin_refusals: BTreeMap<String, usize>,
    pub inconsistencies: usize,
    pub leftovers: Vec<String>,
    /// Per service: (RSS KiB at the start, at the end, restarts).
    pub memory: Vec<(String, u64, u64, usize)>,
    /// Examples of what went wrong, for the log.
    pub problems: Vec<String>,
}

impl Report {
    /// Zero seats lost, zero texts lost, duplicated or made up, the rooms
    /// as every client saw them, nothing left over.
    pub fn clean(&self) -> bool {
        self.lost == self.lost_in_flight
            && self.duplicated == self.duplicated_in_flight
            && self.phantoms == 0
            && self.seats_lost == 0
            && self.inconsistencies == 0
            && self.leftovers.is_empty()
            && self.faults.values().all(|k| k.unrecovered == 0)
    }

    /// The report as Markdown tables.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{} participants in {} rooms over 2 portals, {:.0} s, seed {}, {} management replica(s)\n\n\
             | fault | count | recovery p50 | p99 | max | not recovered | texts lost | texts duplicated |\n|---|---|---|---|---|---|---|---|\n",
            self.participants, self.rooms, self.seconds, self.seed, self.management_replicas
        );
        for (kind, k) in &self.faults {
            s += &format!(
                "| {kind} | {} | {:.2} s | {:.2} s | {:.2} s | {} | {} | {} |\n",
                k.count,
                k.recovery_p50,
                k.recovery_p99,
                k.recovery_max,
                k.unrecovered,
                k.lost,
                k.duplicated
            );
        }
        s += &format!(
            "\n| texts sent | acked ok | deliveries expected | delivered | lost | duplicated | not acked | made up | seats lost | relogins | inconsistent events |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.texts_sent,
            self.texts_acked,
            self.deliveries_expected,
            self.delivered,
            self.lost,
            self.duplicated,
            self.texts_unacked,
            self.phantoms,
            self.seats_lost,
            self.relogins,
            self.inconsistencies
        );
        s += &format!(
            "\nOf these, in flight at a portal SIGKILL (a limit of the OWT protocol): {} lost, {} duplicated.\n",
            self.lost_in_flight, self.duplicated_in_flight
        );
        s += "\n| service | RSS at start | RSS at end | restarts |\n|---|---|---|---|\n";
        for (name, start, end, restarts) in &self.memory {
            s += &format!(
                "| {name} | {:.1} MiB | {:.1} MiB | {restarts} |\n",
                *start as f64 / 1024.0,
                *end as f64 / 1024.0
            );
        }
        if !self.relogin_refusals.is_empty() {
            s += &format!("\nrelogin refusals: {:?}\n", self.relogin_refusals);
        }
        if !self.leftovers.is_empty() {
            s += &format!("\nleft over: {:?}\n", self.leftovers);
        }
        s += "\nfaults: ";
        s += &self
            .timeline
            .iter()
            .map(|(at, kind, hit)| format!("{at:.1} s {kind} ({hit})"))
            .collect::<Vec<_>>()
            .join("; ");
        s += "\n";
        for p in self.problems.iter().take(20) {
            s += &format!("\n- {p}");
        }
        s
    }
}

/// A small deterministic generator (xorshift), so a seed replays a run's
/// choice of faults.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Memory of every service process (and the nodes together), in KiB RSS.
fn memory(cluster: &Cluster, node_pids: &[u32]) -> Vec<(String, u64, usize)> {
    let mut out: Vec<(String, u64, usize)> = Vec::new();
    for s in cluster.services() {
        let name = s.label.clone();
        let rss = s
            .pid()
            .and_then(cluster::memory_kib)
            .map_or(0, |(rss, _)| rss);
        out.push((name, rss, s.restarts));
    }
    let nodes: u64 = node_pids
        .iter()
        .filter_map(|p| cluster::memory_kib(*p))
        .map(|(_, pss)| pss)
        .sum();
    out.push((
        format!("conference nodes ({}, PSS)", node_pids.len()),
        nodes,
        0,
    ));
    out
}

async fn node_pids(cluster: &Cluster, rooms: &[String]) -> Vec<u32> {
    cluster
        .room_nodes(rooms)
        .await
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// Run the soak; the report, or why it could not run.
pub async fn run(config: Config) -> Result<Report, String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| e.to_string())?;
    let key = "chaos-service-key";
    let bin_dir = config.bin_dir.clone();
    let data_dir = config.data_dir.clone();
    let mut cluster = tokio::task::spawn_blocking(move || Cluster::start(&bin_dir, &data_dir, key))
        .await
        .map_err(|e| e.to_string())??;
    let management = cluster.management_addrs[0].clone();
    wait_schedulable(&cluster).await?;

    // rooms and logins, spread over the portals by the tokens
    let rooms_n = config.participants.div_ceil(config.room_size);
    let mut rooms = Vec::new();
    for i in 0..rooms_n {
        rooms.push(
            conclave_stack::testing::grpc::create_room(&management, &format!("chaos-{i}"), -1)
                .await,
        );
    }
    let portals = Arc::new(cluster.portal_sockets.clone());
    let mut participants = Vec::new();
    for i in 0..config.participants {
        let room = i / config.room_size;
        let token = conclave_stack::testing::grpc::create_token(
            &management,
            &rooms[room],
            &format!("u{i}"),
            "presenter",
        )
        .await;
        // half on each portal, as a load balancer spreads them (a token
        // names the portal management scheduled, and any portal takes it)
        let portal = i % portals.len();
        participants.push(
            Participant::login(i, room, &token, &portals, portal)
                .await
                .map_err(|e| format!("participant {i}: {e}"))?,
        );
    }
    let members: Vec<BTreeSet<String>> = (0..rooms_n)
        .map(|r| {
            participants
                .iter()
                .filter(|p| p.room == r)
                .map(|p| p.id.clone())
                .collect()
        })
        .collect();
    let memory_start = memory(&cluster, &node_pids(&cluster, &rooms).await);

    // everyone texts; faults come
    let ledger: Shared = Arc::new(Mutex::new(Ledger::new(config.participants)));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = participants
        .into_iter()
        .map(|p| {
            tokio::spawn(p.run(
                portals.clone(),
                config.text_every,
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    let mut rng = Rng(config.seed | 1);
    let mut order: Vec<FaultKind> = Vec::new();
    let mut report = Report {
        participants: config.participants,
        rooms: rooms_n,
        seed: config.seed,
        management_replicas: cluster.managements.len(),
        ..Report::default()
    };
    let mut recoveries: BTreeMap<FaultKind, Vec<f64>> = BTreeMap::new();
    let mut inflicted: Vec<(Instant, FaultKind)> = Vec::new();
    let mut unrecovered: BTreeMap<FaultKind, usize> = BTreeMap::new();
    // texting settles before the first fault
    tokio::time::sleep(config.fault_every).await;
    while started.elapsed() + config.fault_every < config.duration {
        if order.is_empty() {
            // every kind once per round, in a random order
            order = config.kinds.clone();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
        }
        let kind = order.pop().unwrap();
        let at = Instant::now();
        let hit = cluster
            .inflict(kind, &rooms, config.stall, &mut |n| rng.below(n))
            .await;
        let (hit, landed) = match hit {
            Ok(h) => h,
            Err(e) => {
                report.problems.push(format!("{}: {e}", kind.name()));
                continue;
            }
        };
        println!(
            "[chaos] {:.1} s: {} ({hit})",
            (at - started).as_secs_f64(),
            kind.name()
        );
        // what a process may have handled before it died is judged from
        // when the fault landed; recovery is timed from the decision
        inflicted.push((landed, kind));
        report.timeline.push((
            (at - started).as_secs_f64(),
            kind.name().into(),
            hit.clone(),
        ));
        // recovered: everyone received a text sent after the fault
        let limit = Duration::from_secs(60);
        let recovered = loop {
            let done = {
                let l = ledger.lock().unwrap();
                (0..config.participants)
                    .all(|i| l.seat_lost[i].is_some() || l.newest_seen[i].is_some_and(|n| n > at))
            };
            if done {
                break true;
            }
            if at.elapsed() > limit {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if recovered {
            recoveries
                .entry(kind)
                .or_default()
                .push(recovery(&ledger.lock().unwrap(), at));
        } else {
            *unrecovered.entry(kind).or_default() += 1;
            report.problems.push(format!(
                "{} ({hit}) at {:.1} s: not recovered in {limit:?}",
                kind.name(),
                (at - started).as_secs_f64()
            ));
        }
        // One fault at a time: the next comes once everything acked before
        // this one has arrived (replays included), so that each is measured
        // on a whole system and not on the remains of the one before.
        // Texts sent during the fault count too: a stalled portal has a
        // backlog to work off once it runs again, and a kill in the middle
        // of that is two faults at once.
        let healed_by = at + limit;
        let until = Instant::now();
        while !healed(&ledger.lock().unwrap(), at, until, config.room_size)
            && Instant::now() < healed_by
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let next = at + config.fault_every;
        tokio::time::sleep_until(next).await;
    }
    // the run ends: texting stops, the last ones arrive
    let remaining = config.duration.saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::Relaxed);
    let mut participants = Vec::new();
    for t in tasks {
        participants.push(t.await.map_err(|e| e.to_string())?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for p in &mut participants {
        p.drain(&ledger).await;
    }
    for (kind, mut times) in recoveries {
        times.sort_by(f64::total_cmp);
        let k = report.faults.entry(kind.name().into()).or_default();
        k.count += times.len();
        k.recovery_p50 = percentile(&times, 0.5);
        k.recovery_p99 = percentile(&times, 0.99);
        k.recovery_max = times.last().copied().unwrap_or_default();
    }
    for (kind, n) in unrecovered {
        let k = report.faults.entry(kind.name().into()).or_default();
        k.count += n;
        k.unrecovered = n;
    }
    tally(
        &mut report,
        started,
        &inflicted,
        &ledger.lock().unwrap(),
        &participants,
        &members,
    );

    // everyone logs out: nothing is left
    for p in participants {
        if let Err(e) = p.logout().await {
            report.problems.push(e);
        }
    }
    let memory_end = memory(&cluster, &node_pids(&cluster, &rooms).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    report.leftovers = loop {
        let left = cluster.leftovers().await;
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // the rooms' reservations lapse 30 s after they were laid down
    let deadline = Instant::now() + Duration::from_secs(45);
    let reservations = loop {
        let left = cluster.reservations(&rooms).await;
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    report.leftovers.extend(reservations);
    report.memory = memory_start
        .into_iter()
        .zip(memory_end)
        .map(|((name, start, _), (_, end, restarts))| (name, start, end, restarts))
        .collect();
    Ok(report)
}

/// Whether every text sent from 20 s before the fault at `at` until
/// `until` is settled: its ack came, and if it was `ok`, every room member
/// that still has its seat received it.
fn healed(l: &Ledger, at: Instant, until: Instant, room_size: usize) -> bool {
    let from = at.checked_sub(Duration::from_secs(20)).unwrap_or(at);
    l.texts.iter().all(|(id, t)| {
        if t.at >= until || t.at < from {
            return true;
        }
        match t.acked {
            None => false,
            Some(false) => true,
            Some(true) => {
                let first = t.room * room_size;
                (first..(first + room_size).min(l.received.len()))
                    .all(|r| l.seat_lost[r].is_some() || l.received[r].contains_key(id))
            }
        }
    })
}

/// Seconds from `at` until every participant received a text sent after it.
fn recovery(l: &Ledger, at: Instant) -> f64 {
    l.arrivals
        .iter()
        .zip(&l.seat_lost)
        .filter(|(_, lost)| lost.is_none())
        .filter_map(|(arrivals, _)| {
            arrivals
                .iter()
                .filter(|(sent, _)| *sent > at)
                .map(|(_, arrived)| *arrived)
                .min()
        })
        .max()
        .map_or(0.0, |t| (t - at).as_secs_f64())
}

/// Texts, seats and participant lists, from the ledger.
/// The fault a text sent at `at` is counted against: the last one that
/// began no later than 2 s after it (a text is in flight that long under
/// load).
fn fault_of(faults: &[(Instant, FaultKind)], at: Instant) -> Option<FaultKind> {
    faults
        .iter()
        .rev()
        .find(|(t, _)| *t <= at + Duration::from_secs(2))
        .map(|(_, k)| *k)
}

/// A text sent at `sent`, never received by a participant that relogged
/// after a portal SIGKILL that came after the text: it can have been in the
/// killed portal's hands.
fn lost_in_flight(faults: &[(Instant, FaultKind)], relogged: &[Instant], sent: Instant) -> bool {
    faults.iter().any(|(k, kind)| {
        *kind == FaultKind::KillPortal
            && *k >= sent
            && *k <= sent + Duration::from_secs(2)
            && relogged
                .iter()
                .any(|g| *g > *k && *g <= *k + Duration::from_secs(15))
    })
}

/// A text received first at `first` and again at `last`, with a relogin
/// between the two that followed a portal SIGKILL around the first copy:
/// the killed portal sent it but did not live to tell its node.
fn duplicated_in_flight(
    faults: &[(Instant, FaultKind)],
    relogged: &[Instant],
    first: Instant,
    last: Instant,
) -> bool {
    relogged.iter().any(|g| {
        *g > first
            && *g <= last
            && faults.iter().any(|(k, kind)| {
                *kind == FaultKind::KillPortal
                    && *k + Duration::from_secs(1) >= first
                    && *k <= first + Duration::from_secs(2)
                    && *k <= *g
            })
    })
}

fn tally(
    report: &mut Report,
    started: Instant,
    faults: &[(Instant, FaultKind)],
    l: &Ledger,
    participants: &[Participant],
    members: &[BTreeSet<String>],
) {
    report.texts_sent = l.texts.len();
    report.relogins = l.relogins;
    report.relogin_refusals = l
        .relogin_refusals
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    report.phantoms = l.phantoms.len();
    report.problems.extend(l.phantoms.iter().take(5).cloned());
    report.inconsistencies = l.inconsistencies.len();
    report
        .problems
        .extend(l.inconsistencies.iter().take(5).cloned());
    for (i, lost) in l.seat_lost.iter().enumerate() {
        if let Some(why) = lost {
            report.seats_lost += 1;
            report.problems.push(format!("participant {i}: {why}"));
        }
    }
    let room_of: Vec<usize> = participants.iter().map(|p| p.room).collect();
    // one example per lost text
    let mut reported = BTreeSet::new();
    for (id, sent) in &l.texts {
        let receivers: Vec<usize> = (0..room_of.len())
            .filter(|i| room_of[*i] == sent.room)
            .collect();
        let acked = sent.acked == Some(true);
        if acked {
            report.texts_acked += 1;
            report.deliveries_expected += receivers.len();
        } else {
            report.texts_unacked += 1;
        }
        for r in receivers {
            let (times, first, last) = l.received[r]
                .get(id)
                .copied()
                .unwrap_or((0, sent.at, sent.at));
            match times {
                0 if acked => {
                    report.lost += 1;
                    if lost_in_flight(faults, &l.relogged[r], sent.at) {
                        report.lost_in_flight += 1;
                    }
                    if let Some(k) = fault_of(faults, sent.at) {
                        report.faults.entry(k.name().into()).or_default().lost += 1;
                    }
                    if reported.len() < 8 && reported.insert(id.clone()) {
                        let secs = |t: Instant| format!("{:.2}", (t - started).as_secs_f64());
                        report.problems.push(format!(
                            "text {id} sent at {} s by participant {} ({}) acked ok never reached participant {r} ({}) (its relogins at {:?} s; the sender's at {:?} s)",
                            secs(sent.at),
                            sent.by,
                            participants[sent.by].id,
                            participants[r].id,
                            l.relogged[r].iter().map(|t| secs(*t)).collect::<Vec<_>>(),
                            l.relogged[sent.by].iter().map(|t| secs(*t)).collect::<Vec<_>>(),
                        ));
                    }
                }
                0 => {}
                n => {
                    report.delivered += 1;
                    if n > 1 {
                        report.duplicated += 1;
                        if duplicated_in_flight(faults, &l.relogged[r], first, last) {
                            report.duplicated_in_flight += 1;
                        }
                        if let Some(k) = fault_of(faults, sent.at) {
                            report.faults.entry(k.name().into()).or_default().duplicated += 1;
                        }
                        if report.duplicated <= 5 {
                            let secs = |t: Instant| format!("{:.2}", (t - started).as_secs_f64());
                            report.problems.push(format!(
                                "text {id} sent at {} s by participant {} reached participant {r} {n} times, first at {} s, last at {} s (its relogins at {:?} s; the sender's at {:?} s)",
                                secs(sent.at),
                                sent.by,
                                secs(first),
                                secs(last),
                                l.relogged[r].iter().map(|t| secs(*t)).collect::<Vec<_>>(),
                                l.relogged[sent.by].iter().map(|t| secs(*t)).collect::<Vec<_>>(),
                            ));
                        }
                    }
                }
            }
        }
    }
    for p in participants {
        let mut known = p.known.clone();
        known.insert(p.id.clone());
        if known != members[p.room] {
            report.inconsistencies += 1;
            report.problems.push(format!(
                "participant {} knows {} of its room of {} ({:?} extra, {:?} missing)",
                p.id,
                known.len(),
                members[p.room].len(),
                known.difference(&members[p.room]).collect::<Vec<_>>(),
                members[p.room].difference(&known).collect::<Vec<_>>()
            ));
        }
    }
}

/// Wait until a portal and an agent can be scheduled.
async fn wait_schedulable(cluster: &Cluster) -> Result<(), String> {
    let manager = cluster.managers_list();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = conclave_stack::testing::grpc::manager(&manager);
        let count = |purpose: &str| {
            let purpose = purpose.to_string();
            let mut m = m.clone();
            async move {
                m.get_workers(conclave_proto::cluster::v1::GetWorkersRequest { purpose })
                    .await
                    .map(|r| r.into_inner().workers.len())
                    .unwrap_or(0)
            }
        };
        if count("portal").await == 2 && count("conference").await == 2 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the stack did not come up: two portals and two agents".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_heals_once_what_was_sent_during_it_has_arrived_too() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        // a room of two; the fault at 30 s, the check at 35 s
        let (at, until) = (s(30_000), s(35_000));
        let mut l = participant::Ledger::new(2);
        let send = |l: &mut participant::Ledger, id: &str, ms: u64, acked| {
            l.texts.insert(
                id.into(),
                participant::Sent {
                    room: 0,
                    by: 0,
                    at: s(ms),
                    acked,
                },
            );
        };
        let arrive = |l: &mut participant::Ledger, id: &str, r: usize| {
            l.received[r].insert(id.into(), (1, s(36_000), s(36_000)));
        };
        send(&mut l, "before", 29_000, Some(true));
        arrive(&mut l, "before", 0);
        arrive(&mut l, "before", 1);
        assert!(healed(&l, at, until, 2));
        // sent while the fault lasted, acked, not yet at one receiver
        send(&mut l, "during", 32_000, Some(true));
        arrive(&mut l, "during", 0);
        assert!(!healed(&l, at, until, 2), "a text sent during the fault");
        arrive(&mut l, "during", 1);
        assert!(healed(&l, at, until, 2));
        // its ack still awaited
        send(&mut l, "pending", 34_000, None);
        assert!(!healed(&l, at, until, 2), "a text whose ack is awaited");
        l.texts.get_mut("pending").unwrap().acked = Some(false);
        assert!(healed(&l, at, until, 2), "a refused text is settled");
        // after the check began, or long before the fault: not waited for
        send(&mut l, "after", 35_500, None);
        send(&mut l, "old", 1_000, None);
        assert!(healed(&l, at, until, 2));
    }

    #[test]
    fn only_what_a_portal_sigkill_had_in_flight_is_excused() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let kill = [(s(1_000), FaultKind::KillPortal)];
        let node = [(s(1_000), FaultKind::KillNode)];
        // lost: sent before the kill, the receiver relogged after it
        assert!(lost_in_flight(&kill, &[s(1_500)], s(900)));
        assert!(
            !lost_in_flight(&kill, &[s(1_500)], s(1_100)),
            "sent after the kill"
        );
        assert!(
            !lost_in_flight(&kill, &[], s(900)),
            "its receiver never moved"
        );
        assert!(!lost_in_flight(&node, &[s(1_500)], s(900)), "another kind");
        // duplicated: first copy around the kill, second after a relogin
        assert!(duplicated_in_flight(&kill, &[s(1_500)], s(990), s(1_600)));
        assert!(
            !duplicated_in_flight(&kill, &[s(1_500)], s(990), s(1_400)),
            "both before the relogin"
        );
        let later = [(s(9_000), FaultKind::KillPortal)];
        assert!(
            !duplicated_in_flight(&later, &[s(9_500)], s(1_000), s(9_600)),
            "first copy long before the kill"
        );
        assert!(!duplicated_in_flight(&node, &[s(1_500)], s(990), s(1_600)));
    }
}
