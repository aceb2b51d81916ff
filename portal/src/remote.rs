//! The services a portal calls, as typed clients: management (token
//! consumption), the cluster manager (scheduling, the portal's own tasks), a
//! conference agent (`GetNode`) and a conference node (join, leave, text).
//! Each owns its channels and deadlines and converts proto to domain types
//! here, at the edge; the login core sees only the [`Remotes`] trait, so its
//! tests give it a fake.

use crate::config::PortalConfig;
use crate::login::Json;
use serde_json::Value;
use std::time::Duration;
use tonic::{Code, Status};

/// How a call to another service failed, worded as OWT words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The deadline passed (OWT's RPC timeout).
    #[error("Timeout to make rpc to {target}.{method}")]
    Timeout {
        target: String,
        method: &'static str,
    },
    /// No connection could be made.
    #[error("{target} is not reachable")]
    Unreachable { target: String },
    /// The service answered with an error; OWT's message is passed through.
    #[error("{0}")]
    Refused(String),
}

impl RemoteError {
    /// A failed call to `target.method`.
    pub fn from_status(target: &str, method: &'static str, status: Status) -> RemoteError {
        match status.code() {
            Code::DeadlineExceeded | Code::Cancelled => RemoteError::Timeout {
                target: target.to_string(),
                method,
            },
            // A status with a source is this side's own transport failure
            // (nothing listening, or the connection broken mid-call: a
            // node killed while it answered), never the service's answer;
            // so is an HTTP/2 error.
            Code::Unavailable | Code::Unknown | Code::Internal
                if std::error::Error::source(&status).is_some()
                    || status.message().starts_with("h2 protocol error") =>
            {
                RemoteError::Unreachable {
                    target: target.to_string(),
                }
            }
            _ if status.message().is_empty() => {
                RemoteError::Refused(format!("{target}.{method} failed: {}", status.code()))
            }
            _ => RemoteError::Refused(status.message().to_string()),
        }
    }
}

impl RemoteError {
    /// An agent's refusal of a room another agent serves (the scheduler
    /// named it from a stale state): scheduling again finds the right one.
    pub fn served_elsewhere(&self) -> bool {
        matches!(self, RemoteError::Refused(m) if m.contains(conclave_common::cluster_worker::SERVED_ELSEWHERE))
    }
}

/// What a consumed token grants (management's `ConsumeToken`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// The token code: this portal's cluster task for the login.
    pub code: String,
    pub user: String,
    pub role: String,
    pub room: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub isp: String,
    pub region: String,
}

/// The conference agent the scheduler placed a room on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRef {
    pub id: String,
    pub endpoint: String,
}

/// The conference node serving a room (OWT's controller).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Controller {
    /// The node id, which broadcasts name.
    pub node: String,
    /// The node's gRPC address.
    pub endpoint: String,
}

/// Who joins a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joiner {
    pub participant: String,
    pub user: String,
    pub role: String,
    pub origin: Origin,
    /// A pending join: the node tells nobody until [`Remotes::confirm`].
    pub pending: bool,
    pub client: ClientSpec,
}

/// What the node keeps of a participant's client, so that any portal can
/// take it over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientSpec {
    pub protocol: String,
    pub sdk_type: String,
    pub reconnection: bool,
    pub token_code: String,
    /// Notifications its node keeps for it while it is away.
    pub message_buffer_size: usize,
}

/// A notification a node kept for a participant.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub seq: u64,
    pub event: String,
    pub data: Value,
    /// The client has not seen it.
    pub missed: bool,
}

/// A participant of this portal, put back on its room's new node after the
/// previous one was lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Restorable {
    pub participant: String,
    pub user: String,
    pub role: String,
    pub client: ClientSpec,
    /// `{publish: {audio, video}, subscribe: {audio, video}}`.
    pub permission: Value,
    /// The highest sequence number sent to the client here.
    pub seq: u64,
    /// Its client is away: keep the seat detached this long.
    pub detached: Option<Duration>,
    /// The rebuild of the room this is part of (nonzero): the node skips
    /// a seat the same rebuild already put back (a retry), and takes over
    /// a stale one from before.
    pub rebuild: u64,
}

/// A seat taken over on its node by a relogin.
#[derive(Debug, Clone, PartialEq)]
pub struct Seat {
    pub room: String,
    pub user: String,
    pub role: String,
    pub permission: Value,
    pub client: ClientSpec,
    /// The portal (worker id, address) that held the participant before;
    /// empty when it was this one.
    pub previous_portal: String,
    pub previous_endpoint: String,
    pub messages: Vec<Kept>,
}

/// The conference's answer to a join: permission and room, as the client sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub permission: Value,
    pub room: Json,
}

