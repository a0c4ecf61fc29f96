//! Each engine's dump, load and content digest (`dbroker::engines::{dump, load, content_digest}`),
//! on real instances: a dump taken while another task keeps writing is consistent (each writer's
//! transaction writes two rows, so a consistent copy holds an even number), loads into a fresh
//! instance whose digest then equals the dump's, and is streamed (read through a small buffer
//! into a file, never collected). A dump that does not load fails with the server's message and
//! leaves the target as it was. No password is in any process's argv while a dump runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use dbroker::engines::{self, ContentDigest, Endpoint, Engine, LoadError};
use dbroker::runtime::Runtime;
use dbroker::secrets::Secret;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    ALICE, TestApp, docker, mysql_connect, port_and_password, postgres_connect, redis_connect, redis_loaded, rotate,
    wait_until,
};

/// Rows or keys each test writes before it dumps.
const ROWS: u64 = 10_000;
/// The reads a dump is taken in: small, so a dump of megabytes is many reads.
const READ_BYTES: usize = 4096;
/// What each of those rows or keys holds: enough that a dump (about 3 MiB) is far larger than
/// every buffer between its tool and the test, so the tool still runs while the test holds off.
/// Random, so that Redis's compression of its snapshot's strings cannot make it small.
fn padding() -> String {
    (0..5).map(|_| hex::encode(rand::random::<[u8; 32]>())).collect()
}
const DEADLINE: Duration = Duration::from_secs(60);

/// A task that keeps writing pairs until it is stopped, and counts them.
struct Writer {
    stop: Arc<AtomicBool>,
    pairs: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// `write_pair` gets the connection and the pair's number, and gives the connection back.
    fn spawn<C, F, Fut>(mut conn: C, mut write_pair: F) -> Writer
    where
        C: Send + 'static,
        F: FnMut(C, u64) -> Fut + Send + 'static,
        Fut: Future<Output = C> + Send,
    {
        let (stop, pairs) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (stopping, counting) = (stop.clone(), pairs.clone());
        let task = tokio::spawn(async move {
            while !stopping.load(Ordering::SeqCst) {
                conn = write_pair(conn, counting.load(Ordering::SeqCst)).await;
                counting.fetch_add(1, Ordering::SeqCst);
            }
        });
        Writer { stop, pairs, task }
    }

    async fn wait_for_writes(&self) {
        wait_until("the writer to write", DEADLINE, || async {
            (self.pairs.load(Ordering::SeqCst) >= 5).then_some(())
        })
        .await;
    }

    /// Stops it; returns how many pairs it wrote.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the writer ran to its end");
        self.pairs.load(Ordering::SeqCst)
    }
}

/// Every process on the host whose argv holds `text`, and whether one of them is `tool`: the
/// containers' processes are the host's too, and /proc shows them to root.
fn processes_with(text: &str, tool: &str) -> (Vec<String>, bool) {
    let (mut holding, mut saw_tool) = (Vec::new(), false);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(argv) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
        saw_tool |= argv.trim() == tool || argv.starts_with(&format!("{tool} "));
        if argv.contains(text) {
            holding.push(argv);
        }
    }
    (holding, saw_tool)
}

/// Dumps `container` into a file through reads of `READ_BYTES`, and checks, while the dump's
/// tool runs (blocked on its output, which is read no further meanwhile), that no process's argv
/// holds `password`. Returns the file and the dump's digest.
async fn dump_to_file(
    runtime: &Runtime,
    engine: Engine,
    container: &str,
    database: Option<&str>,
    password: &str,
    tool: &str,
    dir: &Path,
) -> (std::path::PathBuf, ContentDigest) {
    let mut dump = engines::dump(engine, runtime, container, database).await.expect("the dump starts");
    let path = dir.join("dump");
    let mut file = tokio::fs::File::create(&path).await.unwrap();
    let mut buf = vec![0u8; READ_BYTES];
    let first = dump.read(&mut buf).await.unwrap();
    assert!(first > 0, "the dump has a beginning");
    file.write_all(&buf[..first]).await.unwrap();

    let (holding, saw_tool) = processes_with(password, tool);
    assert!(saw_tool, "{tool} runs while the dump is read");
    assert!(holding.is_empty(), "the password is in the argv of {holding:?}");

    let (mut size, mut reads) = (first as u64, 1);
    loop {
        let n = dump.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).await.unwrap();
        size += n as u64;
        reads += 1;
    }
    file.flush().await.unwrap();
    let digest = dump.finish().await.expect("the dump completes");
    assert!(size > 3_000_000, "a dump of {ROWS} rows: {size} bytes");
    assert!(reads > 700, "{size} bytes in {reads} reads of at most {READ_BYTES}: streamed");
    (path, digest)
}

