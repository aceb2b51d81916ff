//! A chaos participant: logs in as the official JavaScript SDK does
//! (protocol 1.2, reconnection ticket, missed notifications as events after
//! a relogin), texts its room at a steady rate, and when its portal dies or
//! drains it relogs in on the other one, as a client behind a load balancer
//! would. Everything it sends and receives goes into the [`Ledger`].

use crate::sio::{Client, Event};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A text's ack or a relogin's answer takes at most this long.
const ACK: Duration = Duration::from_secs(10);
/// A connection attempt gives up after this long (a stopped portal accepts
/// TCP and answers nothing).
const CONNECT: Duration = Duration::from_secs(3);
/// A participant that cannot relogin within this long has lost its seat
/// (the seat is kept 60 s).
const RELOGIN_LIMIT: Duration = Duration::from_secs(50);

pub const SDK: &str = "JavaScript";

/// A text as its sender registered it before sending.
pub struct Sent {
    pub room: usize,
    /// The sender's index.
    pub by: usize,
    pub at: Instant,
    /// Some(true): acked `ok`; Some(false): refused or no ack.
    pub acked: Option<bool>,
}

/// Everything the participants did and saw.
#[derive(Default)]
pub struct Ledger {
    pub texts: HashMap<String, Sent>,
    /// Per participant: text id → (times received, first arrival, last
    /// arrival).
    pub received: Vec<HashMap<String, (u32, Instant, Instant)>>,
    /// Per participant: (sent at, arrived at) of every text received.
    pub arrivals: Vec<Vec<(Instant, Instant)>>,
    /// Per participant: the latest send time of a text it received.
    pub newest_seen: Vec<Option<Instant>>,
    /// Texts received that nobody sent.
    pub phantoms: Vec<String>,
    /// Per participant, why it lost its seat.
    pub seat_lost: Vec<Option<String>>,
    pub relogins: usize,
    /// Per participant: when each relogin that took began, the boundary
    /// between its two connections: every event of the old one arrived
    /// before it (the old one was closed and drained first), every event of
    /// the new one after it. Not when its answer was read: the reader stamps
    /// the missed messages that follow the answer before the relogging task
    /// gets to record anything, so a replayed copy would seem to come first.
    pub relogged: Vec<Vec<Instant>>,
    /// Relogin attempts refused, by answer.
    pub relogin_refusals: HashMap<String, usize>,
    /// Participant events that do not fit the room (a leave of someone
    /// seated, a second join).
    pub inconsistencies: Vec<String>,
}

impl Ledger {
    pub fn new(participants: usize) -> Ledger {
        Ledger {
            received: vec![HashMap::new(); participants],
            arrivals: vec![Vec::new(); participants],
            newest_seen: vec![None; participants],
            seat_lost: vec![None; participants],
            relogged: vec![Vec::new(); participants],
            ..Ledger::default()
        }
    }
}

pub type Shared = Arc<Mutex<Ledger>>;

/// A participant after login.
pub struct Participant {
    pub index: usize,
    pub room: usize,
    pub id: String,
    ticket: String,
    /// Which portal it is on now.
    portal: usize,
    /// Relogins so far.
    relogins: usize,
    client: Client,
    /// The room's participants as this client knows them.
    pub known: BTreeSet<String>,
}

static NEXT_TEXT: AtomicU64 = AtomicU64::new(0);

