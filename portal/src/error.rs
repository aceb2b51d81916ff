//! The portal's errors; `Display` is the string clients get in
//! `("error", <string>)` acks, as OWT words them.

use crate::connection::ConnError;
use crate::dialect::DialectError;
use crate::remote::RemoteError;
use conclave_common::token::TokenError;

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
    #[error("Participant has NOT joined")]
    NotJoined,
    /// The portal is stopping (a rolling update): log in on another one.
    #[error("Portal is draining")]
    Draining,
    /// An error another service answered, or a failed call to it.
    #[error(transparent)]
    Remote(#[from] RemoteError),
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
            PortalError::NotJoined => "client_not_exist",
            PortalError::Draining => "draining",
            PortalError::Remote(RemoteError::Timeout { .. }) => "timeout",
            PortalError::Remote(RemoteError::Unreachable { .. }) => "unreachable",
            // OWT's refusals, by the words management and the node answer.
            PortalError::Remote(RemoteError::Refused(m)) => match m.as_str() {
                "Unknown" => "token_unknown",
                "Expired" => "token_expired",
                "Room is full" => "room_full",
                "Invalid role" => "invalid_role",
                _ => "refused",
            },
        }
    }
}