async fn load_file(
    runtime: &Runtime,
    engine: Engine,
    container: &str,
    endpoint: &Endpoint<'_>,
    path: &Path,
) -> Result<(), LoadError> {
    let file = tokio::fs::File::open(path).await.unwrap();
    engines::load(engine, runtime, container, endpoint, file).await
}

fn endpoint<'a>(port: u16, password: &'a Secret, database: Option<&'a str>) -> Endpoint<'a> {
    Endpoint { host: "127.0.0.1", port, password, database }
}

/// Loading text that is no dump fails with the server's message, and the target's digest is
/// what it was.
async fn garbage_is_refused(
    runtime: &Runtime,
    engine: Engine,
    container: &str,
    endpoint: &Endpoint<'_>,
    expected: &str,
) {
    let before = engines::content_digest(engine, runtime, container, endpoint.database).await.unwrap();
    let garbage: &'static [u8] = b"this is not a dump; DROP everything\n\x00\x01\x02";

    let refused = engines::load(engine, runtime, container, endpoint, garbage).await;

    match refused {
        Err(LoadError::Rejected(message)) => assert!(message.contains(expected), "{message}"),
        other => panic!("garbage was not refused with the server's message: {other:?}"),
    }
    let after = engines::content_digest(engine, runtime, container, endpoint.database).await.unwrap();
    assert_eq!(before, after, "a refused load leaves the data as it was");
}

#[tokio::test]
async fn a_mysql_dump_taken_while_writes_go_on_loads_into_a_fresh_instance_with_the_same_content() {
    let app = TestApp::spawn().await;
    let runtime = Runtime::new(None);
    let dir = tempfile::tempdir().unwrap();
    let (source, target) =
        tokio::join!(app.create(ALICE, json!({"engine": "mysql"})), app.create(ALICE, json!({"engine": "mysql"})));
    // The dump reads the password file, which follows the rotation.
    let source = rotate(&app, &source).await;
    let (port, password) = port_and_password(&source);
    let mut conn = mysql_connect(port, "root", &password).await.unwrap();
    for statement in [
        "CREATE DATABASE shop",
        "CREATE TABLE shop.t (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT NOT NULL)",
        "CREATE PROCEDURE shop.count_rows() SELECT COUNT(*) FROM shop.t",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    for batch in 0..ROWS / 1000 {
        let values: Vec<String> = (0..1000).map(|i| format!("('row {} {}')", batch * 1000 + i, padding())).collect();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("INSERT INTO shop.t (v) VALUES {}", values.join(","))))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let writer_conn = mysql_connect(port, "root", &password).await.unwrap();
    let writer = Writer::spawn(writer_conn, |mut conn, n| async move {
        // One statement, so one transaction, of two rows.
        let statement = format!("INSERT INTO shop.t (v) VALUES ('pair {n} a'), ('pair {n} b')");
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await.unwrap();
        conn
    });
    writer.wait_for_writes().await;

    let (path, digest) =
        dump_to_file(&runtime, Engine::Mysql, &app.container_of(&source), None, &password, "mariadb-dump", dir.path())
            .await;
    let pairs = writer.stop().await;

    let (target_port, target_password) = port_and_password(&target);
    let target_secret = Secret::new(target_password.clone());
    let target_endpoint = endpoint(target_port, &target_secret, None);
    let target_container = app.container_of(&target);
    load_file(&runtime, Engine::Mysql, &target_container, &target_endpoint, &path).await.expect("the dump loads");

    let restored = engines::content_digest(Engine::Mysql, &runtime, &target_container, None).await.unwrap();
    assert_eq!(restored, digest, "the restored server holds what the dump was taken of");
    let mut target_conn = mysql_connect(target_port, "root", &target_password).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM shop.t").fetch_one(&mut target_conn).await.unwrap();
    assert!(rows as u64 >= ROWS && (rows as u64) < ROWS + 2 * pairs + 1, "{rows} rows, {pairs} pairs written");
    assert_eq!((rows as u64 - ROWS) % 2, 0, "a consistent snapshot: whole pairs only ({rows} rows)");
    let routines: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'shop'")
            .fetch_one(&mut target_conn)
            .await
            .unwrap();
    assert_eq!(routines, 1, "routines are in the dump");
    // The target keeps its own root password: the server's own database is not in the dump.
    assert!(mysql_connect(target_port, "root", &target_password).await.is_ok());

    garbage_is_refused(&runtime, Engine::Mysql, &target_container, &target_endpoint, "ERROR").await;
}

