//! PostgreSQL: tokio-postgres through a deadpool connection pool, for
//! several management replicas on one database. The schema is versioned
//! (`conclave_schema`) and migrated at start-up under an advisory lock, so
//! replicas starting together migrate once. A token is consumed by one
//! `DELETE ... RETURNING`: the row lock makes exactly one of any number of
//! concurrent consumers, on any replica, get it.
//!
//! Every call is bounded by `store.timeout`, connecting included: an
//! unreachable or stalled database gives [`StoreError::Unavailable`], and
//! the pool replaces broken connections by itself once the database is back.
//! Connections are plaintext (`sslmode=disable`): keep the database on a
//! private network.

use super::{Store, StoreConfig, StoreError, Taken, TokenRecord, json, parse};
use crate::room::Room;
use crate::services::StoredService;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::future::Future;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// The schema, one step per version; `conclave_schema.version` says how
/// many have run. Never edit a step that has shipped: add one.
const MIGRATIONS: &[&str] = &[
    // 1: rooms (owned by a service, "" = the default one), tokens, services
    "CREATE TABLE rooms (
         seq BIGSERIAL PRIMARY KEY,
         id TEXT NOT NULL UNIQUE,
         config TEXT NOT NULL,
         service TEXT NOT NULL DEFAULT ''
     );
     CREATE INDEX rooms_service ON rooms (service, seq);
     CREATE TABLE tokens (
         id TEXT PRIMARY KEY,
         room_id TEXT NOT NULL,
         created_ms BIGINT NOT NULL,
         data TEXT NOT NULL
     );
     CREATE INDEX tokens_created ON tokens (created_ms);
     CREATE INDEX tokens_room ON tokens (room_id);
     CREATE TABLE services (
         seq BIGSERIAL PRIMARY KEY,
         id TEXT NOT NULL UNIQUE,
         name TEXT NOT NULL UNIQUE,
         sealed_key TEXT NOT NULL
     );",
];

/// The schema version this code writes.
pub const PG_SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Serializes migrations between replicas (any constant will do; this one
/// spells "conclave" in the digits of a phone keypad).
const MIGRATION_LOCK: i64 = 266_525_283;

pub struct PgStore {
    pool: Pool,
    timeout: Duration,
}

/// A tokio-postgres error as a store error: the database unreachable,
/// shutting down or out of connections is `Unavailable`; a refused
/// statement (a duplicate key, say) is `Db`.
fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") {
                StoreError::Unavailable(db.message().to_string())
            } else if db.code() == &SqlState::UNIQUE_VIOLATION {
                StoreError::Db(format!("duplicate key: {}", db.message()))
            } else {
                StoreError::Db(db.message().to_string())
            }
        }
        None => StoreError::Unavailable(e.to_string()),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// The URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    if !url.contains("://") {
        // key=value form
        return url
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some(("password", _)) => "password=***".to_string(),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl PgStore {
    /// Connect to `config.url` and bring the schema up to date.
    pub async fn connect(config: &StoreConfig) -> Result<PgStore, StoreError> {
        let timeout = Duration::from_millis(config.timeout.max(1));
        let mut pg_config: tokio_postgres::Config = config.url.parse().map_err(|e| {
            StoreError::Config(format!("store.url `{}`: {e}", redacted(&config.url)))
        })?;
        pg_config.connect_timeout(timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("conclave-management");
        }
        let manager = Manager::from_config(
            pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let store = PgStore { pool, timeout };
        store.migrate().await?;
        tracing::info!(url = %redacted(&config.url), schema = PG_SCHEMA_VERSION, "PostgreSQL store ready");
        Ok(store)
    }

    /// Run `work` within the deadline.
    async fn timed<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from PostgreSQL within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.timed(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS conclave_schema (version INTEGER NOT NULL)")
                .await
                .map_err(pg)?;
            let version: Option<i32> = tx
                .query_opt("SELECT version FROM conclave_schema", &[])
                .await
                .map_err(pg)?
                .map(|r| r.get(0));
            let from = version.unwrap_or(0);
            if from > PG_SCHEMA_VERSION {
                return Err(StoreError::Config(format!(
                    "the database's schema version {from} is newer than this management's ({PG_SCHEMA_VERSION}): run the newer release"
                )));
            }
            for step in &MIGRATIONS[from as usize..] {
                tx.batch_execute(step).await.map_err(pg)?;
            }
            if version.is_none() {
                tx.execute(
                    "INSERT INTO conclave_schema (version) VALUES ($1)",
                    &[&PG_SCHEMA_VERSION],
                )
                .await
                .map_err(pg)?;
            } else if from < PG_SCHEMA_VERSION {
                tx.execute("UPDATE conclave_schema SET version = $1", &[&PG_SCHEMA_VERSION])
                    .await
                    .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            if from < PG_SCHEMA_VERSION {
                tracing::info!(from, to = PG_SCHEMA_VERSION, "PostgreSQL schema migrated");
            }
            Ok(())
        })
        .await
    }
}

