//! What the backup tests share: a dbroker with a directory target (`local`) and an S3 target
//! (`offsite`, the default) on a real S3 server of the test's own, an age key pair, and each
//! engine's data written and compared by checksum with real clients.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::Value;
use sha2::Digest;
use sqlx::{Connection, Row};

use crate::backups::Damage;
use crate::helpers::{TestApp, mysql_connect, port_and_password, postgres_connect, redis_connect};
use crate::s3::S3Server;
use dbroker::backups::{BackupSettings, Identity, S3Spec, TargetSpec};
use dbroker::config::Config;

/// How many rows or keys each engine's content holds.
const ROWS: u32 = 10_000;

pub struct BackupSetup {
    pub dir: tempfile::TempDir,
    pub s3: S3Server,
    identity_file: PathBuf,
    recipient: String,
}

impl BackupSetup {
    pub async fn new() -> BackupSetup {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let s3 = S3Server::start().await;
        let identity = age::x25519::Identity::generate();
        let identity_file = dir.path().join("backup.key");
        write_private(&identity_file, identity_text(&identity).as_bytes());
        std::fs::create_dir(dir.path().join("local")).unwrap();
        BackupSetup { dir, s3, identity_file, recipient: identity.to_public().to_string() }
    }

    pub async fn spawn_app(&self) -> TestApp {
        self.spawn_app_with(|_| {}).await
    }

    pub async fn spawn_app_with(&self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        TestApp::spawn_with(|c| {
            c.backups = Some(self.config());
            adjust(c)
        })
        .await
    }

    /// `local`, a directory, and `offsite`, the S3 server under `dbroker/`, the default.
    fn config(&self) -> BackupSettings {
        let targets = BTreeMap::from([
            ("local".to_string(), TargetSpec::Dir { path: self.dir.path().join("local") }),
            ("offsite".to_string(), TargetSpec::S3(self.s3.spec(S3_PREFIX, &self.s3.access_key, &self.s3.secret_key))),
        ]);
        BackupSettings {
            default_target: "offsite".into(),
            targets,
            recipient: self.recipient.parse().expect("an age recipient"),
            identity: Some(self.identity()),
            import_max_bytes: dbroker::backups::settings::DEFAULT_IMPORT_MAX_BYTES,
        }
    }

    fn identity(&self) -> Identity {
        Identity::parse(&std::fs::read_to_string(&self.identity_file).unwrap()).expect("an age identity")
    }

    fn backups(config: &mut Config) -> &mut BackupSettings {
        config.backups.as_mut().expect("spawned by spawn_app_with")
    }

    pub fn set_import_limit(config: &mut Config, bytes: u64) {
        Self::backups(config).import_max_bytes = bytes;
    }

    /// Another key pair's identity: backups sealed to this setup's recipient do not open with it.
    pub fn use_another_identity(&self, config: &mut Config) {
        let other = age::x25519::Identity::generate();
        Self::backups(config).identity = Some(Identity::parse(&identity_text(&other)).unwrap());
    }

    /// `nowhere`, an S3 target where nothing listens, and `wrong-key`, the S3 server with a
    /// secret key it does not know.
    pub fn add_broken_targets(&self, config: &mut Config) {
        let nowhere = S3Spec {
            endpoint: format!("http://127.0.0.1:{}", crate::helpers::free_port()),
            ..self.s3.spec(S3_PREFIX, &self.s3.access_key, &self.s3.secret_key)
        };
        let wrong = self.s3.spec(S3_PREFIX, &self.s3.access_key, "not-the-secret-key");
        let targets = &mut Self::backups(config).targets;
        targets.insert("nowhere".into(), TargetSpec::S3(nowhere));
        targets.insert("wrong-key".into(), TargetSpec::S3(wrong));
    }

    pub fn add_dir_target(&self, config: &mut Config, name: &str, path: &Path) {
        Self::backups(config).targets.insert(name.into(), TargetSpec::Dir { path: path.to_path_buf() });
    }

    /// Whether the S3 server holds the backup's object.
    pub fn on_s3(&self, backup: &Value) -> bool {
        self.s3.object_file(&format!("{S3_PREFIX}{}", object_key(backup))).is_file()
    }