#[tokio::test]
async fn a_postgres_dump_taken_while_writes_go_on_loads_into_a_fresh_instance_with_the_same_content() {
    let app = TestApp::spawn().await;
    let runtime = Runtime::new(None);
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = tokio::join!(
        app.create(ALICE, json!({"engine": "postgres", "database": "shop"})),
        app.create(ALICE, json!({"engine": "postgres", "database": "restored"})),
    );
    let (port, password) = port_and_password(&source);
    let mut conn = postgres_connect(port, &password, "shop").await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL); \
         CREATE VIEW pairs AS SELECT count(*) AS n FROM t; \
         INSERT INTO t (v) SELECT 'row ' || g || ' ' || repeat('x', 300) FROM generate_series(1, 10000) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let writer_conn = postgres_connect(port, &password, "shop").await.unwrap();
    let writer = Writer::spawn(writer_conn, |mut conn, n| async move {
        let statement = format!("INSERT INTO t (v) VALUES ('pair {n} a'), ('pair {n} b')");
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await.unwrap();
        conn
    });
    writer.wait_for_writes().await;

    let source_container = app.container_of(&source);
    let (path, digest) =
        dump_to_file(&runtime, Engine::Postgres, &source_container, Some("shop"), &password, "pg_dump", dir.path())
            .await;
    let pairs = writer.stop().await;

    let (target_port, target_password) = port_and_password(&target);
    let target_secret = Secret::new(target_password.clone());
    let target_endpoint = endpoint(target_port, &target_secret, Some("restored"));
    let target_container = app.container_of(&target);
    load_file(&runtime, Engine::Postgres, &target_container, &target_endpoint, &path).await.expect("the dump loads");

    let restored =
        engines::content_digest(Engine::Postgres, &runtime, &target_container, Some("restored")).await.unwrap();
    assert_eq!(restored, digest, "the restored database holds what the dump was taken of");
    let mut target_conn = postgres_connect(target_port, &target_password, "restored").await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT n FROM pairs").fetch_one(&mut target_conn).await.unwrap();
    assert!(rows as u64 >= ROWS && (rows as u64) < ROWS + 2 * pairs + 1, "{rows} rows, {pairs} pairs written");
    assert_eq!((rows as u64 - ROWS) % 2, 0, "a consistent snapshot: whole pairs only ({rows} rows)");

    garbage_is_refused(&runtime, Engine::Postgres, &target_container, &target_endpoint, "syntax error").await;
}

#[tokio::test]
async fn a_postgres_load_whose_input_fails_half_way_changes_nothing() {
    let app = TestApp::spawn().await;
    let runtime = Runtime::new(None);
    let instance = app.create(ALICE, json!({"engine": "postgres"})).await;
    let (port, password) = port_and_password(&instance);
    let secret = Secret::new(password.clone());
    let container = app.container_of(&instance);
    let before = engines::content_digest(Engine::Postgres, &runtime, &container, Some("app")).await.unwrap();
    // Complete statements, then an error where a broken upload or decryption would end it.
    let good = std::io::Cursor::new(b"CREATE TABLE half (v int);\nINSERT INTO half VALUES (1);\n".to_vec());
    let input = good.chain(FailingReader);

    let loaded =
        engines::load(Engine::Postgres, &runtime, &container, &endpoint(port, &secret, Some("app")), input).await;

    assert!(matches!(loaded, Err(LoadError::Input(_))), "{loaded:?}");
    let after = engines::content_digest(Engine::Postgres, &runtime, &container, Some("app")).await.unwrap();
    assert_eq!(before, after, "nothing of the cut input was committed");
}

/// A reader that fails, as a broken upload does.
struct FailingReader;

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::other("the upload broke")))
    }
}

