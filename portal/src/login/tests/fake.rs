//! A fake of every remote the login core calls, and of the sockets.

use crate::config::Config;
use crate::delivery::Sockets;
use crate::login::Answer;
use crate::portal::Portal;
use crate::remote::{Admission, AgentRef, Controller, Grant, Joiner, RemoteError, Remotes};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Consume,
    Schedule,
    GetNode,
    Join,
    AddTask,
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

#[derive(Default)]
pub struct FakeRemotes {
    calls: Mutex<Vec<String>>,
    failures: Mutex<HashMap<Stage, RemoteError>>,
    gates: Mutex<HashMap<Stage, Gate>>,
}

impl FakeRemotes {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    pub fn fail(&self, stage: Stage, error: RemoteError) {
        self.failures.lock().unwrap().insert(stage, error);
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
        match self.failures.lock().unwrap().get(&stage) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
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
        Ok(Controller {
            node: "node-1".into(),
            endpoint: "127.0.0.1:2".into(),
        })
    }

    async fn join(
        &self,
        controller: &Controller,
        room: &str,
        joiner: &Joiner,
    ) -> Result<Admission, RemoteError> {
        let call = format!("join {} {room} {}", controller.node, joiner.user);
        self.call(Stage::Join, call).await?;
        Ok(Admission {
            permission: json!({"publish": {"audio": true, "video": true}, "subscribe": {"audio": true, "video": true}}),
            room: json!({"id": room, "views": ["common"], "participants": [], "streams": []}),
        })
    }

    async fn leave(&self, controller: &Controller, participant: &str) -> Result<(), RemoteError> {
        self.record(format!("leave {} {participant}", controller.node));
        Ok(())
    }

    async fn text(&self, c: &Controller, from: &str, to: &str, m: &str) -> Result<(), RemoteError> {
        self.record(format!("text {} {from} {to} {m}", c.node));
        Ok(())
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
        let remotes = Arc::new(FakeRemotes::default());
        let sockets = Arc::new(FakeSockets::default());
        let config = Config {
            service_key: KEY.into(),
            ..Config::default()
        };
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
