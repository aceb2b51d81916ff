//! Where rooms, tokens and services live. [`Store`] is the seam; two
//! stores sit behind it and pass the same suite ([`suite`]):
//! - [`SqliteStore`], the embedded default: one file in the data directory,
//!   so one machine needs no database server;
//! - [`PgStore`], PostgreSQL through a connection pool, for several
//!   management replicas on one shared database (`store.url`).
//!
//! A store that cannot reach its database answers
//! [`StoreError::Unavailable`] within its deadline, never hangs.

mod postgres;
mod sqlite;
pub mod suite;

pub use postgres::PgStore;
pub use sqlite::{DB_FILE, SCHEMA_VERSION, SqliteStore};

use crate::room::Room;
use crate::services::StoredService;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    /// The database cannot be reached, or did not answer in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt record {id}: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
    #[error("store configuration: {0}")]
    Config(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::DatabaseBusy
                    || f.code == rusqlite::ErrorCode::DatabaseLocked =>
            {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Db(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Origin {
    pub isp: String,
    pub region: String,
}

/// A token as stored until a portal consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    /// The portal's cluster task for this login.
    pub code: String,
    pub user: String,
    pub role: String,
    pub room_id: String,
    pub origin: Origin,
    pub host: String,
    pub secure: bool,
    pub created_ms: i64,
}

/// The outcome of consuming a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    Token(Box<TokenRecord>),
    Expired,
    Unknown,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which store this is, for logs ("sqlite", "postgres").
    fn kind(&self) -> &'static str;
    async fn insert_room(&self, room: &Room) -> Result<(), StoreError>;
    async fn room_count(&self) -> Result<u64, StoreError>;
    async fn room(&self, id: &str) -> Result<Option<Room>, StoreError>;
    /// Rooms in creation order, `limit` of them from `offset` (`None` = all);
    /// only those of `service` when given ("" is the default service).
    async fn rooms(
        &self,
        service: Option<&str>,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<Vec<Room>, StoreError>;
    /// Replace a room's configuration; false when it does not exist.
    async fn update_room(&self, room: &Room) -> Result<bool, StoreError>;
    /// Delete a room and its unconsumed tokens; false when it does not exist.
    async fn delete_room(&self, id: &str) -> Result<bool, StoreError>;
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// Atomically remove and return a token, purging every token older than
    /// `lifetime_ms` on the way. Exactly one of concurrent callers gets it,
    /// across every process sharing the database.
    async fn take_token(
        &self,
        id: &str,
        now_ms: i64,
        lifetime_ms: i64,
    ) -> Result<Taken, StoreError>;
    /// Every token not consumed yet, oldest first (moving a store).
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Add a service; false when its name or id is taken.
    async fn insert_service(&self, service: &StoredService) -> Result<bool, StoreError>;
    async fn service(&self, id: &str) -> Result<Option<StoredService>, StoreError>;
    /// Services in creation order.
    async fn services(&self) -> Result<Vec<StoredService>, StoreError>;
    /// Delete a service with its rooms and their tokens; the ids of the
    /// rooms deleted, or `None` when the service does not exist.
    async fn delete_service(&self, id: &str) -> Result<Option<Vec<String>>, StoreError>;
}

/// `[store]`: which database management keeps its state in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// "" (the default): the embedded SQLite file in `data_dir`.
    /// `postgres://user:password@host:port/database`: PostgreSQL, shared by
    /// every management replica that names it.
    pub url: String,
    /// PostgreSQL connections kept per replica. Default 16.
    pub pool_size: usize,
    /// Longest a store call may take, connecting included, before it fails
    /// with `Unavailable` (gRPC) or 503 (REST). Default 2000.
    pub timeout: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: String::new(),
            pool_size: 16,
            timeout: 2000,
        }
    }
}

/// Open the configured store: PostgreSQL when `store.url` is set (the
/// schema migrated first), else SQLite in `data_dir`.
pub async fn open(config: &StoreConfig, data_dir: &str) -> Result<Arc<dyn Store>, StoreError> {
    if config.url.is_empty() {
        let dir = std::path::PathBuf::from(data_dir);
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
            .await
            .map_err(|e| StoreError::Db(e.to_string()))??;
        Ok(Arc::new(store))
    } else {
        Ok(Arc::new(PgStore::connect(config).await?))
    }
}

/// Copy everything from `from` into `to`: services, rooms (with their
/// owners) and the tokens not consumed yet. Records already in `to` are
/// left as they are, so a copy that stopped half way can run again.
pub async fn copy(from: &dyn Store, to: &dyn Store) -> Result<CopyReport, StoreError> {
    let mut report = CopyReport::default();
    let known: std::collections::HashSet<String> =
        to.services().await?.into_iter().map(|s| s.id).collect();
    for service in from.services().await? {
        if known.contains(&service.id) {
            report.skipped += 1;
        } else if to.insert_service(&service).await? {
            report.services += 1;
        } else {
            return Err(StoreError::Db(format!(
                "service {} ({}) clashes with another of the same name",
                service.id, service.name
            )));
        }
    }
    for room in from.rooms(None, 0, None).await? {
        if to.room(&room.id).await?.is_some() {
            report.skipped += 1;
        } else {
            to.insert_room(&room).await?;
            report.rooms += 1;
        }
    }
    let known: std::collections::HashSet<String> =
        to.tokens().await?.into_iter().map(|t| t.id).collect();
    for token in from.tokens().await? {
        if known.contains(&token.id) {
            report.skipped += 1;
        } else {
            to.insert_token(&token).await?;
            report.tokens += 1;
        }
    }
    Ok(report)
}

/// What [`copy`] moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub services: usize,
    pub rooms: usize,
    pub tokens: usize,
    /// Records the destination had already.
    pub skipped: usize,
}

fn parse<T: serde::de::DeserializeOwned>(id: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        id: id.to_string(),
        source,
    })
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}
