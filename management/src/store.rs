//! Where rooms and tokens live. [`Store`] is the small seam a server database
//! can be added behind later; [`SqliteStore`] is the embedded default, one
//! file in the data directory, so the stack needs no database server.
//!
//! Methods are blocking; the service calls them on the blocking pool.

use crate::room::Room;
use crate::services::StoredService;
use conclave_common::sync::Locked;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
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

pub trait Store: Send + Sync + 'static {
    fn insert_room(&self, room: &Room) -> Result<(), StoreError>;
    fn room_count(&self) -> Result<u64, StoreError>;
    fn room(&self, id: &str) -> Result<Option<Room>, StoreError>;
    /// Rooms in creation order, `limit` of them from `offset` (`None` = all);
    /// only those of `service` when given ("" is the default service).
    fn rooms(
        &self,
        service: Option<&str>,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<Vec<Room>, StoreError>;
    /// Replace a room's configuration; false when it does not exist.
    fn update_room(&self, room: &Room) -> Result<bool, StoreError>;
    /// Delete a room and its unconsumed tokens; false when it does not exist.
    fn delete_room(&self, id: &str) -> Result<bool, StoreError>;
    fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// Atomically remove and return a token, purging every token older than
    /// `lifetime_ms` on the way. Exactly one of concurrent callers gets it.
    fn take_token(&self, id: &str, now_ms: i64, lifetime_ms: i64) -> Result<Taken, StoreError>;
    /// Add a service; false when its name is taken.
    fn insert_service(&self, service: &StoredService) -> Result<bool, StoreError>;
    fn service(&self, id: &str) -> Result<Option<StoredService>, StoreError>;
    /// Services in creation order.
    fn services(&self) -> Result<Vec<StoredService>, StoreError>;
    /// Delete a service with its rooms and their tokens; the ids of the
    /// rooms deleted, or `None` when the service does not exist.
    fn delete_service(&self, id: &str) -> Result<Option<Vec<String>>, StoreError>;
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// The database file inside the data directory.
pub const DB_FILE: &str = "management.sqlite3";

impl SqliteStore {
    /// Open (creating on first start) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let conn = Connection::open(data_dir.join(DB_FILE))?;
        Self::init(conn)
    }

    /// A store that lives in memory only (unit tests).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.locked()
    }
}

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// Bring the schema to [`SCHEMA_VERSION`], one step at a time, each in a
/// transaction: 1 rooms and tokens; 2 services, and rooms owned by one.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS rooms (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 config TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS tokens (
                 id TEXT PRIMARY KEY,
                 room_id TEXT NOT NULL,
                 created_ms INTEGER NOT NULL,
                 data TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS tokens_created ON tokens (created_ms);
             CREATE INDEX IF NOT EXISTS tokens_room ON tokens (room_id);
             PRAGMA user_version = 1;",
        )?;
        tx.commit()?;
    }
    if version < 2 {
        let tx = conn.transaction()?;
        tx.execute_batch(
            "ALTER TABLE rooms ADD COLUMN service TEXT NOT NULL DEFAULT '';
             CREATE INDEX rooms_service ON rooms (service, seq);
             CREATE TABLE services (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 name TEXT NOT NULL UNIQUE,
                 sealed_key TEXT NOT NULL
             );
             PRAGMA user_version = 2;",
        )?;
        tx.commit()?;
        tracing::info!("management store migrated to schema version 2 (services)");
    }
    Ok(())
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

