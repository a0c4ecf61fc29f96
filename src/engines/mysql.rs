//! MySQL, on the official `mysql` or `mariadb` image or anything with their run-time contract (the
//! MariaDB-based offline image): the root password in the file `MYSQL_ROOT_PASSWORD_FILE` names,
//! server options as arguments.

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio::io::AsyncRead;

use super::{DatabaseSize, Launch, Launched, MemoryBounds, PASSWORD_PATH, Profile, Recovered, ServerStats, Settings};
use crate::model::{EngineSettings, MemoryMb};
use crate::runtime::Exec;
use crate::secrets::Secret;

const DATA_PATH: &str = "/var/lib/mysql";
const USER: &str = "root";

pub const PROFILE: Profile = Profile {
    port: 3306,
    data_path: DATA_PATH,
    user: Some(USER),
    memory: MemoryBounds { min: MemoryMb(256), max: MemoryMb(65536), default: MemoryMb(1024) },
    options: &["charset", "collation"],
    config_path: PASSWORD_PATH,
    server_rewrites_config: false,
    default_database: None,
    capabilities: &[
        // The entrypoint hands the data directory and the socket's directory to the mysql user.
        "CHOWN",
        // Root writes into the mysql user's data directory while it initialises it
        // (`mariadb-install-db`'s `mysql_upgrade_info`); the official entrypoint looks through it
        // (`find`) for files to hand over.
        "DAC_OVERRIDE",
        // The offline image's entrypoint, as root, stops the temporary server it initialised the
        // data directory with, which runs as the mysql user.
        "KILL",
        // `gosu mysql`, and `mariadb-install-db --user=mysql`.
        "SETGID",
        "SETUID",
    ],
};

pub fn launch(settings: &Settings) -> Launch {
    // Options after the image are passed to the server by the image's entrypoint, one argument
    // each: a charset never passes through a shell.
    let mut args = Vec::new();
    if settings.data_path != DATA_PATH {
        args.push(format!("--datadir={}", settings.data_path));
    }
    if let Some(charset) = settings.instance.charset() {
        args.push(format!("--character-set-server={}", charset.as_str()));
    }
    if let Some(collation) = settings.instance.collation() {
        args.push(format!("--collation-server={}", collation.as_str()));
    }
    // The root password only matters to the first start, which initialises the data directory;
    // after that it lives in the server's own tables, where a rotation changes it (and dbroker
    // writes the file again, for an adopt to find).
    Launch {
        env: vec![format!("{PASSWORD_VARIABLE}_FILE={PASSWORD_PATH}")],
        args,
        config_file: super::password_file(settings.password),
    }
}

/// The variable the images read the root password from, or with `_FILE`, the file that holds it.
const PASSWORD_VARIABLE: &str = "MYSQL_ROOT_PASSWORD";

/// The inverse of `launch`: the root password and the server options.
pub fn recover(launched: &Launched) -> Option<Recovered> {
    let settings = EngineSettings::Mysql {
        charset: launched.arg("--character-set-server=").map(str::parse).transpose().ok()?,
        collation: launched.arg("--collation-server=").map(str::parse).transpose().ok()?,
    };
    Some(Recovered { password: super::recover_password(launched, PASSWORD_VARIABLE)?, settings })
}

pub fn uri(host: &str, port: u16, password: &Secret) -> String {
    format!("mysql://{USER}:{}@{host}:{port}/", password.expose())
}

