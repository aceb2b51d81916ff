//! Standby cluster managers (issue 20): every manager campaigns in one etcd
//! election, holding a lease; the leader serves and the others answer every
//! worker call with a status naming the leader.
//!
//! [`Standing`] is the decision, plain Rust: a leader may serve only while
//! its lease is known to be alive, counted from the moment the last renewal
//! that etcd confirmed was *sent* (etcd reset the TTL after that moment, so
//! the lease lives at least until then plus the TTL), minus a margin for
//! clock drift. A leader paused (SIGSTOP, a VM pause) or cut off past that
//! deadline stops serving at once, before it handles anything, even if
//! nobody has told it yet. [`run`] is the etcd adapter.

use conclave_proto::etcd::etcdserverpb::kv_client::KvClient;
use conclave_proto::etcd::etcdserverpb::lease_client::LeaseClient;
use conclave_proto::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
};
use conclave_proto::etcd::v3electionpb::election_client::ElectionClient;
use conclave_proto::etcd::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ResignRequest,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// `[election]`: standby managers through etcd. Without `etcd`, one
/// manager serves alone, as always.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ElectionConfig {
    /// etcd endpoints, `["http://host:2379", ...]`. Default [] (no election).
    pub etcd: Vec<String>,
    /// The election every manager of one cluster campaigns in. Default
    /// "conclave/cluster-manager".
    pub name: String,
    /// The lease TTL in seconds: how long a leader that stopped renewing
    /// (dead, paused, cut off) keeps the election. Default 2 (etcd's
    /// minimum with its default timing).
    pub ttl: u64,
    /// The address workers are told to call when this manager leads
    /// (host:port). Default "": this host's first non-loopback address and
    /// the listen port. "<network in CIDR form>:port" (e.g.
    /// "10.0.9.0/24:7001"): this host's address in that network.
    pub advertise: String,
    /// `manager.initial_time` of a newly elected leader: how long it answers
    /// `Schedule` with "not ready" while the workers, told "whoareyou" on
    /// their next keep-alive (every 800 ms), rejoin and re-announce their
    /// tasks. Default 1000.
    pub initial_time: u64,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            etcd: Vec::new(),
            name: "conclave/cluster-manager".into(),
            ttl: 2,
            advertise: String::new(),
            initial_time: 1000,
        }
    }
}

impl ElectionConfig {
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }
}

/// Where this manager stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not leading.
    Follower,
    /// Leading while `now < until`.
    Leader { until: Instant },
}

/// The decision: may this manager serve now, and if not, who does.
#[derive(Debug)]
pub struct Standing {
    ttl: Duration,
    role: Role,
    /// When the last renewal etcd confirmed was sent (this lease).
    confirmed: Option<Instant>,
    /// The other manager etcd last said leads, if any.
    observed: Option<String>,
    /// A term began (elected) whose end the service has not yet been told
    /// of. A leader can step down in [`check`](Self::check), from a gRPC
    /// handler, before the election loop notices; the loop still ends the
    /// term (fresh state, watch streams closed) through this.
    term_open: bool,
}

/// Why a manager does not serve a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLeader {
    #[error("this cluster manager is a standby: the leader is {0}")]
    Leader(String),
    #[error("this cluster manager is a standby and no leader is elected yet")]
    NoLeader,
}

