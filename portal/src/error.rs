//! The portal's errors; `Display` is the string clients get in
//! `("error", <string>)` acks, as OWT words them.

use crate::connection::ConnError;
use crate::dialect::DialectError;
use conclave_common::token::TokenError;
use tonic::{Code, Status};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortalError {
    #[error(transparent)]
    Connection(#[from] ConnError),
    #[error(transparent)]
    Dialect(#[from] DialectError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Ticket(#[from] crate::ticket::TicketError),
    #[error("Client does NOT exist")]
    ClientNotExist,
    #[error("Reconnection is not allowed")]
    ReconnectionNotAllowed,
    #[error("Participant ID is not matched")]
    ParticipantNotMatched,
    #[error("Reconnection is not enabled.")]
    ReconnectionNotEnabled,
    #[error("Invalid login request: {0}")]
    BadLogin(&'static str),
    #[error("Participant already in room")]
    AlreadyInRoom,
    #[error("Participant early left")]
    EarlyLeft,
    #[error("Invalid receiver")]
    InvalidReceiver,
    #[error("Invalid message")]
    InvalidMessage,
    #[error("{0} is not supported: this portal has no media plane")]
    Unsupported(String),
    /// An error another service answered, or a failed call to it.
    #[error("{0}")]
    Remote(String),
}

impl PortalError {
    /// A bounded label for metrics: the kind of failure, not its text.
    pub fn class(&self) -> &'static str {
        match self {
            PortalError::Connection(_) => "connection_state",
            PortalError::Dialect(DialectError::UnknownProtocol) => "unknown_protocol",
            PortalError::Dialect(DialectError::Deprecated) => "deprecated_client",
            PortalError::Dialect(DialectError::BadUserAgent) => "bad_user_agent",
            PortalError::Token(TokenError::BadSignature) => "invalid_token_signature",
            PortalError::Token(_) | PortalError::BadLogin(_) => "bad_request",
            PortalError::Ticket(crate::ticket::TicketError::Expired) => "ticket_expired",
            PortalError::Ticket(crate::ticket::TicketError::BadSignature) => {
                "invalid_ticket_signature"
            }
            PortalError::Ticket(crate::ticket::TicketError::Used) => "ticket_used",
            PortalError::Ticket(_) => "bad_request",
            PortalError::ClientNotExist => "client_not_exist",
            PortalError::ReconnectionNotAllowed
            | PortalError::ParticipantNotMatched
            | PortalError::ReconnectionNotEnabled => "reconnection_refused",
            PortalError::AlreadyInRoom => "already_in_room",
            PortalError::EarlyLeft => "early_left",
            PortalError::InvalidReceiver | PortalError::InvalidMessage => "bad_request",
            PortalError::Unsupported(_) => "unsupported",
            PortalError::Remote(m) => match m.as_str() {
                "Unknown" => "token_unknown",
                "Expired" => "token_expired",
                "Room is full" => "room_full",
                "Invalid role" => "invalid_role",
                m if m.starts_with("Timeout to make rpc") => "timeout",
                m if m.ends_with("is not reachable") => "unreachable",
                _ => "refused",
            },
        }
    }

    /// A failed call to `target.method`, worded as OWT words RPC failures.
    pub fn remote(target: &str, method: &str, status: Status) -> PortalError {
        match status.code() {
            Code::DeadlineExceeded | Code::Cancelled => {
                PortalError::Remote(format!("Timeout to make rpc to {target}.{method}"))
            }
            Code::Unavailable if std::error::Error::source(&status).is_some() => {
                PortalError::Remote(format!("{target} is not reachable"))
            }
            _ if status.message().is_empty() => {
                PortalError::Remote(format!("{target}.{method} failed: {}", status.code()))
            }
            _ => PortalError::Remote(status.message().to_string()),
        }
    }
}