#[tokio::test]
async fn a_redis_snapshot_taken_while_writes_go_on_loads_into_a_fresh_instance_and_survives_its_restart() {
    let app = TestApp::spawn().await;
    let runtime = Runtime::new(None);
    let dir = tempfile::tempdir().unwrap();
    let (source, target) =
        tokio::join!(app.create(ALICE, json!({"engine": "redis"})), app.create(ALICE, json!({"engine": "redis"})));
    // The dump reads redis.conf, which Redis rewrites on the rotation.
    let source = rotate(&app, &source).await;
    let (port, password) = port_and_password(&source);
    let mut conn = redis_connect(port, &password).await.unwrap();
    for batch in 0..ROWS / 1000 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.set(format!("key:{}", batch * 1000 + i), format!("value {i} {}", padding())).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    let writer_conn = redis_connect(port, &password).await.unwrap();
    let writer = Writer::spawn(writer_conn, |mut conn, n| async move {
        // MULTI … EXEC: both keys or neither.
        let mut pair = redis::pipe();
        pair.atomic().set(format!("pair:{n}:a"), n).ignore().set(format!("pair:{n}:b"), n).ignore();
        pair.query_async::<()>(&mut conn).await.unwrap();
        conn
    });
    writer.wait_for_writes().await;

    let source_container = app.container_of(&source);
    let (path, digest) =
        dump_to_file(&runtime, Engine::Redis, &source_container, None, &password, "cat", dir.path()).await;
    let pairs = writer.stop().await;

    let (target_port, target_password) = port_and_password(&target);
    let target_secret = Secret::new(target_password.clone());
    let target_endpoint = endpoint(target_port, &target_secret, None);
    let target_container = app.container_of(&target);
    load_file(&runtime, Engine::Redis, &target_container, &target_endpoint, &path).await.expect("the RDB loads");

    let restored = engines::content_digest(Engine::Redis, &runtime, &target_container, None).await.unwrap();
    assert_eq!(restored, digest, "the restored server holds what the snapshot was taken of");
    let mut target_conn = redis_connect(target_port, &target_password).await.unwrap();
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut target_conn).await.unwrap();
    assert!(keys >= ROWS && keys < ROWS + 2 * pairs + 1, "{keys} keys, {pairs} pairs written");
    assert_eq!((keys - ROWS) % 2, 0, "a consistent snapshot: whole pairs only ({keys} keys)");

    // The loaded data is the server's own now: it starts from it again.
    let restart = bollard::query_parameters::RestartContainerOptions { t: Some(30), signal: None };
    docker().await.restart_container(&target_container, Some(restart)).await.unwrap();
    wait_until("the restarted Redis to load its data", DEADLINE, || redis_loaded(target_port, &target_password)).await;
    let after_restart = engines::content_digest(Engine::Redis, &runtime, &target_container, None).await.unwrap();
    assert_eq!(after_restart, digest, "the loaded data survives a restart");

    garbage_is_refused(&runtime, Engine::Redis, &target_container, &target_endpoint, "Wrong signature").await;
    // Half an RDB: refused by Redis's checker if the input ends there, as the input's failure if
    // it fails there; the server keeps what it has either way.
    let rdb = tokio::fs::read(&path).await.unwrap();
    let half = rdb[..rdb.len() / 2].to_vec();
    let cut =
        engines::load(Engine::Redis, &runtime, &target_container, &target_endpoint, std::io::Cursor::new(half.clone()));
    assert!(matches!(cut.await, Err(LoadError::Rejected(_))), "a truncated RDB is refused");
    let broken = std::io::Cursor::new(half).chain(FailingReader);
    let broken = engines::load(Engine::Redis, &runtime, &target_container, &target_endpoint, broken).await;
    assert!(matches!(broken, Err(LoadError::Input(_))), "{broken:?}");
    let kept = engines::content_digest(Engine::Redis, &runtime, &target_container, None).await.unwrap();
    assert_eq!(kept, digest, "neither changed the server's data");
}

#[tokio::test]
async fn debug_commands_are_refused_to_clients_from_outside_the_container() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (port, password) = port_and_password(&instance);
    let mut conn = redis_connect(port, &password).await.unwrap();

    let digest: redis::RedisResult<String> = redis::cmd("DEBUG").arg("DIGEST").query_async(&mut conn).await;

    let refused = digest.expect_err("DEBUG is for local connections only");
    assert!(refused.to_string().contains("not allowed"), "{refused}");
}

/// The processes of `container` whose argv begins with `tool`, found through their cgroup, which
/// names the container's id.
async fn tools_in(container: &str, tool: &str) -> usize {
    let inspect = docker().await.inspect_container(container, None::<InspectContainerOptions>).await.unwrap();
    let id = inspect.id.expect("a container has an id");
    let mut found = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let (Ok(argv), Ok(cgroup)) =
            (std::fs::read(entry.path().join("cmdline")), std::fs::read_to_string(entry.path().join("cgroup")))
        else {
            continue;
        };
        if cgroup.contains(&id) && argv.starts_with(format!("{tool}\0").as_bytes()) {
            found += 1;
        }
    }
    found
}

#[tokio::test]
async fn a_dump_given_up_on_half_way_ends_its_tool_in_the_container() {
    let app = TestApp::spawn().await;
    let runtime = Runtime::new(None);
    let instance = app.create(ALICE, json!({"engine": "postgres"})).await;
    let (port, password) = port_and_password(&instance);
    let mut conn = postgres_connect(port, &password, "app").await.unwrap();
    let fill = "CREATE TABLE t AS SELECT g AS id, repeat(md5(g::text), 10) AS v FROM generate_series(1, 20000) g";
    sqlx::raw_sql(fill).execute(&mut conn).await.unwrap();
    let container = app.container_of(&instance);
    let mut dump = engines::dump(Engine::Postgres, &runtime, &container, Some("app")).await.unwrap();
    let mut buf = vec![0u8; READ_BYTES];
    assert!(dump.read(&mut buf).await.unwrap() > 0);
    assert_eq!(tools_in(&container, "pg_dump").await, 1, "pg_dump runs, held up by its unread output");

    drop(dump);

    wait_until("pg_dump to end", DEADLINE, || async { (tools_in(&container, "pg_dump").await == 0).then_some(()) })
        .await;
}
