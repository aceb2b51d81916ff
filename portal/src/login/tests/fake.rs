//! A fake of every remote the login core calls, and of the sockets.

use crate::config::Config;
use crate::delivery::Sockets;
use crate::login::Answer;
use crate::login::Json;
use crate::portal::Portal;
use crate::remote::{
    Admission, AgentRef, ClientSpec, Controller, Grant, Joiner, Kept, RemoteError, Remotes,
    Restorable, Seat,
};
use conclave_common::token::JoinToken;
use serde_json::{Value, json};
use socketioxide::socket::Sid;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub const KEY: &str = "login-core-test-key";

pub fn token_signed_with(key: &str, token_id: &str) -> String {
    JoinToken::new(key, token_id, "127.0.0.1:8080", false).encode()
}

/// A token carrying signed claims; `room` as given, the rest as
/// [`FakeRemotes::consume_token`] grants them.
pub fn token_with_claims(key: &str, token_id: &str, room: &str) -> String {
    let claims = conclave_common::token::Claims {
        room: room.into(),
        user: "alice".into(),
        role: "presenter".into(),
        code: token_id.replace("token", "code"),
        ..Default::default()
    };
    JoinToken::new(key, token_id, "127.0.0.1:8080", false)
        .with_claims(key, claims)
        .encode()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Consume,
    Schedule,
    GetNode,
    Join,
    AddTask,
    Restore,
    Text,
}

/// Holds a remote call until the test opens it.
#[derive(Clone, Default)]
pub struct Gate {
    entered: Arc<Notify>,
    open: Arc<Notify>,
}

impl Gate {
    /// The call has reached the remote.
    pub async fn entered(&self) {
        self.entered.notified().await
    }

    pub fn open(&self) {
        self.open.notify_one()
    }
}

/// A seat as a conference node keeps it.
#[derive(Debug, Clone, Default)]
pub struct FakeSeat {
    pub user: String,
    pub role: String,
    pub client: ClientSpec,
    pub detached: bool,
    pub kept: Vec<Kept>,
    pub spent: Vec<String>,
    /// The address of the portal that holds it ("" = the one asking).
    pub holder: String,
}

#[derive(Default)]
pub struct FakeRemotes {
    calls: Mutex<Vec<String>>,
    failures: Mutex<HashMap<Stage, RemoteError>>,
    /// Failures for the next call of a stage only.
    once: Mutex<HashMap<Stage, RemoteError>>,
    gates: Mutex<HashMap<Stage, Gate>>,
    pub seats: Mutex<HashMap<String, FakeSeat>>,
    /// The node `get_node` answers with ("" = node-1).
    pub node: Mutex<String>,
    /// What `restore` was given.
    pub restored: Mutex<Vec<Restorable>>,
    /// The room each node `get_node` answered with serves; a node taken
    /// out of it is gone (`served_room` finds nothing listening).
    pub serving: Mutex<HashMap<String, String>>,
}

impl FakeRemotes {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    pub fn fail(&self, stage: Stage, error: RemoteError) {
        self.failures.lock().unwrap().insert(stage, error);
    }

    /// Calls of `stage` succeed again.
    pub fn heal(&self, stage: Stage) {
        self.failures.lock().unwrap().remove(&stage);
    }

    /// The next call of `stage` fails with `error`; later ones do not.
    pub fn fail_once(&self, stage: Stage, error: RemoteError) {
        self.once.lock().unwrap().insert(stage, error);
    }

    pub fn gate(&self, stage: Stage) -> Gate {
        let gate = Gate::default();
        self.gates.lock().unwrap().insert(stage, gate.clone());
        gate
    }

    async fn call(&self, stage: Stage, call: String) -> Result<(), RemoteError> {
        self.calls.lock().unwrap().push(call);
        let gate = self.gates.lock().unwrap().remove(&stage);
        if let Some(gate) = gate {
            gate.entered.notify_one();
            gate.open.notified().await;
        }
        if let Some(e) = self.once.lock().unwrap().remove(&stage) {
            return Err(e);
        }
        match self.failures.lock().unwrap().get(&stage) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    /// A notification the seat's node kept for `participant`.
    pub fn keep(&self, participant: &str, seq: u64, event: &str, data: Value, missed: bool) {
        let mut seats = self.seats.lock().unwrap();
        let seat = seats.get_mut(participant).expect("a joined participant");
        seat.kept.push(Kept {
            seq,
            event: event.into(),
            data,
            missed,
        });
    }

    pub fn seat(&self, participant: &str) -> Option<FakeSeat> {
        self.seats.lock().unwrap().get(participant).cloned()
    }
}

#[tonic::async_trait]
impl Remotes for FakeRemotes {
    async fn consume_token(&self, token_id: &str) -> Result<Grant, RemoteError> {
        self.call(Stage::Consume, format!("consume {token_id}"))
            .await?;
        Ok(Grant {
            code: token_id.replace("token", "code"),
            user: "alice".into(),
            role: "presenter".into(),
            room: "room-1".into(),
            origin: Default::default(),
        })
    }