impl Standing {
    pub fn new(ttl: Duration) -> Standing {
        Standing {
            ttl,
            role: Role::Follower,
            confirmed: None,
            observed: None,
            term_open: false,
        }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    /// How long a confirmed renewal lets a leader serve: the TTL less a
    /// tenth (clock drift between here and etcd) and less 100 ms.
    fn validity(&self) -> Duration {
        self.ttl
            .saturating_sub(self.ttl / 10)
            .saturating_sub(Duration::from_millis(100))
    }

    /// A new lease: nothing confirmed yet.
    pub fn new_lease(&mut self) {
        self.confirmed = None;
    }

    /// Elected: lead until the last confirmed renewal runs out (at once
    /// not, if none was confirmed).
    pub fn elected(&mut self) {
        let Some(sent) = self.confirmed else {
            return;
        };
        self.role = Role::Leader {
            until: sent + self.validity(),
        };
        self.term_open = true;
    }

    /// Whether a term began since the last call (and so must be ended now).
    pub fn take_term(&mut self) -> bool {
        std::mem::take(&mut self.term_open)
    }

    /// Whether this manager leads at `now`, without stepping down.
    pub fn leads(&self, now: Instant) -> bool {
        matches!(self.role, Role::Leader { until } if now < until)
    }

    /// etcd confirmed a renewal sent at `sent`: a leader's deadline moves.
    pub fn renewed(&mut self, sent: Instant) {
        self.confirmed = Some(self.confirmed.map_or(sent, |c| c.max(sent)));
        let validity = self.validity();
        if let Role::Leader { until } = &mut self.role {
            *until = (*until).max(sent + validity);
        }
    }

    /// The lease is gone or cannot be renewed: follow.
    pub fn step_down(&mut self) {
        self.role = Role::Follower;
        self.confirmed = None;
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// Who etcd says leads (from `Leader` or `Observe`; `None`: nobody or
    /// this manager). Kept while leading too: a leader that steps down
    /// names whoever took over meanwhile.
    pub fn leader_is(&mut self, address: Option<String>) {
        self.observed = address;
    }

    /// Whether this manager may serve at `now`. A leader past its deadline
    /// becomes a follower here, before it serves anything.
    pub fn check(&mut self, now: Instant) -> Result<(), NotLeader> {
        match &self.role {
            Role::Leader { until } if now < *until => Ok(()),
            Role::Leader { .. } => {
                tracing::warn!(
                    "the election lease is past its deadline (this manager was paused or cut off): stepping down"
                );
                self.step_down();
                match &self.observed {
                    Some(l) => Err(NotLeader::Leader(l.clone())),
                    None => Err(NotLeader::NoLeader),
                }
            }
            Role::Follower => match &self.observed {
                Some(l) => Err(NotLeader::Leader(l.clone())),
                None => Err(NotLeader::NoLeader),
            },
        }
    }
}

/// The standing shared by the election task and the gRPC handlers.
pub type Shared = Arc<Mutex<Standing>>;

/// Lazily connecting channels to each etcd endpoint; a term uses one, the
/// next term the next one.
fn channels(endpoints: &[String]) -> Result<Vec<tonic::transport::Channel>, String> {
    endpoints
        .iter()
        .map(|e| {
            let uri = if e.contains("://") {
                e.clone()
            } else {
                format!("http://{e}")
            };
            tonic::transport::Endpoint::from_shared(uri)
                .map(|ep| {
                    ep.connect_timeout(Duration::from_millis(1000))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(1))
                        .keep_alive_timeout(Duration::from_secs(1))
                        .connect_lazy()
                })
                .map_err(|e| format!("etcd endpoint `{e}`"))
        })
        .collect()
}

/// Campaign for as long as `stop` is not cancelled: lease, campaign, lead
/// while the lease is renewed, step down when it is not, start again.
/// `changed` runs each time this manager becomes the leader (with the
/// workers the previous leader knew) or stops leading (`None`): the
/// service starts a fresh term. While leading, the workers `workers` lists
/// are kept in etcd for the next leader.
pub async fn run(
    config: ElectionConfig,
    advertise: String,
    standing: Shared,
    changed: impl Fn(Option<BTreeSet<String>>) + Send + Sync + 'static,
    workers: impl Fn() -> BTreeSet<String> + Send + Sync + 'static,
    stop: CancellationToken,
) {
    let channels = match channels(&config.etcd) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(error = %e, "no election");
            return;
        }
    };
    let ttl = Duration::from_secs(config.ttl.max(1));
    let retry = Duration::from_millis(500);
    let observer = tokio::spawn(observe(
        channels.clone(),
        config.name.clone(),
        advertise.clone(),
        standing.clone(),
        stop.clone(),
    ));
    let mut attempt = 0usize;
    while !stop.is_cancelled() {
        let channel = channels[attempt % channels.len()].clone();
        attempt += 1;
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            r = term(&channel, &config.name, &advertise, ttl, &standing, &changed, &workers, &stop) => r,
        };
        // a term that began ends here, even when a handler already stepped
        // down (a paused leader past its lease)
        let was_leading = {
            let mut s = standing.lock().unwrap_or_else(|e| e.into_inner());
            s.step_down();
            s.take_term()
        };
        if was_leading {
            changed(None);
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "election: not leading; campaigning again");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(retry) => {}
        }
    }
    observer.abort();
}

/// Where the leader keeps the ids of the workers it knows: beside the
/// election, not under it (every key under `<name>/` is a campaigner).
fn workers_key(name: &str) -> Vec<u8> {
    format!("{name}.workers").into_bytes()
}

