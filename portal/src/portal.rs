//! The portal's shared state and operations (OWT `portal.js`): the login
//! path across management, the cluster manager, the agent and the conference
//! node; leaving; delivering notifications to sockets; dropping clients.

use crate::clients::{ClientEntry, Clients, SharedConnection};
use crate::config::Config;
use crate::connection::{Completion, State};
use crate::dialect::{self, Protocol};
use crate::error::PortalError;
use crate::outbox::{Message, Outbox};
use crate::ticket::Tickets;
use conclave_common::cluster_worker::ClusterWorker;
use conclave_common::grpc::Channel;
use conclave_common::sync::Locked;
use conclave_common::token::JoinToken;
use conclave_proto::agent::v1 as agent;
use conclave_proto::agent::v1::node_manager_client::NodeManagerClient;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::conference::v1 as conf;
use conclave_proto::conference::v1::conference_client::ConferenceClient;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long each stage of a login took (those it reached).
#[derive(Debug, Default, Clone)]
pub struct Stages {
    pub token_check: Option<Duration>,
    pub token_consumption: Option<Duration>,
    pub schedule: Option<Duration>,
    pub get_node: Option<Duration>,
    pub join: Option<Duration>,
}

impl Stages {
    fn done(slot: &mut Option<Duration>, stage: &'static str, since: std::time::Instant) {
        let d = since.elapsed();
        conclave_common::metrics::histogram!("portal_login_stage_seconds", "stage" => stage)
            .record(d.as_secs_f64());
        *slot = Some(d);
    }

    /// Milliseconds per stage, for the login outcome log line.
    pub fn ms(d: Option<Duration>) -> f64 {
        d.map(|d| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0)
            .unwrap_or(-1.0)
    }
}

/// What a successful conference join gives the socket layer.
pub struct Joined {
    pub entry: ClientEntry,
    /// The login result in the client's dialect.
    pub result: Value,
}

pub struct Portal {
    pub(crate) config: Config,
    key: String,
    /// host:port of this portal's portal.v1 server, as nodes reach it (set
    /// once the server is bound).
    pub(crate) grpc_endpoint: OnceLock<String>,
    clients: Mutex<Clients>,
    pub(crate) connections: Mutex<HashMap<Sid, SharedConnection>>,
    pub(crate) io: OnceLock<SocketIo>,
    pub(crate) worker: OnceLock<ClusterWorker>,
    management: ManagementClient<Channel>,
    manager: ClusterManagerClient<Channel>,
    channels: Mutex<HashMap<String, Channel>>,
    tickets: Mutex<Tickets>,
}

