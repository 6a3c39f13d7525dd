//! Opening the read models: the embedded SQLite file, or the schema `readmodels` of the
//! event store's PostgreSQL database, each created and migrated when needed.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Connection, Executor};

use super::{Dialect, SqlReadModels};
use crate::ReadModelError;

/// The read models' file in the data directory (embedded).
pub(super) const SQLITE_FILE: &str = "readmodels.db";
/// The read models' schema in the event store's database (production).
pub(super) const PG_SCHEMA: &str = "readmodels";

/// An advisory lock key for creating the schema ("CSRDMDLS").
const SCHEMA_LOCK: i64 = 0x4353_5244_4D44_4C53;

fn io_error(what: &str, e: std::io::Error) -> ReadModelError {
    ReadModelError::Corrupt(format!("{what}: {e}"))
}

/// Opens (creating and migrating) the embedded read models: `readmodels.db` in `data_dir`.
pub async fn open_sqlite(data_dir: &Path) -> Result<SqlReadModels, ReadModelError> {
    sqlx::any::install_default_drivers();
    std::fs::create_dir_all(data_dir).map_err(|e| {
        io_error(
            &format!("cannot create data directory {}", data_dir.display()),
            e,
        )
    })?;
    let path = data_dir.join(SQLITE_FILE);
    let path = path
        .to_str()
        .ok_or_else(|| ReadModelError::Corrupt(format!("path {} is not UTF-8", path.display())))?
        .to_string();
    let writer = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(120))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 30000;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(&format!("sqlite://{path}?mode=rwc"))
        .await?;
    sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
    let reader = AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(60))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 30000;").await?;
                Ok(())
            })
        })
        .connect(&format!("sqlite://{path}?mode=ro"))
        .await?;
    Ok(SqlReadModels {
        dialect: Dialect::Sqlite,
        writer,
        reader,
    })
}

/// Connects to the production read models: the schema `readmodels` of the event store's
/// database at `database_url`, created and migrated when needed.
pub async fn connect_postgres(database_url: &str) -> Result<SqlReadModels, ReadModelError> {
    sqlx::any::install_default_drivers();
    {
        // Processes that start together must not race to create the schema.
        let options = sqlx::postgres::PgConnectOptions::from_str(database_url)?;
        let mut setup = sqlx::PgConnection::connect_with(&options).await?;
        let mut tx = setup.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        setup.close().await?;
    }
    let pool = AnyPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(60))
        .after_connect(|conn, _| {
            Box::pin(async move {
                // synchronous_commit off: as on SQLite, a read-model commit does not wait
                // for its WAL flush (derived data; see the module documentation).
                conn.execute(
                    format!("SET search_path TO {PG_SCHEMA}; SET synchronous_commit TO off")
                        .as_str(),
                )
                .await?;
                Ok(())
            })
        })
        .connect(database_url)
        .await?;
    // sqlx's migrations table lands in the schema too (first on the search path), apart
    // from the event store's.
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(SqlReadModels {
        dialect: Dialect::Postgres,
        writer: pool.clone(),
        reader: pool,
    })
}