/// One lease: campaign with it, then lead until it can no longer be renewed.
#[allow(clippy::too_many_arguments)]
async fn term(
    channel: &tonic::transport::Channel,
    name: &str,
    advertise: &str,
    ttl: Duration,
    standing: &Shared,
    changed: &(impl Fn(Option<BTreeSet<String>>) + Send + Sync + 'static),
    workers: &(impl Fn() -> BTreeSet<String> + Send + Sync + 'static),
    stop: &CancellationToken,
) -> Result<(), String> {
    let mut leases = LeaseClient::new(channel.clone());
    let granted = tokio::time::timeout(
        ttl,
        leases.lease_grant(LeaseGrantRequest {
            ttl: ttl.as_secs() as i64,
            id: 0,
        }),
    )
    .await
    .map_err(|_| "lease grant: no answer from etcd".to_string())?
    .map_err(|s| format!("lease grant: {}", s.message()))?
    .into_inner();
    if !granted.error.is_empty() {
        return Err(format!("lease grant: {}", granted.error));
    }
    let lease = granted.id;
    standing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .new_lease();
    // renew every third of the TTL from now on, also while campaigning;
    // the first renewal goes out with the call (etcd answers the stream's
    // headers with its first reply)
    let (tx, rx) = tokio::sync::mpsc::channel::<LeaseKeepAliveRequest>(4);
    let mut sent_at = std::collections::VecDeque::new();
    tx.send(LeaseKeepAliveRequest { id: lease })
        .await
        .map_err(|_| "the keep-alive stream closed".to_string())?;
    sent_at.push_back(Instant::now());
    let mut replies = tokio::time::timeout(
        ttl,
        leases.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| "lease keep-alive: no answer from etcd".to_string())?
    .map_err(|s| format!("lease keep-alive: {}", s.message()))?
    .into_inner();
    let period = ttl / 3;
    let renewals = async {
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if tx.send(LeaseKeepAliveRequest { id: lease }).await.is_err() {
                        return "the keep-alive stream closed".to_string();
                    }
                    sent_at.push_back(Instant::now());
                }
                reply = replies.message() => match reply {
                    Ok(Some(r)) if r.ttl > 0 => {
                        if let Some(sent) = sent_at.pop_front() {
                            standing.lock().unwrap_or_else(|e| e.into_inner()).renewed(sent);
                        }
                    }
                    Ok(Some(_)) => return "the lease expired".to_string(),
                    Ok(None) => return "etcd closed the keep-alive stream".to_string(),
                    Err(s) => return format!("lease keep-alive: {}", s.message()),
                }
            }
        }
    };
    let campaign = async {
        let reply = ElectionClient::new(channel.clone())
            .campaign(CampaignRequest {
                name: name.as_bytes().to_vec(),
                lease,
                value: advertise.as_bytes().to_vec(),
            })
            .await
            .map_err(|s| format!("campaign: {}", s.message()))?
            .into_inner();
        Ok::<_, String>(reply.leader)
    };
    tokio::pin!(renewals);
    let leader_key = tokio::select! {
        why = &mut renewals => return Err(why),
        won = campaign => won?,
    };
    // serve until the last confirmed renewal runs out; with none confirmed
    // yet, wait for the first
    loop {
        let leading = {
            let mut s = standing.lock().unwrap_or_else(|e| e.into_inner());
            s.elected();
            s.is_leader()
        };
        if leading {
            break;
        }
        tokio::select! {
            why = &mut renewals => return Err(why),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    // whom the previous leader knew: scheduling can start once they are back
    let mut kv = KvClient::new(channel.clone());
    let expected: BTreeSet<String> = match tokio::time::timeout(
        ttl,
        kv.range(RangeRequest {
            key: workers_key(name),
            ..Default::default()
        }),
    )
    .await
    {
        Ok(Ok(reply)) => reply
            .into_inner()
            .kvs
            .first()
            .and_then(|kv| serde_json::from_slice(&kv.value).ok())
            .unwrap_or_default(),
        _ => BTreeSet::new(),
    };
    tracing::info!(%advertise, lease, expected = expected.len(), "elected: this cluster manager leads");
    changed(Some(expected));
    // keep the list of workers in etcd for the next leader
    let publish = async {
        let mut written: Option<BTreeSet<String>> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let now = workers();
            let leading = standing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(Instant::now())
                .is_ok();
            if !leading || written.as_ref() == Some(&now) {
                continue;
            }
            let value = serde_json::to_vec(&now).unwrap_or_default();
            let put = kv.put(PutRequest {
                key: workers_key(name),
                value,
                lease: 0,
            });
            if let Ok(Ok(_)) = tokio::time::timeout(ttl, put).await {
                written = Some(now);
            }
        }
    };
    let why = tokio::select! {
        why = &mut renewals => why,
        _ = publish => unreachable!("publishing runs until the term ends"),
        _ = stop.cancelled() => {
            // leaving: hand over at once instead of letting the lease lapse
            let _ = ElectionClient::new(channel.clone())
                .resign(ResignRequest { leader: leader_key.clone() })
                .await;
            let _ = leases.lease_revoke(LeaseRevokeRequest { id: lease }).await;
            return Ok(());
        }
    };
    let _ = leases.lease_revoke(LeaseRevokeRequest { id: lease }).await;
    let _: Option<LeaderKey> = leader_key;
    Err(format!("lost the lead: {why}"))
}

