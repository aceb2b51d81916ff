//! The management service's errors; `Display` is the OWT message clients see,
//! converted to a gRPC status once, here.

use crate::store::StoreError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("Room not found")]
    RoomNotFound,
    #[error("Service not found")]
    ServiceNotFound,
    #[error("Service name exists: {0}")]
    ServiceExists(String),
    #[error("Super service not permitted to be deleted")]
    SuperService,
    #[error("{0}")]
    InvalidRoom(String),
    #[error("Name or role not valid")]
    NameOrRole,
    #[error("Failed to get portal")]
    NoPortal,
    #[error("Unknown")]
    UnknownToken,
    #[error("Expired")]
    Expired,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ManagementError> for Status {
    fn from(e: ManagementError) -> Status {
        let message = e.to_string();
        match e {
            ManagementError::RoomNotFound
            | ManagementError::ServiceNotFound
            | ManagementError::UnknownToken => Status::not_found(message),
            ManagementError::ServiceExists(_) => Status::already_exists(message),
            ManagementError::SuperService => Status::permission_denied(message),
            ManagementError::InvalidRoom(_)
            | ManagementError::NameOrRole
            | ManagementError::InvalidArgument(_) => Status::invalid_argument(message),
            ManagementError::NoPortal => Status::unavailable(message),
            ManagementError::Expired => Status::failed_precondition(message),
            ManagementError::Store(StoreError::Unavailable(_)) => {
                tracing::warn!(error = %message, "store unavailable");
                Status::unavailable(message)
            }
            ManagementError::Store(_) | ManagementError::Internal(_) => {
                tracing::error!(error = %message, "management failure");
                Status::internal(message)
            }
        }
    }
}
