//! PostgreSQL, on the official `postgres` image or anything with its run-time contract:
//! `POSTGRES_PASSWORD_FILE`, `POSTGRES_USER`, `POSTGRES_DB`, `PGDATA`, first-run `initdb`.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio::io::AsyncRead;

use super::dump::{DumpError, LoadError};
use super::{
    DatabaseSize, IdentityEdit, Launch, Launched, MemoryBounds, PASSWORD_PATH, Profile, Recovered, ServerStats,
    Settings,
};
use crate::model::{DatabaseName, EngineSettings, MemoryMb};
use crate::runtime::Exec;
use crate::secrets::Secret;

const DATA_PATH: &str = "/var/lib/postgresql/data";
/// The cluster lives in a subdirectory of the volume, as the official image advises: `initdb`
/// wants an empty directory, and a volume's root may hold `lost+found`.
const PGDATA_SUBDIRECTORY: &str = "pgdata";
const USER: &str = "postgres";
pub(super) const DEFAULT_DATABASE: &str = "app";

pub fn default_database() -> DatabaseName {
    DEFAULT_DATABASE.parse().expect("the default database is a valid name")
}
/// The database every cluster has, for work on the others.
const MAINTENANCE_DATABASE: &str = "postgres";

pub const PROFILE: Profile = Profile {
    port: 5432,
    data_path: DATA_PATH,
    user: Some(USER),
    memory: MemoryBounds { min: MemoryMb(128), max: MemoryMb(65536), default: MemoryMb(512) },
    options: &["database"],
    config_path: PASSWORD_PATH,
    server_rewrites_config: false,
    default_database: Some(DEFAULT_DATABASE),
    capabilities: &[
        // The entrypoint hands PGDATA and the socket's directory to the postgres user.
        "CHOWN",
        // Root makes PGDATA inside a directory the postgres user owns, and looks into PGDATA
        // (mode 0700, the postgres user's) to see whether it is initialised.
        "DAC_OVERRIDE",
        // Root sets PGDATA's mode once it belongs to the postgres user (`chmod 700`).
        "FOWNER",
        // `gosu postgres`.
        "SETGID",
        "SETUID",
    ],
};

pub fn launch(settings: &Settings) -> Launch {
    // The superuser's password only matters to `initdb`; after that it lives in the cluster,
    // where a rotation changes it (and dbroker writes the file again, for an adopt to find).
    let env = vec![
        format!("{PASSWORD_VARIABLE}_FILE={PASSWORD_PATH}"),
        format!("POSTGRES_USER={USER}"),
        format!("POSTGRES_DB={}", settings.instance.database().map_or(DEFAULT_DATABASE, DatabaseName::as_str)),
        format!("PGDATA={}", pgdata(settings.data_path)),
    ];
    Launch { env, args: Vec::new(), config_file: super::password_file(settings.password) }
}

/// The variable the image reads the superuser's password from, or with `_FILE`, the file that
/// holds it.
const PASSWORD_VARIABLE: &str = "POSTGRES_PASSWORD";

