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