/// Follow who leads (etcd's `Leader`, then `Observe`), so that a follower
/// names the leader in its answers.
async fn observe(
    channels: Vec<tonic::transport::Channel>,
    name: String,
    advertise: String,
    standing: Shared,
    stop: CancellationToken,
) {
    let mut attempt = 0usize;
    while !stop.is_cancelled() {
        let mut client = ElectionClient::new(channels[attempt % channels.len()].clone());
        attempt += 1;
        let request = || LeaderRequest {
            name: name.as_bytes().to_vec(),
        };
        if let Ok(reply) = client.leader(request()).await {
            let leader = reply
                .into_inner()
                .kv
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            set_leader(&standing, &advertise, leader);
        }
        if let Ok(stream) = client.observe(request()).await {
            let mut stream = stream.into_inner();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    m = stream.message() => match m {
                        Ok(Some(reply)) => {
                            let leader = reply.kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                            set_leader(&standing, &advertise, leader);
                        }
                        _ => break,
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn set_leader(standing: &Shared, me: &str, leader: Option<String>) {
    let leader = leader.filter(|l| l != me);
    standing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .leader_is(leader);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_names_the_leader_it_knows() {
        let mut s = Standing::new(Duration::from_secs(2));
        let now = Instant::now();
        assert_eq!(s.check(now), Err(NotLeader::NoLeader));
        s.leader_is(Some("10.0.0.2:7001".into()));
        assert_eq!(s.check(now), Err(NotLeader::Leader("10.0.0.2:7001".into())));
        assert_eq!(
            NotLeader::Leader("10.0.0.2:7001".into()).to_string(),
            "this cluster manager is a standby: the leader is 10.0.0.2:7001"
        );
    }

    #[test]
    fn a_term_that_a_handler_stepped_down_from_still_ends() {
        let mut s = Standing::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(!s.take_term(), "no term before an election");
        s.renewed(t0);
        s.elected();
        assert!(s.leads(t0));
        // paused past the lease: the first call after it steps down
        let late = t0 + Duration::from_secs(5);
        assert!(!s.leads(late));
        assert!(s.check(late).is_err());
        assert!(!s.is_leader());
        assert!(s.take_term(), "the term must still be ended");
        assert!(!s.take_term(), "once");
    }

    #[test]
    fn a_leader_serves_only_within_its_confirmed_lease() {
        let mut s = Standing::new(Duration::from_secs(2));
        let t0 = Instant::now();
        s.elected();
        assert_eq!(
            s.check(t0),
            Err(NotLeader::NoLeader),
            "no confirmed renewal yet"
        );
        s.renewed(t0);
        s.elected();
        // 2 s less a tenth less 100 ms: 1.7 s from the send
        assert_eq!(s.check(t0 + Duration::from_millis(1699)), Ok(()));
        s.renewed(t0 + Duration::from_millis(600));
        assert_eq!(s.check(t0 + Duration::from_millis(2299)), Ok(()));
        // an older confirmation never shortens the deadline
        s.renewed(t0);
        assert_eq!(s.check(t0 + Duration::from_millis(2299)), Ok(()));
        // paused past it: steps down before serving, and stays down
        assert_eq!(
            s.check(t0 + Duration::from_secs(10)),
            Err(NotLeader::NoLeader)
        );
        assert_eq!(*s.role(), Role::Follower);
        s.renewed(t0 + Duration::from_secs(10));
        assert_eq!(
            s.check(t0 + Duration::from_secs(10)),
            Err(NotLeader::NoLeader),
            "a renewal does not make a leader"
        );
    }

    #[test]
    fn a_leader_serves_whatever_it_hears_and_names_the_new_leader_once_down() {
        let mut s = Standing::new(Duration::from_secs(2));
        let t0 = Instant::now();
        s.renewed(t0);
        assert_eq!(
            s.check(t0),
            Err(NotLeader::NoLeader),
            "a renewal alone is no lead"
        );
        s.elected();
        // another took over while this one was paused: heard before it
        // noticed its own lease ran out
        s.leader_is(Some("other:7001".into()));
        assert_eq!(s.check(t0), Ok(()));
        assert_eq!(
            s.check(t0 + Duration::from_secs(5)),
            Err(NotLeader::Leader("other:7001".into()))
        );
        s.leader_is(None);
        assert_eq!(s.check(t0), Err(NotLeader::NoLeader));
    }
}
