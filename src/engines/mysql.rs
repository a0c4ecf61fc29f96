//! MySQL, on the official `mysql` image or anything with its run-time contract (the MariaDB-based
//! offline image): the root password in `MYSQL_ROOT_PASSWORD`, server options as arguments.

use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::{Launch, MemoryBounds, Settings};
use crate::model::MemoryMb;
use crate::secrets::Secret;

pub const PORT: u16 = 3306;
pub const DATA_PATH: &str = "/var/lib/mysql";
pub const USER: &str = "root";
pub const MEMORY: MemoryBounds = MemoryBounds {
    min: MemoryMb(256),
    max: MemoryMb(65536),
    default: MemoryMb(1024),
};

pub fn launch(settings: &Settings) -> Launch {
    // Options after the image are passed to the server by the image's entrypoint, one argument
    // each: a charset never passes through a shell.
    let mut args = Vec::new();
    if let Some(charset) = settings.charset {
        args.push(format!("--character-set-server={}", charset.as_str()));
    }
    if let Some(collation) = settings.collation {
        args.push(format!("--collation-server={}", collation.as_str()));
    }
    Launch {
        env: vec![format!(
            "MYSQL_ROOT_PASSWORD={}",
            settings.password.expose()
        )],
        args,
    }
}

pub fn uri(host: &str, port: u16, password: &Secret) -> String {
    format!("mysql://{USER}:{}@{host}:{port}/", password.expose())
}

/// A real MySQL handshake and `SELECT 1`: the server is up, and the password is the one it knows.
pub async fn probe(host: &str, port: u16, password: &Secret) -> Result<(), String> {
    let mut conn = MySqlConnectOptions::new()
        .host(host)
        .port(port)
        .username(USER)
        .password(password.expose())
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}
