//! The embedded store: SQLite through rusqlite, one file in the data
//! directory. Calls run on the blocking pool, one at a time; token
//! consumptions that arrive while one is running are committed together.

use super::{Store, StoreError, Taken, TokenRecord, json, parse};
use crate::room::Room;
use crate::services::StoredService;
use conclave_common::sync::Locked;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    takes: Arc<Mutex<TakeQueue>>,
}

/// Token consumptions waiting for the connection. Logins come in bursts:
/// one blocking-pool run takes every token queued so far in one
/// transaction (group commit), instead of a thread hand-off, a lock and a
/// commit each. Each caller is still answered only after its commit.
#[derive(Default)]
struct TakeQueue {
    waiting: Vec<Take>,
    /// A blocking-pool run is taking tokens and will look here again
    /// before it ends.
    running: bool,
    /// Transactions that took tokens, since the store opened.
    transactions: u64,
}

struct Take {
    id: String,
    oldest_valid: i64,
    answer: tokio::sync::oneshot::Sender<Result<Taken, StoreError>>,
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
            conn: Arc::new(Mutex::new(conn)),
            takes: Default::default(),
        })
    }

    #[cfg(test)]
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.locked()
    }

    /// Run `f` on the connection, on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.locked()))
            .await
            .map_err(|e| StoreError::Db(format!("store task: {e}")))?
    }
}

/// Take the queued tokens, a transaction per batch, until none is left.
fn take_queued(conn: &Mutex<Connection>, takes: &Mutex<TakeQueue>) {
    /// Should a run panic, the next consumption starts another one (the
    /// callers of the lost batch are answered with an error when it drops).
    struct Running<'a>(&'a Mutex<TakeQueue>);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.locked().running = false;
            }
        }
    }
    let _running = Running(takes);
    let mut conn = conn.locked();
    loop {
        let batch = {
            let mut queue = takes.locked();
            if queue.waiting.is_empty() {
                queue.running = false;
                return;
            }
            queue.transactions += 1;
            std::mem::take(&mut queue.waiting)
        };
        match take_batch(&mut conn, &batch) {
            Ok(results) => {
                for (take, result) in batch.into_iter().zip(results) {
                    let _ = take.answer.send(result);
                }
            }
            Err(e) => {
                let e = StoreError::from(e);
                for take in batch {
                    let _ = take.answer.send(Err(match &e {
                        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                        other => StoreError::Db(other.to_string()),
                    }));
                }
            }
        }
    }
}