/// The inverse of `launch`: the superuser's password and the database.
pub fn recover(launched: &Launched) -> Option<Recovered> {
    let database = match launched.env_var("POSTGRES_DB") {
        Some(database) => database.parse().ok()?,
        None => default_database(),
    };
    let password = super::recover_password(launched, PASSWORD_VARIABLE)?;
    Some(Recovered { password, settings: EngineSettings::Postgres { database } })
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

/// `ALTER DATABASE current RENAME TO new`, connected to the `postgres` database (a database cannot
/// be renamed by a session connected to it). Both names are validated identifiers
/// (`DatabaseName`: lowercase letters, digits and '_'), quoted all the same.
pub async fn rename_database(
    host: &str,
    port: u16,
    password: &Secret,
    current: &str,
    new: &DatabaseName,
) -> Result<(), String> {
    let current: DatabaseName = current.parse().map_err(|e: crate::model::Invalid| e.0)?;
    let mut conn = connect(host, port, password, MAINTENANCE_DATABASE).await?;
    let statement = format!("ALTER DATABASE \"{}\" RENAME TO \"{}\"", current.as_str(), new.as_str());
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

/// Client connections to the whole cluster (not its background workers, nor this one) and the
/// size of the instance's database on disk.
pub async fn stats(host: &str, port: u16, password: &Secret, database: &str) -> Result<ServerStats, String> {
    let mut conn = connect(host, port, password, database).await?;
    let (connections, bytes): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()), \
                pg_database_size(current_database())",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    let database = DatabaseSize { name: database.to_string(), bytes: bytes.try_into().unwrap_or_default() };
    Ok(ServerStats::Postgres { connections: connections.try_into().unwrap_or_default(), database })
}

/// Where the cluster lives when the volume is mounted at `data_path`.
pub fn pgdata(data_path: &str) -> String {
    format!("{data_path}/{PGDATA_SUBDIRECTORY}")
}

/// A cluster's identity lives in `global/pg_control`: its system identifier (the first 8 bytes,
/// which replication and backup tools compare) and its mock-authentication nonce (the 32 bytes
/// before the CRC since PostgreSQL 10: a secret that makes failed logins of unknown users look
/// like those of real ones). Each WAL segment's first page header repeats the identifier.
const CONTROL_FILE: &str = "global/pg_control";
const WAL_DIRECTORY: &str = "pg_wal";
const NONCE_LEN: usize = 32;
/// How much of a WAL segment holds its long page header.
const WAL_HEADER_LEN: usize = 32;
/// `pg_control` is one 8 KiB page.
const CONTROL_FILE_LEN: usize = 8192;

/// What gives a copy of a template's cluster at `data_path` a new system identifier and nonce of
/// its own, before its server first starts: the control file, and the WAL segments that the
/// server checks against it.
pub fn identity_edit(data_path: &str) -> IdentityEdit {
    let new_id = new_system_identifier();
    let nonce: [u8; NONCE_LEN] = rand::random();
    IdentityEdit {
        base: pgdata(data_path),
        paths: &[CONTROL_FILE, WAL_DIRECTORY],
        head_len: CONTROL_FILE_LEN,
        edit: Box::new(move |path, head| {
            if path == std::path::Path::new(CONTROL_FILE) {
                return reidentify_control_file(head, new_id, &nonce);
            }
            if path.starts_with(WAL_DIRECTORY) {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                reidentify_wal_segment(name, head, new_id);
            }
            Ok(())
        }),
    }
}

/// Gives a copy of `global/pg_control` the identifier `new_id` and the nonce `nonce`, and a CRC
/// to match. The CRC (CRC-32C over all that precedes it) sits where the struct ends, which moves
/// between major versions; it is found, not assumed: the only offset whose stored value is the
/// CRC of the bytes before it.
fn reidentify_control_file(control: &mut [u8], new_id: u64, nonce: &[u8; NONCE_LEN]) -> Result<(), String> {
    let crc_at = (NONCE_LEN + 8..control.len().min(1024).saturating_sub(4))
        .step_by(4)
        .find(|&at| CRC32C.checksum(&control[..at]).to_ne_bytes() == control[at..at + 4])
        .ok_or("pg_control has no valid CRC; is this a PostgreSQL data directory?")?;
    control[..8].copy_from_slice(&new_id.to_ne_bytes());
    control[crc_at - NONCE_LEN..crc_at].copy_from_slice(nonce);
    let crc = CRC32C.checksum(&control[..crc_at]);
    control[crc_at..crc_at + 4].copy_from_slice(&crc.to_ne_bytes());
    Ok(())
}

/// Gives a WAL segment's long page header (bytes 24 to 32: the identifier) `new_id`; page headers
/// carry no CRC. `head` is the start of the file called `name`; other files stay as they are.
fn reidentify_wal_segment(name: &str, head: &mut [u8], new_id: u64) {
    const XLP_LONG_HEADER: u16 = 0x0002;
    let is_segment = name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit());
    if is_segment && head.len() >= WAL_HEADER_LEN && u16::from_ne_bytes([head[2], head[3]]) & XLP_LONG_HEADER != 0 {
        head[24..32].copy_from_slice(&new_id.to_ne_bytes());
    }
}