/// Milliseconds since the epoch (ticket windows).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How a relogin is answered.
pub enum ReloginReply {
    /// Protocol 1.2: `{ticket, messages}`.
    Messages {
        ticket: String,
        messages: Vec<Message>,
    },
    /// 1.0, 1.1, legacy (and 1.2 SDKs set to string replies): the ticket, then
    /// the queued messages as events.
    Ticket { ticket: String, ok: &'static str },
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Portal {
    pub fn new(config: Config, key: String) -> Result<Portal, conclave_common::grpc::GrpcError> {
        let rpc = ms(config.portal.rpc_timeout);
        let management =
            ManagementClient::new(conclave_common::grpc::channel(&config.management, rpc)?);
        let manager = ClusterManagerClient::new(conclave_common::grpc::channel(
            &config.cluster.manager,
            rpc,
        )?);
        let ticket_key = if config.portal.reconnection_key.is_empty() {
            crate::ticket::derive_key(&key)
        } else {
            config.portal.reconnection_key.clone()
        };
        let lifetime = config
            .portal
            .reconnection_ticket_lifetime
            .saturating_mul(1000)
            .min(i64::MAX as u64) as i64;
        Ok(Portal {
            tickets: Mutex::new(Tickets::new(ticket_key, lifetime)),
            config,
            key,
            grpc_endpoint: OnceLock::new(),
            clients: Mutex::new(Clients::default()),
            connections: Mutex::new(HashMap::new()),
            io: OnceLock::new(),
            worker: OnceLock::new(),
            management,
            manager,
            channels: Mutex::new(HashMap::new()),
        })
    }

    pub fn clients(&self) -> MutexGuard<'_, Clients> {
        self.clients.locked()
    }

    pub fn grpc_endpoint(&self) -> &str {
        self.grpc_endpoint
            .get()
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn worker_id(&self) -> &str {
        self.worker.get().map(|w| w.id()).unwrap_or_default()
    }

    /// A cached lazy channel to an agent or node.
    fn channel(&self, endpoint: &str, deadline: Duration) -> Result<Channel, PortalError> {
        let mut channels = self.channels.locked();
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let c = conclave_common::grpc::channel(endpoint, deadline)
            .map_err(|e| PortalError::Remote(format!("invalid endpoint {endpoint}: {e}")))?;
        channels.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }

    /// Forget the channel of a node that is gone.
    pub fn forget_endpoint(&self, endpoint: &str) {
        self.channels.locked().remove(endpoint);
    }

    fn conference(&self, endpoint: &str) -> Result<ConferenceClient<Channel>, PortalError> {
        Ok(ConferenceClient::new(
            self.channel(endpoint, ms(self.config.portal.join_timeout))?,
        ))
    }

    /// The login path (ARCHITECTURE steps 2–5): dialect and user agent,
    /// token signature, one-time consumption, getController, conference join.
    pub async fn join(
        &self,
        participant: &str,
        socket: Sid,
        connection: SharedConnection,
        login_info: &Value,
        stages: &mut Stages,
    ) -> Result<Joined, PortalError> {
        let started = std::time::Instant::now();
        if !login_info.is_object() {
            return Err(PortalError::BadLogin("not an object"));
        }
        let protocol = dialect::protocol(login_info)?;
        let user_agent = dialect::user_agent(login_info, protocol)?;
        let token_text = login_info
            .get("token")
            .and_then(Value::as_str)
            .ok_or(PortalError::BadLogin("no token string"))?;
        let token = JoinToken::decode(token_text)?;
        if self.clients().contains(participant) {
            return Err(PortalError::AlreadyInRoom);
        }
        token.verify(&self.key)?;
        Stages::done(&mut stages.token_check, "token_check", started);

        let started = std::time::Instant::now();
        let mut management = self.management.clone();
        let grant = management
            .consume_token(mgmt::ConsumeTokenRequest {
                token_id: token.token_id.clone(),
            })
            .await
            .map_err(|s| PortalError::remote("management", "ConsumeToken", s))?
            .into_inner();
        Stages::done(&mut stages.token_consumption, "token_consumption", started);
        let room = grant.room_id.clone();
        conclave_common::trace::record(&[("room", &room)]);
        let (controller, endpoint) = self.get_controller(&room, stages).await?;
        let started = std::time::Instant::now();

        let origin = grant.origin.clone().unwrap_or_default();
        let mut conference = self.conference(&endpoint)?;
        let reply = conference
            .join(conclave_common::grpc::request(
                conf::JoinRequest {
                    room_id: room.clone(),
                    participant: Some(conf::ParticipantSpec {
                        id: participant.to_string(),
                        user: grant.user.clone(),
                        role: grant.role.clone(),
                        portal: self.worker_id().to_string(),
                        origin: Some(conf::Origin {
                            isp: origin.isp,
                            region: origin.region,
                        }),
                        portal_endpoint: self.grpc_endpoint().to_string(),
                    }),
                },
                ms(self.config.portal.join_timeout),
            ))
            .await
            .map_err(|s| PortalError::remote(&controller, "join", s))?
            .into_inner();
        Stages::done(&mut stages.join, "join", started);
        let room_info: Value = serde_json::from_str(&reply.room).map_err(|_| {
            PortalError::Remote("the conference answered an unreadable room".into())
        })?;
        let permission = reply
            .permission
            .map(|p| {
                let media = |m: Option<conf::MediaPermission>| {
                    let m = m.unwrap_or_default();
                    json!({"audio": m.audio, "video": m.video})
                };
                json!({"publish": media(p.publish), "subscribe": media(p.subscribe)})
            })
            .unwrap_or_else(|| json!({}));
        let result = dialect::login_result(
            protocol,
            participant,
            &grant.user,
            &grant.role,
            permission,
            room_info,
        );
        Ok(Joined {
            entry: ClientEntry {
                participant: participant.to_string(),
                socket,
                connection,
                room,
                controller,
                endpoint,
                token_code: grant.code,
                user: grant.user,
                role: grant.role,
                protocol,
                reconnection: user_agent.reconnection_enabled(),
                sdk_type: user_agent.sdk_type,
                outbox: Arc::new(Mutex::new(Outbox::new(
                    self.message_keep(),
                    self.config.portal.message_buffer_size,
                ))),
            },
            result,
        })
    }

    /// OWT `getController`: the room's agent from the scheduler, then the
    /// node serving the room from that agent.
    async fn get_controller(
        &self,
        room: &str,
        stages: &mut Stages,
    ) -> Result<(String, String), PortalError> {
        let started = std::time::Instant::now();
        let mut manager = self.manager.clone();
        let scheduled = manager
            .schedule(cluster::ScheduleRequest {
                purpose: "conference".into(),
                task: room.to_string(),
                preference: None,
                reserve_time_ms: 30_000,
            })
            .await
            .map_err(|s| PortalError::remote("cluster manager", "schedule", s))?
            .into_inner();
        Stages::done(&mut stages.schedule, "schedule", started);
        let started = std::time::Instant::now();
        let agent_endpoint = scheduled.info.map(|i| i.grpc_endpoint).unwrap_or_default();
        if agent_endpoint.is_empty() {
            return Err(PortalError::Remote(format!(
                "agent {} has no endpoint",
                scheduled.id
            )));
        }
        let deadline = ms(self.config.portal.get_node_timeout);
        let mut agent = NodeManagerClient::new(self.channel(&agent_endpoint, deadline)?);
        let node = agent
            .get_node(conclave_common::grpc::request(
                agent::GetNodeRequest {
                    room: room.to_string(),
                    task: room.to_string(),
                },
                deadline,
            ))
            .await
            .map_err(|s| PortalError::remote(&scheduled.id, "getNode", s))?
            .into_inner();
        Stages::done(&mut stages.get_node, "get_node", started);
        Ok((node.node_id, node.endpoint))
    }

    /// Record a logged-in participant and announce its token code as a task.
    pub async fn register(&self, entry: ClientEntry) {
        let code = entry.token_code.clone();
        let count = {
            let mut clients = self.clients();
            clients.insert(entry);
            clients.len()
        };
        conclave_common::metrics::gauge!("portal_participants").set(count as f64);
        if let Some(worker) = self.worker.get()
            && let Err(e) = worker.add_task(&code).await
        {
            tracing::warn!(task = %code, error = %e, "announcing the token task failed");
        }
    }

    /// Tell the participant's conference node it left (failures are logged).
    pub async fn leave_conference(&self, participant: &str, endpoint: &str) {
        let Ok(mut conference) = self.conference(endpoint) else {
            return;
        };
        let req = conclave_common::grpc::request(
            conf::LeaveRequest {
                participant_id: participant.to_string(),
            },
            ms(self.config.portal.rpc_timeout),
        );
        if let Err(status) = conference.leave(req).await {
            tracing::debug!(%participant, error = %status.message(), "conference leave failed");
        }
    }

    /// A participant leaves: forget it, leave the conference, lay the token
    /// task down. Idempotent: the second caller finds nothing.
    pub async fn leave(&self, participant: &str) -> bool {
        let (entry, count) = {
            let mut clients = self.clients();
            (clients.remove(participant), clients.len())
        };
        let Some(entry) = entry else {
            return false;
        };
        conclave_common::metrics::gauge!("portal_participants").set(count as f64);
        tracing::info!(%participant, room = %entry.room, "participant leaves");
        self.leave_conference(participant, &entry.endpoint).await;
        if let Some(worker) = self.worker.get()
            && let Err(e) = worker.remove_task(&entry.token_code).await
        {
            tracing::warn!(task = %entry.token_code, error = %e, "laying down the token task failed");
        }
        true
    }

    /// `text` from a logged-in participant (4 s deadline).
    pub async fn text(
        &self,
        participant: &str,
        to: &str,
        message: &str,
    ) -> Result<(), PortalError> {
        let endpoint = self
            .clients()
            .get(participant)
            .map(|c| (c.endpoint.clone(), c.controller.clone()));
        let Some((endpoint, controller)) = endpoint else {
            return Err(PortalError::Remote("Participant has NOT joined".into()));
        };
        let mut conference = self.conference(&endpoint)?;
        conference
            .text(conclave_common::grpc::request(
                conf::TextRequest {
                    from: participant.to_string(),
                    to: to.to_string(),
                    message: message.to_string(),
                },
                ms(self.config.portal.text_timeout),
            ))
            .await
            .map_err(|s| PortalError::remote(&controller, "text", s))?;
        Ok(())
    }

    /// How long sent messages are kept for replay: ping interval + ping
    /// timeout + 1 s, the longest a dead socket can go unnoticed.
    fn message_keep(&self) -> Duration {
        Duration::from_secs(self.config.portal.ping_interval + self.config.portal.ping_timeout + 1)
    }

    /// Send a notification to a participant in its dialect: numbered and
    /// buffered, emitted when connected, queued while away.
    pub fn notify(&self, participant: &str, event: &str, data: Value) -> bool {
        let entry = self.clients().get(participant).cloned();
        match entry {
            Some(entry) => {
                self.deliver(&entry, event, data);
                true
            }
            None => false,
        }
    }

    fn deliver(&self, entry: &ClientEntry, event: &str, data: Value) {
        let (event, data) = dialect::translate(entry.protocol, event, data);
        let mut outbox = entry.outbox.locked();
        let connected = entry.connection.locked().state() == State::Connected;
        let message = outbox.record(&event, data, connected, tokio::time::Instant::now());
        if !connected {
            conclave_common::metrics::counter!("portal_messages_queued_total").increment(1);
        }
        if connected && !self.emit(entry.socket, &message.event, &message.data) {
            outbox.requeue(message);
        }
    }

    fn emit(&self, sid: Sid, event: &str, data: &Value) -> bool {
        let Some(socket) = self.io.get().and_then(|io| io.get_socket(sid)) else {
            return false;
        };
        match socket.emit(event, data) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(socket = %sid, error = %e, "emit failed");
                false
            }
        }
    }

