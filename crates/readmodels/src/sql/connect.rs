//! Opening the read models: the embedded SQLite file, or the schema `readmodels` of the
//! event store's PostgreSQL database, each created and migrated when needed.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cornershop_store::{open_writing_connection, Durability, SqliteReaders};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, Executor};

use super::engine::{Engine, PREPARED_STATEMENTS};
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

/// The read models' migrations, run so that a database a newer release has migrated
/// further is taken as it is: during a rolling upgrade a process of the previous release
/// may start (or restart) after a new one applied its migrations. The read models'
/// migrations are therefore additive (a column with a default that is right for what an
/// older projector writes; see ARCHITECTURE.md, "Event versions"); a migration that drops
/// or renames comes a release after the one that stopped using the column.
fn tolerant(mut migrator: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    migrator.set_ignore_missing(true);
    migrator
}

/// Opens (creating and migrating) the embedded read models: `readmodels.db` in `data_dir`.
pub async fn open_sqlite(data_dir: &Path) -> Result<SqlReadModels, ReadModelError> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        io_error(
            &format!("cannot create data directory {}", data_dir.display()),
            e,
        )
    })?;
    let path = data_dir.join(SQLITE_FILE);
    // sqlx migrates (its table of applied migrations is the one every file so far has),
    // on a connection closed before the writer opens its own.
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let migrator = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    tolerant(sqlx::migrate!("./migrations/sqlite"))
        .run(&migrator)
        .await?;
    migrator.close().await;
    // NORMAL: derived data (see the module documentation of `sql`).
    let writer = open_writing_connection(
        &path,
        Durability::Normal,
        Duration::from_secs(30),
        PREPARED_STATEMENTS,
    )?;
    Ok(SqlReadModels {
        dialect: Dialect::Sqlite,
        engine: Engine::Sqlite {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            readers: SqliteReaders::new(path, PREPARED_STATEMENTS),
        },
    })
}

/// Connects to the production read models: the schema `readmodels` of the event store's
/// database at `database_url`, created and migrated when needed.
pub async fn connect_postgres(database_url: &str) -> Result<SqlReadModels, ReadModelError> {
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
    let pool = PgPoolOptions::new()
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
    tolerant(sqlx::migrate!("./migrations/postgres"))
        .run(&pool)
        .await?;
    Ok(SqlReadModels {
        dialect: Dialect::Postgres,
        engine: Engine::Postgres(pool),
    })
}