    async fn schedule_room(&self, room: &str) -> Result<AgentRef, RemoteError> {
        self.call(Stage::Schedule, format!("schedule {room}"))
            .await?;
        Ok(AgentRef {
            id: "agent-1".into(),
            endpoint: "127.0.0.1:1".into(),
        })
    }

    async fn get_node(&self, agent: &AgentRef, room: &str) -> Result<Controller, RemoteError> {
        self.call(Stage::GetNode, format!("get_node {} {room}", agent.id))
            .await?;
        let node = self.node.lock().unwrap().clone();
        let node = if node.is_empty() {
            "node-1".to_string()
        } else {
            node
        };
        self.serving
            .lock()
            .unwrap()
            .insert(node.clone(), room.to_string());
        Ok(Controller {
            node,
            endpoint: "127.0.0.1:2".into(),
        })
    }

    async fn join(
        &self,
        controller: &Controller,
        room: &str,
        joiner: &Joiner,
    ) -> Result<Admission, RemoteError> {
        let pending = if joiner.pending { " pending" } else { "" };
        let call = format!("join {} {room} {}{pending}", controller.node, joiner.user);
        self.call(Stage::Join, call).await?;
        self.seats.lock().unwrap().insert(
            joiner.participant.clone(),
            FakeSeat {
                user: joiner.user.clone(),
                role: joiner.role.clone(),
                client: joiner.client.clone(),
                ..FakeSeat::default()
            },
        );
        Ok(Admission {
            permission: json!({"publish": {"audio": true, "video": true}, "subscribe": {"audio": true, "video": true}}),
            room: Json::of(
                &json!({"id": room, "views": ["common"], "participants": [], "streams": []}),
            ),
        })
    }

    async fn confirm(&self, controller: &Controller, participant: &str) -> Result<(), RemoteError> {
        self.record(format!("confirm {} {participant}", controller.node));
        Ok(())
    }

    async fn leave(&self, controller: &Controller, participant: &str) -> Result<(), RemoteError> {
        self.record(format!("leave {} {participant}", controller.node));
        self.seats.lock().unwrap().remove(participant);
        Ok(())
    }

    async fn detach(
        &self,
        controller: &Controller,
        participant: &str,
        _window: std::time::Duration,
    ) -> Result<(), RemoteError> {
        self.record(format!("detach {} {participant}", controller.node));
        if let Some(seat) = self.seats.lock().unwrap().get_mut(participant) {
            seat.detached = true;
        }
        Ok(())
    }

    async fn reattach(
        &self,
        controller: &Controller,
        participant: &str,
        ticket_id: &str,
    ) -> Result<Seat, RemoteError> {
        self.record(format!("reattach {} {participant}", controller.node));
        let mut seats = self.seats.lock().unwrap();
        let Some(seat) = seats.get_mut(participant) else {
            return Err(RemoteError::Refused("Client does NOT exist".into()));
        };
        if !seat.client.reconnection {
            return Err(RemoteError::Refused("Reconnection is not allowed".into()));
        }
        if seat.spent.iter().any(|t| t == ticket_id) {
            return Err(RemoteError::Refused("Ticket has been used".into()));
        }
        seat.spent.push(ticket_id.to_string());
        seat.detached = false;
        let previous = std::mem::take(&mut seat.holder);
        Ok(Seat {
            room: "room-1".into(),
            user: seat.user.clone(),
            role: seat.role.clone(),
            permission: json!({"publish": {"audio": true, "video": true}, "subscribe": {"audio": true, "video": true}}),
            client: seat.client.clone(),
            previous_portal: previous.clone(),
            previous_endpoint: previous,
            messages: std::mem::take(&mut seat.kept),
        })
    }

    async fn restore(
        &self,
        controller: &Controller,
        room: &str,
        participants: &[Restorable],
    ) -> Result<Vec<String>, RemoteError> {
        let ids: Vec<String> = participants.iter().map(|p| p.participant.clone()).collect();
        self.call(
            Stage::Restore,
            format!("restore {} {room} {}", controller.node, ids.join(",")),
        )
        .await?;
        self.restored
            .lock()
            .unwrap()
            .extend(participants.iter().cloned());
        Ok(ids)
    }

    async fn served_room(&self, controller: &Controller) -> Result<String, RemoteError> {
        self.record(format!("served_room {}", controller.node));
        self.serving
            .lock()
            .unwrap()
            .get(&controller.node)
            .cloned()
            .ok_or_else(|| RemoteError::Unreachable {
                target: controller.node.clone(),
            })
    }