    /// A tmpfs of 4 MiB, unmounted when dropped; `None` if this machine cannot mount one.
    pub async fn small_filesystem(&self) -> Option<SmallFilesystem> {
        let path = self.dir.path().join("small");
        std::fs::create_dir(&path).ok()?;
        let mounted = tokio::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&path)
            .status()
            .await
            .ok()?;
        mounted.success().then_some(SmallFilesystem { path })
    }

    fn local_object(&self, backup: &Value) -> PathBuf {
        self.dir.path().join("local").join(object_key(backup))
    }

    pub async fn sha256_of_local_object(&self, backup: &Value) -> String {
        let bytes = tokio::fs::read(self.local_object(backup)).await.expect("the object is in the directory");
        hex::encode(sha2::Sha256::digest(&bytes))
    }

    pub async fn damage_local_object(&self, backup: &Value, damage: Damage) {
        let path = self.local_object(backup);
        let mut bytes = tokio::fs::read(&path).await.unwrap();
        match damage {
            Damage::FlipAByte => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x55;
            }
            Damage::Truncate => bytes.truncate(bytes.len() / 2),
        }
        tokio::fs::write(&path, bytes).await.unwrap();
    }

    /// `GET …/export`, insisting on 200, whole.
    pub async fn export(&self, app: &TestApp, instance: &Value) -> Vec<u8> {
        let response = app
            .client
            .get(app.url(&format!("/v1/instances/{}/export", instance["id"].as_str().unwrap())))
            .header("Authorization", "Bearer alice")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.expect("the whole export").to_vec()
    }

    /// `POST …/import` with `dump` as the body: the status and the body.
    pub async fn import(&self, app: &TestApp, instance: &Value, dump: Vec<u8>) -> (StatusCode, Value) {
        let response = app
            .client
            .post(app.url(&format!("/v1/instances/{}/import", instance["id"].as_str().unwrap())))
            .header("Authorization", "Bearer alice")
            .header("Content-Type", "application/octet-stream")
            .body(dump)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Loads an export into `instance` with its engine's own client, inside its container (where
    /// the client's version is the server's): `mariadb`, `psql`, or, for Redis, the server itself
    /// started on the RDB file (what `redis-check-rdb` checks first).
    pub async fn load_with_engines_own_client(&self, app: &TestApp, instance: &Value, dump: &[u8]) {
        let container = app.container_of(instance);
        let script = match instance["engine"].as_str().unwrap() {
            "mysql" => "MYSQL_PWD=$(cat /etc/dbroker/password) exec mariadb -uroot",
            "postgres" => {
                "PGPASSWORD=$(cat /etc/dbroker/password) exec psql -v ON_ERROR_STOP=1 -q -h 127.0.0.1 -U postgres -d app"
            }
            _ => {
                // Redis's own checker reads the export; a running Redis loads an RDB only through
                // its files, which is what the import does.
                crate::helpers::exec_with_stdin(&container, &["redis-check-rdb", "/dev/stdin"], dump).await;
                let (status, body) = self.import(app, instance, dump.to_vec()).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                return;
            }
        };
        crate::helpers::exec_with_stdin(&container, &["sh", "-c", script], dump).await;
    }
}

/// A small filesystem the test mounted; unmounted when dropped.
pub struct SmallFilesystem {
    path: PathBuf,
}

impl SmallFilesystem {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it holds no file at all (in any directory).
    pub fn is_empty(&self) -> bool {
        fn files(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| entries.flatten().map(|e| if e.path().is_dir() { files(&e.path()) } else { 1 }).sum())
                .unwrap_or(0)
        }
        files(&self.path) == 0
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.path).status();
    }
}

/// Where the S3 target keeps its objects in the bucket.
const S3_PREFIX: &str = "dbroker/";

/// A backup's object key on its target (see `provision::backups::object_key`).
fn object_key(backup: &Value) -> String {
    format!(
        "{}/{}.{}.zst.age",
        backup["instance_id"].as_str().unwrap(),
        backup["id"].as_str().unwrap(),
        if backup["engine"] == "redis" { "rdb" } else { "sql" }
    )
}

/// An age identity as its key file holds it.
pub fn identity_text(identity: &age::x25519::Identity) -> String {
    use age::secrecy::ExposeSecret;
    format!("{}\n", identity.to_string().expose_secret())
}

/// Writes a new file that only its owner may read (as the identity file must be).
pub fn write_private(path: &Path, contents: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    file.write_all(contents).unwrap();
}

/// An engine's data as a checksum over all of it, read with a real client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    engine: String,
    checksum: String,
}

impl Content {
    /// Writes `ROWS` rows (or keys) into the instance and returns their checksum.
    pub async fn fill(engine: &str, instance: &Value) -> Content {
        write_rows(engine, instance, 0).await;
        Content::of(engine, instance).await
    }