fn stored_service(r: &tokio_postgres::Row) -> StoredService {
    StoredService {
        id: r.get(0),
        name: r.get(1),
        sealed_key: r.get(2),
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn insert_room(&self, room: &Room) -> Result<(), StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("INSERT INTO rooms (id, config, service) VALUES ($1, $2, $3)")
                .await
                .map_err(pg)?;
            client
                .execute(&stmt, &[&room.id, &json(room), &room.service])
                .await
                .map_err(pg)?;
            Ok(())
        })
        .await
    }

    async fn room_count(&self) -> Result<u64, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT COUNT(*) FROM rooms", &[])
                .await
                .map_err(pg)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
        .await
    }

    async fn room(&self, id: &str) -> Result<Option<Room>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT config FROM rooms WHERE id = $1")
                .await
                .map_err(pg)?;
            let row = client.query_opt(&stmt, &[&id]).await.map_err(pg)?;
            row.map(|r| parse(id, r.get::<_, &str>(0))).transpose()
        })
        .await
    }

    async fn rooms(
        &self,
        service: Option<&str>,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<Vec<Room>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let limit = limit.map(|l| l.min(i64::MAX as u64) as i64);
            let offset = offset.min(i64::MAX as u64) as i64;
            let rows = client
                .query(
                    "SELECT id, config FROM rooms WHERE $3::TEXT IS NULL OR service = $3
                     ORDER BY seq LIMIT $1 OFFSET $2",
                    &[&limit, &offset, &service],
                )
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|r| parse(r.get::<_, &str>(0), r.get::<_, &str>(1)))
                .collect()
        })
        .await
    }

    async fn update_room(&self, room: &Room) -> Result<bool, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let n = client
                .execute(
                    "UPDATE rooms SET config = $2 WHERE id = $1",
                    &[&room.id, &json(room)],
                )
                .await
                .map_err(pg)?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_room(&self, id: &str) -> Result<bool, StoreError> {
        self.timed(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let n = tx
                .execute("DELETE FROM rooms WHERE id = $1", &[&id])
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM tokens WHERE room_id = $1", &[&id])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(n == 1)
        })
        .await
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO tokens (id, room_id, created_ms, data) VALUES ($1, $2, $3, $4)",
                )
                .await
                .map_err(pg)?;
            client
                .execute(
                    &stmt,
                    &[&token.id, &token.room_id, &token.created_ms, &json(token)],
                )
                .await
                .map_err(pg)?;
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
        let oldest_valid = now_ms.saturating_sub(lifetime_ms);
        self.timed(async {
            let client = self.client().await?;
            // one statement: take the token, purge the expired ones
            let stmt = client
                .prepare_cached(
                    "WITH taken AS (DELETE FROM tokens WHERE id = $1 RETURNING created_ms, data),
                          purged AS (DELETE FROM tokens WHERE created_ms < $2 AND id <> $1)
                     SELECT created_ms, data FROM taken",
                )
                .await
                .map_err(pg)?;
            let row = client
                .query_opt(&stmt, &[&id, &oldest_valid])
                .await
                .map_err(pg)?;
            Ok(match row {
                None => Taken::Unknown,
                Some(r) if r.get::<_, i64>(0) < oldest_valid => Taken::Expired,
                Some(r) => Taken::Token(Box::new(parse(id, r.get::<_, &str>(1))?)),
            })
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let rows = client
                .query("SELECT id, data FROM tokens ORDER BY created_ms, id", &[])
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|r| parse(r.get::<_, &str>(0), r.get::<_, &str>(1)))
                .collect()
        })
        .await
    }

    async fn insert_service(&self, service: &StoredService) -> Result<bool, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let n = client
                .execute(
                    "INSERT INTO services (id, name, sealed_key) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&service.id, &service.name, &service.sealed_key],
                )
                .await
                .map_err(pg)?;
            Ok(n == 1)
        })
        .await
    }

    async fn service(&self, id: &str) -> Result<Option<StoredService>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT id, name, sealed_key FROM services WHERE id = $1")
                .await
                .map_err(pg)?;
            let row = client.query_opt(&stmt, &[&id]).await.map_err(pg)?;
            Ok(row.as_ref().map(stored_service))
        })
        .await
    }

    async fn services(&self) -> Result<Vec<StoredService>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT id, name, sealed_key FROM services ORDER BY seq",
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(stored_service).collect())
        })
        .await
    }

    async fn delete_service(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.timed(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            if tx
                .execute("DELETE FROM services WHERE id = $1", &[&id])
                .await
                .map_err(pg)?
                == 0
            {
                return Ok(None);
            }
            let rooms: Vec<String> = tx
                .query("DELETE FROM rooms WHERE service = $1 RETURNING id", &[&id])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.execute("DELETE FROM tokens WHERE room_id = ANY($1)", &[&rooms])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(Some(rooms))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("postgres://conclave:s3cret@db:5432/conclave"),
            "postgres://conclave:***@db:5432/conclave"
        );
        assert_eq!(redacted("postgres://db/conclave"), "postgres://db/conclave");
        assert_eq!(
            redacted("host=db user=conclave password=x"),
            "host=db user=conclave password=***"
        );
    }
}