impl Store for SqliteStore {
    fn insert_room(&self, room: &Room) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO rooms (id, config, service) VALUES (?1, ?2, ?3)",
            params![room.id, json(room), room.service],
        )?;
        Ok(())
    }

    fn room_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM rooms", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn room(&self, id: &str) -> Result<Option<Room>, StoreError> {
        let text: Option<String> = self
            .conn()
            .query_row("SELECT config FROM rooms WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        text.map(|t| parse(id, &t)).transpose()
    }

    fn rooms(
        &self,
        service: Option<&str>,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<Vec<Room>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, config FROM rooms WHERE ?3 IS NULL OR service = ?3
             ORDER BY seq LIMIT ?1 OFFSET ?2",
        )?;
        let limit = limit.map(|l| l.min(i64::MAX as u64) as i64).unwrap_or(-1);
        let rows = stmt.query_map(
            params![limit, offset.min(i64::MAX as u64) as i64, service],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        let mut rooms = Vec::new();
        for row in rows {
            let (id, config) = row?;
            rooms.push(parse(&id, &config)?);
        }
        Ok(rooms)
    }

    fn update_room(&self, room: &Room) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE rooms SET config = ?2 WHERE id = ?1",
            params![room.id, json(room)],
        )?;
        Ok(n == 1)
    }

    fn delete_room(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM rooms WHERE id = ?1", [id])?;
        tx.execute("DELETE FROM tokens WHERE room_id = ?1", [id])?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO tokens (id, room_id, created_ms, data) VALUES (?1, ?2, ?3, ?4)",
            params![token.id, token.room_id, token.created_ms, json(token)],
        )?;
        Ok(())
    }

    fn take_token(&self, id: &str, now_ms: i64, lifetime_ms: i64) -> Result<Taken, StoreError> {
        let oldest_valid = now_ms.saturating_sub(lifetime_ms);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row: Option<(i64, String)> = tx
            .query_row(
                "DELETE FROM tokens WHERE id = ?1 RETURNING created_ms, data",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let purged = tx.execute("DELETE FROM tokens WHERE created_ms < ?1", [oldest_valid])?;
        tx.commit()?;
        if purged > 0 {
            tracing::debug!(purged, "expired tokens purged");
        }
        Ok(match row {
            None => Taken::Unknown,
            Some((created, _)) if created < oldest_valid => Taken::Expired,
            Some((_, data)) => Taken::Token(Box::new(parse(id, &data)?)),
        })
    }

    fn insert_service(&self, service: &StoredService) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "INSERT INTO services (id, name, sealed_key) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![service.id, service.name, service.sealed_key],
        )?;
        Ok(n == 1)
    }

    fn service(&self, id: &str) -> Result<Option<StoredService>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, sealed_key FROM services WHERE id = ?1",
                [id],
                stored_service,
            )
            .optional()?)
    }

    fn services(&self) -> Result<Vec<StoredService>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, name, sealed_key FROM services ORDER BY seq")?;
        let rows = stmt.query_map([], stored_service)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_service(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx.execute("DELETE FROM services WHERE id = ?1", [id])? == 0 {
            return Ok(None);
        }
        let rooms: Vec<String> = {
            let mut stmt = tx.prepare("DELETE FROM rooms WHERE service = ?1 RETURNING id")?;
            stmt.query_map([id], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for room in &rooms {
            tx.execute("DELETE FROM tokens WHERE room_id = ?1", [room])?;
        }
        tx.commit()?;
        Ok(Some(rooms))
    }
}

fn stored_service(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredService> {
    Ok(StoredService {
        id: r.get(0)?,
        name: r.get(1)?,
        sealed_key: r.get(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::new_id;

    fn room(name: &str) -> Room {
        Room::with_defaults(name.into())
    }

    fn token(id: &str, room: &str, created_ms: i64) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            code: "123".into(),
            user: "alice".into(),
            role: "presenter".into(),
            room_id: room.into(),
            origin: Origin {
                isp: "isp".into(),
                region: "region".into(),
            },
            host: "localhost:8080".into(),
            secure: false,
            created_ms,
        }
    }

    const LIFE: i64 = 180_000;

    #[test]
    fn rooms_crud_in_creation_order() {
        let s = SqliteStore::in_memory().unwrap();
        let a = room("a");
        let mut b = room("b");
        s.insert_room(&a).unwrap();
        s.insert_room(&b).unwrap();
        assert_eq!(s.room(&a.id).unwrap().unwrap(), a);
        assert_eq!(s.room("nope").unwrap(), None);
        assert_eq!(s.rooms(None, 0, None).unwrap(), [a.clone(), b.clone()]);
        assert_eq!(s.rooms(None, 1, Some(1)).unwrap(), [b.clone()]);
        b.name = "bee".into();
        assert!(s.update_room(&b).unwrap());
        assert_eq!(s.room(&b.id).unwrap().unwrap().name, "bee");
        assert!(s.delete_room(&a.id).unwrap());
        assert!(!s.delete_room(&a.id).unwrap());
        assert!(!s.update_room(&a).unwrap());
        assert_eq!(s.rooms(None, 0, None).unwrap(), [b]);
    }

    fn service(id: &str, name: &str) -> StoredService {
        StoredService {
            id: id.into(),
            name: name.into(),
            sealed_key: format!("sealed-{id}"),
        }
    }

    #[test]
    fn services_own_rooms_and_take_them_along() {
        let s = SqliteStore::in_memory().unwrap();
        assert!(s.insert_service(&service("s1", "one")).unwrap());
        assert!(s.insert_service(&service("s2", "two")).unwrap());
        assert!(
            !s.insert_service(&service("s3", "one")).unwrap(),
            "names are unique"
        );
        assert!(
            !s.insert_service(&service("s1", "uno")).unwrap(),
            "ids are unique"
        );
        assert_eq!(s.service("s1").unwrap(), Some(service("s1", "one")));
        assert_eq!(s.service("nope").unwrap(), None);
        assert_eq!(
            s.services().unwrap(),
            [service("s1", "one"), service("s2", "two")]
        );
        let mut mine = room("mine");
        mine.service = "s1".into();
        let mut theirs = room("theirs");
        theirs.service = "s2".into();
        let default = room("default");
        for r in [&mine, &theirs, &default] {
            s.insert_room(r).unwrap();
        }
        s.insert_token(&token("t", &mine.id, 0)).unwrap();
        assert_eq!(s.rooms(Some("s1"), 0, None).unwrap(), [mine.clone()]);
        assert_eq!(
            s.rooms(Some(""), 0, None).unwrap(),
            std::slice::from_ref(&default)
        );
        assert_eq!(s.rooms(None, 0, None).unwrap().len(), 3);
        assert_eq!(s.delete_service("s1").unwrap(), Some(vec![mine.id.clone()]));
        assert_eq!(s.delete_service("s1").unwrap(), None);
        assert_eq!(s.room(&mine.id).unwrap(), None);
        assert_eq!(s.take_token("t", 1, LIFE).unwrap(), Taken::Unknown);
        assert_eq!(s.rooms(None, 0, None).unwrap(), [theirs, default]);
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_rooms() {
        let dir = std::env::temp_dir().join(format!("conclave-store-v1-{}", new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = room("old");
        {
            // the schema as the first release wrote it, without a version
            let conn = Connection::open(dir.join(DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE rooms (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, config TEXT NOT NULL);
                 CREATE TABLE tokens (id TEXT PRIMARY KEY, room_id TEXT NOT NULL, created_ms INTEGER NOT NULL, data TEXT NOT NULL);",
            )
            .unwrap();
            let mut config: serde_json::Value = serde_json::to_value(&old).unwrap();
            config.as_object_mut().unwrap().remove("service");
            conn.execute(
                "INSERT INTO rooms (id, config) VALUES (?1, ?2)",
                params![old.id, config.to_string()],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&dir).unwrap();
        assert_eq!(s.rooms(Some(""), 0, None).unwrap(), [old]);
        let version: i64 = s
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(s);
        // opening again is a no-op
        SqliteStore::open(&dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_token_is_taken_once() {
        let s = SqliteStore::in_memory().unwrap();
        s.insert_token(&token("t1", "r", 1000)).unwrap();
        assert_eq!(
            s.take_token("t1", 2000, LIFE).unwrap(),
            Taken::Token(Box::new(token("t1", "r", 1000)))
        );
        assert_eq!(s.take_token("t1", 2000, LIFE).unwrap(), Taken::Unknown);
        assert_eq!(
            s.take_token("garbage'; DROP TABLE tokens;--", 2000, LIFE)
                .unwrap(),
            Taken::Unknown
        );
    }

    #[test]
    fn an_old_token_is_expired_and_gone_and_others_are_purged() {
        let s = SqliteStore::in_memory().unwrap();
        s.insert_token(&token("old", "r", 0)).unwrap();
        s.insert_token(&token("older", "r", 0)).unwrap();
        s.insert_token(&token("fresh", "r", 100_000)).unwrap();
        // exactly at the lifetime: still valid
        assert!(matches!(
            s.take_token("old", LIFE, LIFE).unwrap(),
            Taken::Token(_)
        ));
        assert_eq!(
            s.take_token("older", LIFE + 1, LIFE).unwrap(),
            Taken::Expired
        );
        s.insert_token(&token("stale", "r", 0)).unwrap();
        // consuming another token purges the stale one
        assert!(matches!(
            s.take_token("fresh", LIFE + 1, LIFE).unwrap(),
            Taken::Token(_)
        ));
        assert_eq!(
            s.take_token("stale", LIFE + 1, LIFE).unwrap(),
            Taken::Unknown
        );
    }

    #[test]
    fn deleting_a_room_deletes_its_tokens() {
        let s = SqliteStore::in_memory().unwrap();
        let r = room("r");
        s.insert_room(&r).unwrap();
        s.insert_token(&token("t", &r.id, 0)).unwrap();
        s.delete_room(&r.id).unwrap();
        assert_eq!(s.take_token("t", 1, LIFE).unwrap(), Taken::Unknown);
    }

    #[test]
    fn data_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("conclave-store-{}", new_id()));
        let r = room("kept");
        {
            let s = SqliteStore::open(&dir).unwrap();
            s.insert_room(&r).unwrap();
            s.insert_token(&token("t", &r.id, 5)).unwrap();
        }
        let s = SqliteStore::open(&dir).unwrap();
        assert_eq!(s.room(&r.id).unwrap().unwrap(), r);
        assert!(matches!(
            s.take_token("t", 10, LIFE).unwrap(),
            Taken::Token(_)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