    /// OWT `broadcast`: every participant here on `controller`, except
    /// `exclude`, each in its own dialect.
    pub fn broadcast(
        &self,
        controller: &str,
        exclude: &[String],
        event: &str,
        data: &Value,
    ) -> usize {
        let targets: Vec<ClientEntry> = self
            .clients()
            .all()
            .filter(|c| c.controller == controller && !exclude.contains(&c.participant))
            .cloned()
            .collect();
        for entry in &targets {
            self.deliver(entry, event, data.clone());
        }
        targets.len()
    }

    /// A fresh reconnection ticket for a participant.
    pub fn issue_ticket(&self, participant: &str) -> String {
        self.tickets.locked().issue(participant, now_ms())
    }

    /// OWT `relogin` (§10.4): check the ticket, move the participant with its
    /// sequence, buffer and queue to the new connection, close the old socket
    /// without leaving, and answer. `answer` sends the ack; queued messages
    /// for ticket-string replies follow it in order.
    pub fn relogin(
        &self,
        ticket_text: &str,
        socket: Sid,
        connection: SharedConnection,
        epoch: u64,
        answer: impl FnOnce(&ReloginReply),
    ) -> Result<String, PortalError> {
        let now = now_ms();
        let ticket = self.tickets.locked().check(ticket_text, now)?;
        let participant = ticket.participant_id.clone();
        let entry = self
            .clients()
            .get(&participant)
            .cloned()
            .ok_or(PortalError::ClientNotExist)?;
        if !entry.reconnection {
            return Err(PortalError::ReconnectionNotAllowed);
        }
        let old = entry.connection.clone();
        if old.locked().participant() != Some(participant.as_str()) {
            return Err(PortalError::ParticipantNotMatched);
        }
        // Everything sent to the client from here on waits for the ack.
        let mut outbox = entry.outbox.locked();
        if connection.locked().login_done(epoch, &participant) != Completion::Registered {
            return Err(PortalError::EarlyLeft);
        }
        self.tickets.locked().spend(&ticket, now);
        {
            let mut clients = self.clients();
            let Some(e) = clients.get_mut(&participant) else {
                return Err(PortalError::ClientNotExist);
            };
            e.socket = socket;
            e.connection = connection;
        }
        old.locked().close();
        if entry.socket != socket
            && let Some(s) = self.io.get().and_then(|io| io.get_socket(entry.socket))
        {
            let _ = s.disconnect();
        }
        let ticket = self.issue_ticket(&participant);
        let string_reply = self
            .config
            .portal
            .relogin_string_reply_sdks
            .contains(&entry.sdk_type);
        if entry.protocol == Protocol::V1_2 && !string_reply {
            let messages = outbox.replay(tokio::time::Instant::now());
            answer(&ReloginReply::Messages { ticket, messages });
        } else {
            answer(&ReloginReply::Ticket {
                ticket,
                ok: entry.protocol.ok_word(),
            });
            for m in outbox.take_pending() {
                if !self.emit(socket, &m.event, &m.data) {
                    outbox.requeue(m);
                }
            }
        }
        tracing::info!(%participant, "relogin ok");
        Ok(participant)
    }