    /// Changes the data (every row's value) and returns the new checksum.
    pub async fn fill_other(engine: &str, instance: &Value) -> Content {
        write_rows(engine, instance, 1).await;
        Content::of(engine, instance).await
    }

    /// Writes about `bytes` of incompressible data (Redis only).
    pub async fn fill_large(engine: &str, instance: &Value, bytes: usize) {
        assert_eq!(engine, "redis");
        let (port, password) = port_and_password(instance);
        let mut conn = redis_connect(port, &password).await.unwrap();
        for chunk in 0..bytes / (256 * 1024) {
            let value: Vec<u8> = (0..256 * 1024).map(|_| rand::random::<u8>()).collect();
            let _: () = redis::cmd("SET").arg(format!("big:{chunk}")).arg(value).query_async(&mut conn).await.unwrap();
        }
    }

    pub async fn of(engine: &str, instance: &Value) -> Content {
        let (port, password) = port_and_password(instance);
        let checksum = match engine {
            "mysql" => {
                let mut conn = mysql_connect(port, "root", &password).await.unwrap();
                sqlx::query("SET SESSION group_concat_max_len = 16777216").execute(&mut conn).await.unwrap();
                let row = sqlx::query(
                    "SELECT CAST(COUNT(*) AS CHAR), MD5(GROUP_CONCAT(id, ':', v ORDER BY id SEPARATOR ',')) FROM shop.t",
                )
                .fetch_one(&mut conn)
                .await
                .unwrap();
                let (count, md5): (String, String) = (row.get(0), row.get(1));
                conn.close().await.ok();
                format!("{count} {md5}")
            }
            "postgres" => {
                let database = instance["database"].as_str().unwrap_or("app");
                let mut conn = postgres_connect(port, &password, database).await.unwrap();
                let row = sqlx::query("SELECT count(*)::text, md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                let (count, md5): (String, String) = (row.get(0), row.get(1));
                conn.close().await.ok();
                format!("{count} {md5}")
            }
            _ => {
                let mut conn = redis_connect(port, &password).await.unwrap();
                let keys: Vec<String> = (0..ROWS).map(|i| format!("k:{i}")).collect();
                let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.unwrap();
                let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
                let joined: Vec<String> = values.into_iter().map(|v| v.unwrap_or_default()).collect();
                format!("{size} {}", hex::encode(sha2::Sha256::digest(joined.join(",").as_bytes())))
            }
        };
        Content { engine: engine.to_string(), checksum }
    }

    /// Insists that `instance` holds exactly this content.
    pub async fn assert_in(&self, instance: &Value) {
        let found = Content::of(&self.engine, instance).await;
        assert_eq!(found, *self, "instance {} holds other data", instance["id"]);
    }
}

/// Writes `ROWS` rows whose values depend on `generation`, replacing those of another generation.
async fn write_rows(engine: &str, instance: &Value, generation: u32) {
    let (port, password) = port_and_password(instance);
    match engine {
        "mysql" => {
            let mut conn = mysql_connect(port, "root", &password).await.unwrap();
            for statement in [
                "CREATE DATABASE IF NOT EXISTS shop",
                "CREATE TABLE IF NOT EXISTS shop.t (id INT PRIMARY KEY, v VARCHAR(64) NOT NULL)",
            ] {
                sqlx::query(statement).execute(&mut conn).await.unwrap();
            }
            // MariaDB stops a recursive query at 1000 iterations unless told otherwise.
            sqlx::query("SET SESSION max_recursive_iterations = 1000000").execute(&mut conn).await.unwrap();
            sqlx::query(
                "REPLACE INTO shop.t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) \
                 SELECT n, MD5(CONCAT(n, '-', ?)) FROM s",
            )
            .bind(ROWS)
            .bind(generation)
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.ok();
        }
        "postgres" => {
            let database = instance["database"].as_str().unwrap_or("app");
            let mut conn = postgres_connect(port, &password, database).await.unwrap();
            sqlx::query("CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, v TEXT NOT NULL)")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO t SELECT g, md5(g || '-' || $2) FROM generate_series(1, $1) g \
                 ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
            )
            .bind(ROWS as i32)
            .bind(generation.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.ok();
        }
        _ => {
            let mut conn = redis_connect(port, &password).await.unwrap();
            let mut pipe = redis::pipe();
            for i in 0..ROWS {
                pipe.cmd("SET").arg(format!("k:{i}")).arg(format!("v:{i}:{generation}")).ignore();
            }
            let _: () = pipe.query_async(&mut conn).await.unwrap();
        }
    }
}