    async fn release(&self, endpoint: &str, participant: &str) -> Result<(), RemoteError> {
        self.record(format!("release {endpoint} {participant}"));
        Ok(())
    }

    async fn text(&self, c: &Controller, from: &str, to: &str, m: &str) -> Result<(), RemoteError> {
        self.call(Stage::Text, format!("text {} {from} {to} {m}", c.node))
            .await
    }

    async fn add_task(&self, code: &str) -> Result<(), RemoteError> {
        self.call(Stage::AddTask, format!("add_task {code}")).await
    }

    async fn remove_task(&self, code: &str) -> Result<(), RemoteError> {
        self.record(format!("remove_task {code}"));
        Ok(())
    }
}

/// Sockets that record what is sent and closed, in one log with the answers.
#[derive(Default)]
pub struct FakeSockets {
    pub log: Arc<Mutex<Vec<String>>>,
    emits: Mutex<Vec<(Sid, String, Value)>>,
    closed: Mutex<HashSet<Sid>>,
}

impl FakeSockets {
    pub fn emitted(&self, sid: Sid) -> Vec<(String, Value)> {
        let emits = self.emits.lock().unwrap();
        emits
            .iter()
            .filter(|(s, _, _)| *s == sid)
            .map(|(_, e, d)| (e.clone(), d.clone()))
            .collect()
    }

    pub fn closed(&self, sid: Sid) -> bool {
        self.closed.lock().unwrap().contains(&sid)
    }
}

impl Sockets for FakeSockets {
    fn emit(&self, sid: Sid, event: &str, data: &Value) -> bool {
        if self.closed(sid) {
            return false;
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("emit {sid} {event} {data}"));
        let mut emits = self.emits.lock().unwrap();
        emits.push((sid, event.to_string(), data.clone()));
        true
    }

    fn close(&self, sid: Sid) {
        self.log.lock().unwrap().push(format!("close {sid}"));
        self.closed.lock().unwrap().insert(sid);
    }
}

pub struct Harness {
    pub portal: Arc<Portal>,
    pub remotes: Arc<FakeRemotes>,
    pub sockets: Arc<FakeSockets>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_remotes(Arc::new(FakeRemotes::default()))
    }

    /// Another portal of the same deployment: the same remotes (its nodes),
    /// its own clients and sockets.
    pub fn another_portal(&self) -> Harness {
        Harness::with_remotes(self.remotes.clone())
    }

    fn with_remotes(remotes: Arc<FakeRemotes>) -> Harness {
        let sockets = Arc::new(FakeSockets::default());
        let mut config = Config {
            service_key: KEY.into(),
            ..Config::default()
        };
        config.portal.restore_timeout = 1000;
        let portal = Arc::new(Portal::new(
            config,
            KEY.into(),
            remotes.clone(),
            sockets.clone(),
        ));
        Harness {
            portal,
            remotes,
            sockets,
        }
    }

    pub fn token(&self, token_id: &str) -> String {
        token_signed_with(KEY, token_id)
    }

    /// Login info for token-1.
    pub fn info(&self, protocol: &str, sdk: &str) -> Value {
        self.info_with_token(Some(protocol), sdk, "token-1")
    }

    pub fn info_with_token(&self, protocol: Option<&str>, sdk: &str, token_id: &str) -> Value {
        let mut info = json!({"token": self.token(token_id), "userAgent": {"sdk": {"type": sdk, "version": "5.1"}}});
        if let Some(p) = protocol {
            info["protocol"] = json!(p);
        }
        info
    }

    pub fn connect(&self) -> Sid {
        let sid = Sid::new();
        self.portal.connected(sid);
        sid
    }

    pub async fn login(&self, sid: Sid, info: Value) -> Answer {
        self.spawn_login(sid, info).await.unwrap()
    }

    pub fn spawn_login(&self, sid: Sid, info: Value) -> tokio::task::JoinHandle<Answer> {
        let portal = self.portal.clone();
        tokio::spawn(async move {
            let mut answered = None;
            portal.login(sid, info, |a| answered = Some(a)).await;
            answered.expect("every login is answered")
        })
    }

    pub async fn relogin(&self, sid: Sid, ticket: &str) -> Answer {
        let mut answered = None;
        self.portal
            .relogin(sid, Some(json!(ticket)), |a| answered = Some(a))
            .await;
        answered.expect("every relogin is answered")
    }

    pub async fn logout(&self, sid: Sid) -> Answer {
        let mut answered = None;
        self.portal.logout(sid, |a| answered = Some(a)).await;
        answered.expect("every logout is answered")
    }

    pub fn connection_state(&self, sid: Sid) -> Option<&'static str> {
        self.portal
            .delivery()
            .with(|r| r.connection(sid).map(|c| c.state().as_str()))
    }

    pub fn connections(&self) -> usize {
        self.portal.delivery().with(|r| r.connections())
    }
}