/// A new system identifier made the way `initdb` makes one (seconds since the epoch in the high
/// half, which tools read as the cluster's birth), with random low bits instead of the time's
/// microseconds and the process id.
fn new_system_identifier() -> u64 {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (seconds << 32) | u64::from(rand::random::<u32>())
}

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// What `pg_dump` writes differently each time for the same data: since 15.14 (and 16.10, 17.6)
/// a plain dump opens with `\restrict KEY` and ends with `\unrestrict KEY`, the key random. Left
/// out of the dump's digest (see `dump`).
pub(super) const VOLATILE_DUMP_LINES: &[&[u8]] = &[b"\\restrict ", b"\\unrestrict "];

/// The user the dump and load run as inside the container: the cluster's superuser, whose
/// socket logins the images trust (`initdb --auth-local=trust`), so no password is needed at all.
const OS_USER: &str = "postgres";

/// `pg_dump` of `database` in plain SQL, in its own snapshot (pg_dump's one transaction, which
/// blocks no writer). Owners and privileges are left out: a fresh instance of ours has only the
/// `postgres` role, which then owns everything loaded, and a grant to a role it lacks would stop
/// the load. Each object is dropped before it is made (`--clean --if-exists`), so a load into an
/// instance that has them replaces them.
pub(super) fn dump_command(database: &str) -> Result<Exec, DumpError> {
    let database = checked_database(database).map_err(DumpError::Failed)?;
    Ok(Exec::new([
        "pg_dump",
        "--no-password",
        "--format=plain",
        "--no-owner",
        "--no-privileges",
        "--clean",
        "--if-exists",
        "--dbname",
        database.as_str(),
    ])
    .as_user(OS_USER))
}

