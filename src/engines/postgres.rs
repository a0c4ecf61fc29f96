//! PostgreSQL, on the official `postgres` image or anything with its run-time contract:
//! `POSTGRES_PASSWORD`, `POSTGRES_USER`, `POSTGRES_DB`, `PGDATA`, first-run `initdb`.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};

use super::{Launch, MemoryBounds, Settings};
use crate::model::{DatabaseName, MemoryMb};
use crate::secrets::Secret;

pub const PORT: u16 = 5432;
pub const DATA_PATH: &str = "/var/lib/postgresql/data";
/// The cluster lives in a subdirectory of the volume, as the official image advises: `initdb`
/// wants an empty directory, and a volume's root may hold `lost+found`.
const PGDATA_SUBDIRECTORY: &str = "pgdata";
pub const USER: &str = "postgres";
pub const DEFAULT_DATABASE: &str = "app";
pub const MEMORY: MemoryBounds = MemoryBounds { min: MemoryMb(128), max: MemoryMb(65536), default: MemoryMb(512) };

pub fn launch(settings: &Settings) -> Launch {
    let env = vec![
        format!("POSTGRES_PASSWORD={}", settings.password.expose()),
        format!("POSTGRES_USER={USER}"),
        format!("POSTGRES_DB={}", settings.database.unwrap_or(DEFAULT_DATABASE)),
        format!("PGDATA={}/{PGDATA_SUBDIRECTORY}", settings.data_path),
    ];
    Launch { env, args: Vec::new(), config_file: None }
}

pub fn uri(host: &str, port: u16, password: &Secret, database: &str) -> String {
    format!("postgresql://{USER}:{}@{host}:{port}/{database}", password.expose())
}

async fn connect(host: &str, port: u16, password: &Secret, database: &str) -> Result<PgConnection, String> {
    PgConnectOptions::new()
        .host(host)
        .port(port)
        .username(USER)
        .password(password.expose())
        .database(database)
        // sqlx logs statements at debug level, and a rotation's statement holds the new password.
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// A real login over TCP to the instance's database and `SELECT 1`.
pub async fn probe(host: &str, port: u16, password: &Secret, database: &str) -> Result<(), String> {
    let mut conn = connect(host, port, password, database).await?;
    sqlx::query("SELECT 1").execute(&mut conn).await.map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// `CREATE DATABASE`, connected to `current`. A database name is a validated identifier
/// (`DatabaseName`: lowercase letters, digits and '_'), quoted all the same.
pub async fn create_database(
    host: &str,
    port: u16,
    password: &Secret,
    current: &str,
    database: &DatabaseName,
) -> Result<(), String> {
    let mut conn = connect(host, port, password, current).await?;
    let statement = format!("CREATE DATABASE \"{}\"", database.as_str());
    sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut conn).await.map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// `ALTER USER … PASSWORD`. The statement takes no placeholders, so the password is spliced in;
/// it is dbroker's own (alphanumerics from a CSPRNG), never a user's input, and checked again here.
pub async fn rotate_password(host: &str, port: u16, old: &Secret, new: &Secret, database: &str) -> Result<(), String> {
    if !new.expose().bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("refusing a password that is not alphanumeric".into());
    }
    let mut conn = connect(host, port, old, database).await?;
    let statement = format!("ALTER USER {USER} WITH PASSWORD '{}'", new.expose());
    sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut conn).await.map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}