impl Participant {
    /// Log in with `token` at the portal it names (`portal` is its index).
    pub async fn login(
        index: usize,
        room: usize,
        token: &str,
        portals: &[String],
        portal: usize,
    ) -> Result<Participant, String> {
        let client = tokio::time::timeout(CONNECT, Client::connect(&portals[portal]))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let info = json!({"token": token, "protocol": "1.2",
                          "userAgent": {"sdk": {"type": SDK, "version": "5.1"}}});
        let ack = client
            .call("login", &[info], ACK)
            .await
            .map_err(|e| e.to_string())?;
        if ack[0] != "ok" {
            return Err(format!("login refused: {ack:?}"));
        }
        let known = ack[1]["room"]["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .collect();
        Ok(Participant {
            index,
            room,
            id: ack[1]["id"].as_str().unwrap_or_default().to_string(),
            ticket: ack[1]["reconnectionTicket"]
                .as_str()
                .ok_or("no reconnection ticket")?
                .to_string(),
            portal,
            relogins: 0,
            client,
            known,
        })
    }

    /// Text the room every `every` (with jitter) until `stop`, relogging in
    /// whenever the connection is gone. Returns at `stop`, or when the seat
    /// is lost.
    pub async fn run(
        mut self,
        portals: Arc<Vec<String>>,
        every: Duration,
        ledger: Shared,
        stop: Arc<AtomicBool>,
    ) -> Participant {
        let jitter = |n: u64| Duration::from_millis(n % (every.as_millis() as u64).max(1));
        let mut next = Instant::now() + jitter(self.index as u64 * 7919);
        while !stop.load(Ordering::Relaxed) {
            if self.client.closed() && !self.relogin(&portals, &ledger).await {
                break;
            }
            if !self.drain(&ledger).await {
                break;
            }
            if Instant::now() >= next {
                self.text(&ledger).await;
                next += every;
                if next < Instant::now() {
                    next = Instant::now() + jitter(NEXT_TEXT.load(Ordering::Relaxed));
                }
            }
            let pause = next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            tokio::time::sleep(pause).await;
        }
        self
    }

    async fn text(&self, ledger: &Shared) {
        let id = format!("t{}", NEXT_TEXT.fetch_add(1, Ordering::Relaxed));
        ledger.lock().unwrap().texts.insert(
            id.clone(),
            Sent {
                room: self.room,
                by: self.index,
                at: Instant::now(),
                acked: None,
            },
        );
        let ack = self
            .client
            .call("text", &[json!({"to": "all", "message": id})], ACK)
            .await;
        let ok = matches!(&ack, Ok(a) if a.first() == Some(&json!("ok")));
        if let Some(t) = ledger.lock().unwrap().texts.get_mut(&id) {
            t.acked = Some(ok);
        }
    }

    /// Take in what arrived; false when the seat is lost (`drop`).
    pub async fn drain(&mut self, ledger: &Shared) -> bool {
        let mut events = Vec::new();
        {
            let mut rx = self.client.events.lock().await;
            while let Ok(e) = rx.try_recv() {
                events.push(e);
            }
        }
        let mut l = ledger.lock().unwrap();
        for e in events {
            if !self.take(e, &mut l) {
                return false;
            }
        }
        true
    }

    fn take(&mut self, e: Event, l: &mut Ledger) -> bool {
        match e.name.as_str() {
            "text" => {
                let id = e.data["message"].as_str().unwrap_or_default().to_string();
                match l.texts.get(&id) {
                    Some(sent) if sent.room == self.room => {
                        let at = sent.at;
                        l.arrivals[self.index].push((at, e.at));
                        let newest = &mut l.newest_seen[self.index];
                        if newest.is_none_or(|n| n < at) {
                            *newest = Some(at);
                        }
                        let now = e.at;
                        let r = l.received[self.index].entry(id).or_insert((0, now, now));
                        r.0 += 1;
                        r.2 = now;
                    }
                    _ => l.phantoms.push(format!("{} got {}", self.id, e.data)),
                }
            }
            "participant" => {
                let action = e.data["action"].as_str().unwrap_or_default();
                let who = match action {
                    "join" => e.data["data"]["id"].as_str(),
                    _ => e.data["data"].as_str(),
                }
                .unwrap_or_default()
                .to_string();
                let fits = match action {
                    "join" => self.known.insert(who.clone()),
                    "leave" => self.known.remove(&who),
                    _ => true,
                };
                if !fits {
                    l.inconsistencies
                        .push(format!("{} heard {action} of {who}", self.id));
                }
            }
            "drop" => {
                l.seat_lost[self.index] = Some(format!("drop {}", e.data));
                return false;
            }
            _ => {}
        }
        true
    }

    /// Relogin with the ticket on a portal a load balancer would pick (the
    /// one after its own for half of the clients, its own again for the
    /// others, so both stay in use), then on each in turn, until one takes
    /// it; false when the seat is lost.
    async fn relogin(&mut self, portals: &[String], ledger: &Shared) -> bool {
        // what arrived before the cut counts
        if !self.drain(ledger).await {
            return false;
        }
        let started = Instant::now();
        let first = self.portal + 1 + (self.index + self.relogins) % 2;
        self.relogins += 1;
        let mut attempt = 0;
        let mut last = String::new();
        while started.elapsed() < RELOGIN_LIMIT {
            let portal = (first + attempt) % portals.len();
            attempt += 1;
            let began = Instant::now();
            match self.relogin_at(&portals[portal]).await {
                Ok((client, ticket)) => {
                    self.client = client;
                    self.ticket = ticket;
                    self.portal = portal;
                    let mut l = ledger.lock().unwrap();
                    l.relogins += 1;
                    l.relogged[self.index].push(began);
                    return true;
                }
                Err(e) => {
                    if e.starts_with("refused") {
                        *ledger
                            .lock()
                            .unwrap()
                            .relogin_refusals
                            .entry(e.clone())
                            .or_default() += 1;
                    }
                    last = e;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ledger.lock().unwrap().seat_lost[self.index] =
            Some(format!("no relogin within {RELOGIN_LIMIT:?}: {last}"));
        false
    }

    async fn relogin_at(&self, addr: &str) -> Result<(Client, String), String> {
        let client = tokio::time::timeout(CONNECT, Client::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let ack = client
            .call("relogin", &[json!(self.ticket)], ACK)
            .await
            .map_err(|e| e.to_string())?;
        match (ack.first().and_then(Value::as_str), ack.get(1)) {
            (Some("ok"), Some(Value::String(ticket))) => Ok((client, ticket.clone())),
            _ => Err(format!("refused: {}", Value::Array(ack))),
        }
    }

    /// Log out for good.
    pub async fn logout(self) -> Result<(), String> {
        let ack = self
            .client
            .call("logout", &[], ACK)
            .await
            .map_err(|e| e.to_string())?;
        self.client.disconnect();
        if ack.first() == Some(&json!("ok")) {
            Ok(())
        } else {
            Err(format!("{}: logout answered {ack:?}", self.id))
        }
    }
}