/// One transaction: each token of `batch` taken (deleted, its record
/// returned), then the expired ones purged.
fn take_batch(
    conn: &mut Connection,
    batch: &[Take],
) -> Result<Vec<Result<Taken, StoreError>>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut results = Vec::with_capacity(batch.len());
    {
        // cached statements: a login's token is taken with no SQL parsing
        let mut take =
            tx.prepare_cached("DELETE FROM tokens WHERE id = ?1 RETURNING created_ms, data")?;
        for t in batch {
            let row: Option<(i64, String)> = take
                .query_row([&t.id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            results.push(match row {
                None => Ok(Taken::Unknown),
                Some((created, _)) if created < t.oldest_valid => Ok(Taken::Expired),
                Some((_, data)) => parse(&t.id, &data).map(|r| Taken::Token(Box::new(r))),
            });
        }
    }
    let oldest_valid = batch
        .iter()
        .map(|t| t.oldest_valid)
        .max()
        .unwrap_or(i64::MIN);
    let purged = tx
        .prepare_cached("DELETE FROM tokens WHERE created_ms < ?1")?
        .execute([oldest_valid])?;
    tx.commit()?;
    if purged > 0 {
        tracing::debug!(purged, "expired tokens purged");
    }
    if batch.len() > 1 {
        tracing::trace!(tokens = batch.len(), "tokens taken in one transaction");
    }
    Ok(results)
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

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn insert_room(&self, room: &Room) -> Result<(), StoreError> {
        let (id, config, service) = (room.id.clone(), json(room), room.service.clone());
        self.call(move |c| {
            c.execute(
                "INSERT INTO rooms (id, config, service) VALUES (?1, ?2, ?3)",
                params![id, config, service],
            )?;
            Ok(())
        })
        .await
    }

    async fn room_count(&self) -> Result<u64, StoreError> {
        self.call(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM rooms", [], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn room(&self, id: &str) -> Result<Option<Room>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let text: Option<String> = c
                .query_row("SELECT config FROM rooms WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()?;
            text.map(|t| parse(&id, &t)).transpose()
        })
        .await
    }

    async fn rooms(
        &self,
        service: Option<&str>,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<Vec<Room>, StoreError> {
        let service = service.map(str::to_string);
        self.call(move |c| {
            let mut stmt = c.prepare(
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
        })
        .await
    }

    async fn update_room(&self, room: &Room) -> Result<bool, StoreError> {
        let (id, config) = (room.id.clone(), json(room));
        self.call(move |c| {
            let n = c.execute(
                "UPDATE rooms SET config = ?2 WHERE id = ?1",
                params![id, config],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_room(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM rooms WHERE id = ?1", [&id])?;
            tx.execute("DELETE FROM tokens WHERE room_id = ?1", [&id])?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let (id, room, created, data) = (
            token.id.clone(),
            token.room_id.clone(),
            token.created_ms,
            json(token),
        );
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO tokens (id, room_id, created_ms, data) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, room, created, data])?;
            Ok(())
        })
        .await
    }

    async fn take_token(
        &self,
        id: &str,
        now_ms: i64,
        lifetime_ms: i64,
    ) -> Result<Taken, StoreError> {
        let (answer, taken) = tokio::sync::oneshot::channel();
        let start = {
            let mut queue = self.takes.locked();
            queue.waiting.push(Take {
                id: id.to_string(),
                oldest_valid: now_ms.saturating_sub(lifetime_ms),
                answer,
            });
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            let (conn, takes) = (self.conn.clone(), self.takes.clone());
            // not awaited: the run answers every caller, this one included
            drop(tokio::task::spawn_blocking(move || {
                take_queued(&conn, &takes)
            }));
        }
        taken
            .await
            .map_err(|_| StoreError::Db("store task ended without an answer".into()))?
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT id, data FROM tokens ORDER BY created_ms, id")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut tokens = Vec::new();
            for row in rows {
                let (id, data) = row?;
                tokens.push(parse(&id, &data)?);
            }
            Ok(tokens)
        })
        .await
    }

    async fn insert_service(&self, service: &StoredService) -> Result<bool, StoreError> {
        let service = service.clone();
        self.call(move |c| {
            let n = c.execute(
                "INSERT INTO services (id, name, sealed_key) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![service.id, service.name, service.sealed_key],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn service(&self, id: &str) -> Result<Option<StoredService>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT id, name, sealed_key FROM services WHERE id = ?1",
                [&id],
                stored_service,
            )
            .optional()?)
        })
        .await
    }

    async fn services(&self) -> Result<Vec<StoredService>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT id, name, sealed_key FROM services ORDER BY seq")?;
            let rows = stmt.query_map([], stored_service)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn delete_service(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            if tx.execute("DELETE FROM services WHERE id = ?1", [&id])? == 0 {
                return Ok(None);
            }
            let rooms: Vec<String> = {
                let mut stmt = tx.prepare("DELETE FROM rooms WHERE service = ?1 RETURNING id")?;
                stmt.query_map([&id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            for room in &rooms {
                tx.execute("DELETE FROM tokens WHERE room_id = ?1", [room])?;
            }
            tx.commit()?;
            Ok(Some(rooms))
        })
        .await
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
    use crate::store::{Origin, suite};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_the_shared_suite() {
        suite::run(|| async { Arc::new(SqliteStore::in_memory().unwrap()) as Arc<dyn Store> })
            .await;
    }

    /// Consumptions that queue while the connection is busy (a burst of
    /// logins) are taken in one transaction, each answered with its own
    /// outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // the test holds the connection while the takes queue up
    #[allow(clippy::await_holding_lock)]
    async fn tokens_taken_while_the_connection_is_busy_share_a_transaction() {
        let s = Arc::new(SqliteStore::in_memory().unwrap());
        for i in 0..50 {
            let mut t = TokenRecord {
                id: format!("t{i}"),
                code: format!("code{i}"),
                user: "u".into(),
                role: "presenter".into(),
                room_id: "r".into(),
                origin: Origin::default(),
                host: "h".into(),
                secure: false,
                created_ms: 1000,
            };
            if i == 7 {
                t.created_ms = 1; // expired by the time it is taken
            }
            s.insert_token(&t).await.unwrap();
        }
        let busy = s.conn();
        let takes: Vec<_> = (0..52)
            .map(|i| {
                let s = s.clone();
                // t50 and t51 do not exist
                tokio::spawn(async move { s.take_token(&format!("t{i}"), 2000, 1500).await })
            })
            .collect();
        let queued = conclave_stack::testing::eventually(std::time::Duration::from_secs(5), || {
            let n = s.takes.locked().waiting.len();
            async move { n == 52 }
        })
        .await;
        drop(busy);
        assert!(queued, "the takes queue behind the busy connection");
        let mut outcomes = Vec::new();
        for t in takes {
            outcomes.push(t.await.unwrap().unwrap());
        }
        for (i, outcome) in outcomes.iter().enumerate() {
            match (i, outcome) {
                (7, Taken::Expired) | (50 | 51, Taken::Unknown) => {}
                (_, Taken::Token(t)) if t.code == format!("code{i}") => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(s.takes.locked().transactions, 1);
        // and each once only
        assert_eq!(
            s.take_token("t3", 2000, 1500).await.unwrap(),
            Taken::Unknown
        );
        assert_eq!(s.takes.locked().transactions, 2);
    }

    #[tokio::test]
    async fn a_version_1_database_is_migrated_and_keeps_its_rooms() {
        let dir = std::env::temp_dir().join(format!("conclave-store-v1-{}", new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = Room::with_defaults("old".into());
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
        assert_eq!(s.rooms(Some(""), 0, None).await.unwrap(), [old]);
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

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("conclave-store-{}", new_id()));
        let r = Room::with_defaults("kept".into());
        let token = TokenRecord {
            id: "t".into(),
            code: "1".into(),
            user: "u".into(),
            role: "presenter".into(),
            room_id: r.id.clone(),
            origin: Origin::default(),
            host: "h:1".into(),
            secure: false,
            created_ms: 5,
        };
        {
            let s = SqliteStore::open(&dir).unwrap();
            s.insert_room(&r).await.unwrap();
            s.insert_token(&token).await.unwrap();
        }
        let s = SqliteStore::open(&dir).unwrap();
        assert_eq!(s.room(&r.id).await.unwrap().unwrap(), r);
        assert!(matches!(
            s.take_token("t", 10, 180_000).await.unwrap(),
            Taken::Token(_)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