async fn connect(host: &str, port: u16, password: &Secret) -> Result<MySqlConnection, String> {
    MySqlConnectOptions::new()
        .host(host)
        .port(port)
        .username(USER)
        .password(password.expose())
        // sqlx logs statements at debug level, and a rotation's statement holds the new password.
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// A real MySQL handshake and `SELECT 1`: the server is up, and the password is the one it knows.
pub async fn probe(host: &str, port: u16, password: &Secret) -> Result<(), String> {
    let mut conn = connect(host, port, password).await?;
    sqlx::query("SELECT 1").execute(&mut conn).await.map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// `ALTER USER` for root, from anywhere and from inside the container. The statement takes no
/// placeholders, so the password is spliced in; it is dbroker's own (alphanumerics from a CSPRNG,
/// see `secrets`), never a user's input, and is checked again here.
pub async fn rotate_password(host: &str, port: u16, old: &Secret, new: &Secret) -> Result<(), String> {
    if !new.expose().bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("refusing a password that is not alphanumeric".into());
    }
    let mut conn = connect(host, port, old).await?;
    for host_pattern in ["%", "localhost"] {
        let statement = format!("ALTER USER '{USER}'@'{host_pattern}' IDENTIFIED BY '{}'", new.expose());
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut conn).await.map_err(|e| e.to_string())?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// Where MariaDB's server is (10.5 and later; in the official `mariadb` images and Debian's
/// packages): an image that has it runs MariaDB. Oracle's MySQL has `MYSQL_SERVER_PATH` only
/// (which MariaDB's packages keep as a link to theirs).
pub const MARIADB_SERVER_PATH: &str = "/usr/sbin/mariadbd";
pub const MYSQL_SERVER_PATH: &str = "/usr/sbin/mysqld";

/// The server's collations, each with its character set, as it lists them. MariaDB 10.10 and
/// later name some collations for every character set they apply to (`uca1400_ai_ci`, that is
/// `utf8mb4_uca1400_ai_ci` and more), which only `FULL_COLLATION_NAME` spells out; Oracle's MySQL
/// and older MariaDBs lack that column, and their `COLLATIONS` table has every name in full.
pub async fn collations(host: &str, port: u16, password: &Secret) -> Result<Vec<(String, String)>, String> {
    let mut conn = connect(host, port, password).await?;
    let full = "SELECT FULL_COLLATION_NAME, CHARACTER_SET_NAME \
                FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY";
    let plain = "SELECT COLLATION_NAME, CHARACTER_SET_NAME FROM information_schema.COLLATIONS";
    let rows = match sqlx::query_as::<_, (String, String)>(full).fetch_all(&mut conn).await {
        Ok(rows) => rows,
        Err(_) => sqlx::query_as(plain).fetch_all(&mut conn).await.map_err(|e| e.to_string())?,
    };
    let _ = conn.close().await;
    Ok(rows)
}

/// Connections and the size of every user database (its tables' data and indexes, as
/// `information_schema.TABLES` estimates them; a database without tables is 0).
pub async fn stats(host: &str, port: u16, password: &Secret) -> Result<ServerStats, String> {
    let mut conn = connect(host, port, password).await?;
    // Oracle's MySQL caches those estimates for a day by default; this session wants today's.
    // MariaDB has no such cache, and no such variable.
    let _ = sqlx::query("SET SESSION information_schema_stats_expiry = 0").execute(&mut conn).await;
    let (_, connected): (String, String) = sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let connected: u64 = connected.parse().map_err(|_| format!("Threads_connected is {connected:?}"))?;
    // Every schema but the server's own, which hold no user data.
    let sizes = "SELECT CAST(s.SCHEMA_NAME AS CHAR), \
                        CAST(COALESCE(SUM(t.DATA_LENGTH + t.INDEX_LENGTH), 0) AS UNSIGNED) \
                 FROM information_schema.SCHEMATA s \
                 LEFT JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = s.SCHEMA_NAME \
                 WHERE s.SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
                 GROUP BY s.SCHEMA_NAME ORDER BY s.SCHEMA_NAME";
    let databases: Vec<(String, u64)> = sqlx::query_as(sizes).fetch_all(&mut conn).await.map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(ServerStats::Mysql {
        // This connection is one of them.
        connections: connected.saturating_sub(1),
        databases: databases.into_iter().map(|(name, bytes)| DatabaseSize { name, bytes }).collect(),
    })
}

/// The dump's script, a constant: the root password is read from the container's password file
/// (its path is the first argument; dbroker rewrites the file on every rotation) into
/// `MYSQL_PWD`, never an argument. Every user
/// database is dumped; the server's own (`mysql` and the schemas about the server) are not, so a
/// restore never replaces the new instance's root credentials. Database names come one a line
/// from the server, into separate arguments (no globbing). No user database: an empty dump.
/// MariaDB's images have `mariadb-dump`, Oracle's only `mysqldump`; the options are the same.
const DUMP_SCRIPT: &str = r#"set -e
MYSQL_PWD=$(cat "$1")
export MYSQL_PWD
shift
if command -v mariadb-dump >/dev/null; then dump=mariadb-dump client=mariadb; else dump=mysqldump client=mysql; fi
databases=$("$client" --user=root --batch --skip-column-names --execute="SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN ('mysql', 'sys', 'information_schema', 'performance_schema') ORDER BY schema_name")
[ -n "$databases" ] || exit 0
set -f
IFS='
'
exec "$dump" --user=root "$@" --databases $databases"#;

/// The dump's options: one consistent snapshot of InnoDB tables that blocks no writer
/// (`--single-transaction`, rows read one at a time with `--quick`), everything a restore needs
/// (routines, triggers, events; each database dropped and made again), and nothing that changes
/// between two dumps of the same data (no date, no comments with the host or the time), so that
/// the dump's sha256 is a digest of the data (see `dump`).
const DUMP_OPTIONS: &[&str] = &[
    "--single-transaction",
    "--quick",
    "--routines",
    "--triggers",
    "--events",
    "--add-drop-database",
    "--hex-blob",
    "--skip-dump-date",
    "--skip-comments",
];

/// The load's script, a constant, with the password read as the dump's is.
const LOAD_SCRIPT: &str = r#"MYSQL_PWD=$(cat "$1") || exit 1
export MYSQL_PWD
shift
if command -v mariadb >/dev/null; then exec mariadb --user=root --batch "$@"; fi
exec mysql --user=root --batch "$@""#;

/// The command that writes a dump of every user database to stdout (see `DUMP_SCRIPT`).
pub(super) fn dump_command() -> Exec {
    let mut argv = vec!["sh".to_string(), "-c".into(), DUMP_SCRIPT.into(), "sh".into(), PASSWORD_PATH.into()];
    argv.extend(DUMP_OPTIONS.iter().map(|o| o.to_string()));
    Exec::new(argv)
}

/// The command that loads a dump from `input`: the server's client, which stops at the first
/// statement that fails, with the server's message on stderr.
pub(super) fn load_command(input: impl AsyncRead + Send + Unpin + 'static) -> Exec {
    Exec::new(["sh", "-c", LOAD_SCRIPT, "sh", PASSWORD_PATH]).with_stdin(input)
}

/// The databases a server holds that are its own, not a user's: a dump leaves them out, and
/// emptying an instance keeps them (its users, its root password, its schema of schemas).
const SYSTEM_DATABASES: &[&str] = &["mysql", "sys", "information_schema", "performance_schema"];

/// Drops every user database, keeping the server's own (`SYSTEM_DATABASES`): what an in-place
/// restore or an import starts from. The names are the server's own, quoted as identifiers.
pub async fn wipe(host: &str, port: u16, password: &Secret) -> Result<(), String> {
    let mut conn = connect(host, port, password).await?;
    let names: Vec<String> = sqlx::query_scalar("SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    for name in names.iter().filter(|n| !SYSTEM_DATABASES.contains(&n.as_str())) {
        let statement = format!("DROP DATABASE `{}`", name.replace('`', "``"));
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut conn).await.map_err(|e| e.to_string())?;
    }
    let _ = conn.close().await;
    Ok(())
}