/// `psql` into `database`, stopping at the first error (`ON_ERROR_STOP`, with the server's message
/// on stderr), the whole dump in one transaction: `BEGIN` before it and `COMMIT` after it, sent
/// only once the input has ended cleanly (see `Transaction`). No `psqlrc` of the image is read.
pub(super) fn load_command(database: &str, input: impl AsyncRead + Send + Unpin + 'static) -> Result<Exec, LoadError> {
    let database = checked_database(database).map_err(LoadError::Rejected)?;
    let argv =
        ["psql", "--no-password", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--dbname", database.as_str()];
    Ok(Exec::new(argv).as_user(OS_USER).with_stdin(Transaction::new(input)))
}

/// A database name as `DatabaseName` allows them (lowercase letters, digits, '_'): never taken
/// by `--dbname` for a connection string.
fn checked_database(database: &str) -> Result<DatabaseName, String> {
    database.parse().map_err(|e: crate::model::Invalid| e.0)
}

/// A dump's input wrapped in one transaction. `COMMIT` follows only a clean end of the input: an
/// input that fails (a cut upload, a failed decryption) ends the stream with no `COMMIT`, psql
/// reaches its end inside the transaction and disconnects, and the server rolls it all back.
struct Transaction<R> {
    input: R,
    state: TransactionState,
}

enum TransactionState {
    Begin(&'static [u8]),
    Body,
    Commit(&'static [u8]),
}

impl<R> Transaction<R> {
    fn new(input: R) -> Self {
        Transaction { input, state: TransactionState::Begin(b"BEGIN;\n") }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Transaction<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match &mut this.state {
                TransactionState::Begin(rest) | TransactionState::Commit(rest) if !rest.is_empty() => {
                    let n = rest.len().min(buf.remaining());
                    buf.put_slice(&rest[..n]);
                    *rest = &rest[n..];
                    return Poll::Ready(Ok(()));
                }
                TransactionState::Begin(_) => this.state = TransactionState::Body,
                TransactionState::Commit(_) => return Poll::Ready(Ok(())),
                TransactionState::Body => {
                    let before = buf.filled().len();
                    match std::pin::Pin::new(&mut this.input).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) if buf.filled().len() == before => {
                            // A newline first: the dump's last line may lack one.
                            this.state = TransactionState::Commit(b"\nCOMMIT;\n");
                        }
                        other => return other,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dump_that_ends_cleanly_is_wrapped_in_one_transaction() {
        use tokio::io::AsyncReadExt;
        let mut wrapped = String::new();
        Transaction::new(&b"CREATE TABLE t ();"[..]).read_to_string(&mut wrapped).await.unwrap();
        assert_eq!(wrapped, "BEGIN;\nCREATE TABLE t ();\nCOMMIT;\n");
    }

    #[tokio::test]
    async fn a_dump_whose_input_fails_gets_no_commit() {
        use tokio::io::AsyncReadExt;
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::other("cut")))
            }
        }
        let mut wrapped = Vec::new();
        let read = Transaction::new((&b"CREATE TABLE t ();\n"[..]).chain(Broken)).read_to_end(&mut wrapped).await;
        assert!(read.is_err());
        assert!(!String::from_utf8_lossy(&wrapped).contains("COMMIT"), "{wrapped:?}");
    }

    /// A control file laid out as PostgreSQL's: identifier first, nonce, then the CRC of both.
    fn control_file(id: u64, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut control = vec![0u8; 8192];
        control[..8].copy_from_slice(&id.to_ne_bytes());
        control[8..12].copy_from_slice(&1300u32.to_ne_bytes());
        control[256..288].copy_from_slice(&nonce);
        let crc = CRC32C.checksum(&control[..288]);
        control[288..292].copy_from_slice(&crc.to_ne_bytes());
        control
    }

    #[test]
    fn a_control_file_gets_the_new_identifier_and_nonce_and_a_crc_that_matches() {
        let mut control = control_file(7, [1; NONCE_LEN]);

        reidentify_control_file(&mut control, 42, &[9; NONCE_LEN]).unwrap();

        assert_eq!(control, control_file(42, [9; NONCE_LEN]));
    }

    #[test]
    fn a_file_without_a_valid_crc_is_refused_untouched() {
        let mut control = control_file(7, [1; NONCE_LEN]);
        control[288] ^= 0xff;
        let before = control.clone();

        assert!(reidentify_control_file(&mut control, 42, &[9; NONCE_LEN]).is_err());
        assert_eq!(control, before);
    }

    #[test]
    fn only_a_segments_long_header_changes() {
        let header = |info: u16, id: u64| {
            let mut head = vec![0u8; 40];
            head[2..4].copy_from_slice(&info.to_ne_bytes());
            head[24..32].copy_from_slice(&id.to_ne_bytes());
            head
        };
        let segment = "000000010000000000000001";

        let mut head = header(0x0002, 7);
        reidentify_wal_segment(segment, &mut head, 42);
        assert_eq!(head, header(0x0002, 42));

        for (name, mut head) in [(segment, header(0x0000, 7)), ("archive_status", header(0x0002, 7))] {
            let before = head.clone();
            reidentify_wal_segment(name, &mut head, 42);
            assert_eq!(head, before, "{name}");
        }
    }
}

/// Drops the instance's database and makes it again, empty, owned by the instance's user: what an
/// in-place restore or an import starts from. Connected to the `postgres` database (a database
/// cannot be dropped by a session connected to it); sessions on it are ended (`FORCE`). The name
/// is a validated identifier (`DatabaseName`), quoted all the same.
pub async fn wipe(host: &str, port: u16, password: &Secret, database: &str) -> Result<(), String> {
    let database: DatabaseName = database.parse().map_err(|e: crate::model::Invalid| e.0)?;
    let mut conn = connect(host, port, password, MAINTENANCE_DATABASE).await?;
    for statement in [
        format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", database.as_str()),
        format!("CREATE DATABASE \"{}\" OWNER {USER}", database.as_str()),
    ] {
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut conn).await.map_err(|e| e.to_string())?;
    }
    let _ = conn.close().await;
    Ok(())
}