    /// Forced leave after the reconnection grace period: only while
    /// `connection` still owns the participant, so a relogin that won the
    /// race is never undone.
    pub async fn leave_if_owned(&self, participant: &str, connection: &SharedConnection) -> bool {
        let owned = self
            .clients()
            .get(participant)
            .is_some_and(|e| e.owned_by(connection));
        owned && self.leave(participant).await
    }

    /// Drop a participant: it gets `drop`, its socket closes, it leaves.
    pub async fn drop_participant(&self, participant: &str) -> bool {
        let entry = self.clients().get(participant).cloned();
        let Some(entry) = entry else {
            return false;
        };
        entry.connection.locked().close();
        self.emit(entry.socket, "drop", &Value::Null);
        if let Some(socket) = self.io.get().and_then(|io| io.get_socket(entry.socket)) {
            let _ = socket.disconnect();
        }
        tracing::warn!(%participant, "participant dropped");
        conclave_common::metrics::counter!("portal_drops_total").increment(1);
        self.leave(participant).await
    }

    /// Drop every participant (cluster loss, shutdown, `Drop{"all"}`).
    pub async fn drop_all(&self) -> usize {
        let all: Vec<String> = self
            .clients()
            .all()
            .map(|c| c.participant.clone())
            .collect();
        let mut n = 0;
        for p in all {
            if self.drop_participant(&p).await {
                n += 1;
            }
        }
        n
    }
}