/// Every call the login, relogin and leave path makes to other services.
#[tonic::async_trait]
pub trait Remotes: Send + Sync {
    /// Management `ConsumeToken`: one use of a token.
    async fn consume_token(&self, token_id: &str) -> Result<Grant, RemoteError>;
    /// Cluster manager `Schedule("conference", room)`: the room's agent.
    async fn schedule_room(&self, room: &str) -> Result<AgentRef, RemoteError>;
    /// Agent `GetNode`: the node serving the room.
    async fn get_node(&self, agent: &AgentRef, room: &str) -> Result<Controller, RemoteError>;
    /// Conference `Join`.
    async fn join(
        &self,
        controller: &Controller,
        room: &str,
        joiner: &Joiner,
    ) -> Result<Admission, RemoteError>;
    /// Conference `Confirm`: the participant's pending join stands (its
    /// token was consumed).
    async fn confirm(&self, controller: &Controller, participant: &str) -> Result<(), RemoteError>;
    /// Conference `Leave`.
    async fn leave(&self, controller: &Controller, participant: &str) -> Result<(), RemoteError>;
    /// Conference `Text`.
    async fn text(
        &self,
        controller: &Controller,
        from: &str,
        to: &str,
        message: &str,
    ) -> Result<(), RemoteError>;
    /// Conference `Detach`: the participant's connection is gone; its node
    /// keeps the seat and its messages for `window`.
    async fn detach(
        &self,
        controller: &Controller,
        participant: &str,
        window: Duration,
    ) -> Result<(), RemoteError>;
    /// Conference `Reattach`: this portal takes the seat over with the
    /// reconnection ticket `ticket_id`.
    async fn reattach(
        &self,
        controller: &Controller,
        participant: &str,
        ticket_id: &str,
    ) -> Result<Seat, RemoteError>;
    /// Conference `Restore`: put this portal's participants of `room` back
    /// on its new node; the ids put back (those already there are not).
    async fn restore(
        &self,
        controller: &Controller,
        room: &str,
        participants: &[Restorable],
    ) -> Result<Vec<String>, RemoteError>;
    /// Conference `GetParticipants`: the room the node at `controller`
    /// serves now ("" when none; `Unreachable` when nothing listens there).
    async fn served_room(&self, controller: &Controller) -> Result<String, RemoteError>;
    /// Portal `Release` on the portal at `endpoint`: let go of the client.
    async fn release(&self, endpoint: &str, participant: &str) -> Result<(), RemoteError>;
    /// Announce a token code as this portal's task (`PickUpTasks`).
    async fn add_task(&self, code: &str) -> Result<(), RemoteError>;
    /// Lay a token code down (`LayDownTask`).
    async fn remove_task(&self, code: &str) -> Result<(), RemoteError>;
}

/// Deadlines of the portal's calls (OWT: 2 s default, 6 s join, 4 s text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Management and cluster manager calls, conference leave.
    pub rpc: Duration,
    /// Agent `GetNode`: it may wait for a node to start.
    pub get_node: Duration,
    pub join: Duration,
    pub text: Duration,
    /// Not a deadline: how long a login's token task waits to be announced
    /// with others (`portal.task_announcement_window`).
    pub task_window: Duration,
    /// Not a deadline either: how long a login's confirmation waits to go
    /// with others (`portal.confirm_window`).
    pub confirm_window: Duration,
}

impl Deadlines {
    pub fn from_config(c: &PortalConfig) -> Deadlines {
        Deadlines {
            rpc: Duration::from_millis(c.rpc_timeout),
            get_node: Duration::from_millis(c.get_node_timeout),
            join: Duration::from_millis(c.join_timeout),
            text: Duration::from_millis(c.text_timeout),
            task_window: Duration::from_millis(c.task_announcement_window),
            confirm_window: Duration::from_millis(c.confirm_window),
        }
    }
}

mod batch;
mod conference;
mod grpc;
pub use conference::ConferenceRemote;
pub use grpc::GrpcRemotes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_owt_wording() {
        let e = RemoteError::from_status("n1", "join", Status::deadline_exceeded("late"));
        assert_eq!(e.to_string(), "Timeout to make rpc to n1.join");
        let e =
            RemoteError::from_status("management", "ConsumeToken", Status::not_found("Unknown"));
        assert_eq!(e, RemoteError::Refused("Unknown".into()));
        let e = RemoteError::from_status("n1", "text", Status::internal(""));
        assert_eq!(e.to_string(), "n1.text failed: Internal error");
        // Unavailable with no transport cause is the service's own answer.
        let e = RemoteError::from_status("n1", "join", Status::unavailable("Room is gone"));
        assert_eq!(e, RemoteError::Refused("Room is gone".into()));
        // a connection broken mid-call (tonic: Unknown, "transport error",
        // with the cause as its source) is the node gone, not an answer
        let broken = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(broken.code(), Code::Unknown);
        let e = RemoteError::from_status("n1", "reattach", broken);
        assert_eq!(
            e,
            RemoteError::Unreachable {
                target: "n1".into()
            }
        );
        let e = RemoteError::from_status(
            "n1",
            "reattach",
            Status::internal("h2 protocol error: stream reset"),
        );
        assert_eq!(
            e,
            RemoteError::Unreachable {
                target: "n1".into()
            }
        );
        let e = RemoteError::from_status("n1", "text", Status::unknown("Client does NOT exist"));
        assert_eq!(e, RemoteError::Refused("Client does NOT exist".into()));
    }

    #[test]
    fn deadlines_come_from_configuration() {
        let d = Deadlines::from_config(&PortalConfig::default());
        assert_eq!(d.rpc, Duration::from_secs(2));
        assert_eq!(d.join, Duration::from_secs(6));
        assert_eq!(d.text, Duration::from_secs(4));
        assert_eq!(d.get_node, Duration::from_secs(6));
    }
}
