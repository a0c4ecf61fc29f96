//! The master key that encrypts instance passwords: never silently replaced when the store holds
//! passwords, refused when it cannot decrypt them, and one record it cannot decrypt never fails
//! a list. A key file given is used and only read; a store shared by replicas needs one given.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dbroker::app::App;
use dbroker::model::{EngineSettings, InstanceId, MemoryMb, Status};
use dbroker::secrets::{KeySource, MasterKey, Secret};
use dbroker::store::{NewInstanceRecord, Store};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    ALICE, Backend, TestApp, dbroker_serve, free_port, port_and_password, redis_connect, unique_name,
};

/// How long a `dbroker serve` that refuses to start may take to say so: it stops before the
/// Docker engine is asked anything.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(30);

/// A key file in `dir` holding `hex_key`, private to this user as dbroker asks.
pub fn key_file(dir: &Path, name: &str, hex_key: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{hex_key}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `dbroker serve` on `data_dir`, its command changed by `change`, which must refuse to start:
/// what it said on stderr.
async fn serve_refusal(data_dir: &Path, change: impl FnOnce(&mut tokio::process::Command)) -> String {
    let (mut command, _base) = dbroker_serve(data_dir, &unique_name("dbt-key"), ALICE, free_port());
    command.env_remove("DBROKER_MASTER_KEY").env_remove("DBROKER_MASTER_KEY_FILE").stderr(Stdio::piped());
    change(&mut command);
    let output = tokio::time::timeout(REFUSAL_DEADLINE, command.output())
        .await
        .expect("dbroker serve refused within the deadline")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "dbroker serve started: {stderr}");
    stderr
}

/// A stopped Redis record of alice's, its password encrypted with `key`, written straight to the store.
async fn insert_record(app: &TestApp, key: &MasterKey, name: &str) -> InstanceId {
    let store = Store::open(&app.config.database_url).await.unwrap();
    let alice = store.user_by_name(ALICE).await.unwrap().expect("alice");
    let id = InstanceId::random();
    store
        .insert_instance(&NewInstanceRecord {
            id: &id,
            node_id: dbroker::store::Node::LOCAL,
            owner_id: Some(alice.id),
            name: &name.parse().unwrap(),
            settings: &EngineSettings::Redis,
            version: "7.0",
            image: &crate::helpers::image("redis"),
            memory_mb: MemoryMb(32),
            port: app.config.port_range.last,
            username: None,
            password_enc: &key.encrypt(&Secret::generate_password()),
            status: Status::Stopped,
            template_image: None,
        })
        .await
        .unwrap();
    id
}

/// Starting dbroker on the app's data directory as it is now fails; the error, with its causes.
async fn start_up_error(app: &TestApp) -> String {
    match App::build(app.config.clone()).await {
        Ok(_) => panic!("start-up was not refused"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn a_store_with_passwords_and_no_master_key_refuses_to_start_saying_what_to_restore() {
    // The data directory's key is SQLite's: a shared store refuses to start with no key given at all
    // (`dbroker_serve_on_a_postgresql_store_without_a_given_key_refuses_...`).
    let mut app = TestApp::spawn_on(Backend::Sqlite, |_| {}).await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    app.stop().await;
    let key = app.config.data_dir.join("master.key");
    let kept = app.config.data_dir.join("master.key.moved");
    std::fs::rename(&key, &kept).unwrap();

    let error = start_up_error(&app).await;

    assert!(error.contains("no master key") && error.contains("restore"), "{error}");
    assert!(error.contains("master.key"), "it names the file: {error}");
    assert!(!key.exists(), "no new key was made");
    std::fs::rename(&kept, &key).unwrap();
    app.restart().await;
    let (port, password) = port_and_password(&app.detail(ALICE, &instance).await);
    assert!(redis_connect(port, &password).await.is_ok(), "with the key back, all is as it was");
}

#[tokio::test]
async fn a_master_key_that_cannot_decrypt_the_store_refuses_to_start() {
    let mut app = TestApp::spawn().await;
    app.create(ALICE, json!({"engine": "redis"})).await;
    app.stop().await;
    let key = match &app.config.master_key {
        KeySource::File(path) => path.clone(),
        _ => app.config.data_dir.join("master.key"),
    };
    let original = std::fs::read(&key).unwrap();
    std::fs::write(&key, "11".repeat(32)).unwrap();

    let error = start_up_error(&app).await;

    assert!(error.contains("does not decrypt") && error.contains("Restore that key"), "{error}");
    std::fs::write(&key, original).unwrap();
    app.restart().await;
    let (status, _) = app.get("/v1/instances", ALICE).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn one_record_the_master_key_cannot_decrypt_does_not_fail_a_list_and_needs_attention() {
    let mut app = TestApp::spawn().await;
    let good = app.create(ALICE, json!({"engine": "redis"})).await;
    app.stop().await;
    // A record made under another key, as a dbroker that made itself a new key would have left.
    let other_key = MasterKey::from_hex(&"22".repeat(32), "a test").unwrap();
    let stray = insert_record(&app, &other_key, "stray").await;

    app.restart().await;
    let (status, listed) = app.get("/v1/instances", ALICE).await;
    let (legacy, old_list) = app.get("/list/2", ALICE).await;
    let (detail, stray_detail) = app.get(&format!("/v1/instances/{stray}"), ALICE).await;

    assert_eq!(status, StatusCode::OK, "{listed}");
    let instances = listed["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{listed}");
    let shown = instances.iter().find(|i| i["id"] == stray.as_str()).expect("the stray record is listed");
    assert!(shown["needs_attention"].as_str().unwrap().contains("master key"), "{shown}");
    assert!(shown["connection"]["password"].is_null(), "{shown}");
    let (port, password) = port_and_password(instances.iter().find(|i| i["id"] == good["id"]).unwrap());
    assert!(redis_connect(port, &password).await.is_ok(), "the other instance is as it was");
    assert_eq!(legacy, StatusCode::OK, "{old_list}");
    assert_eq!(detail, StatusCode::OK, "{stray_detail}");
    assert!(stray_detail["needs_attention"].as_str().unwrap().contains("master key"), "{stray_detail}");
}

#[tokio::test]
async fn a_master_key_file_is_the_key_across_restarts_and_no_master_key_is_made_in_the_data_directory() {
    let keys = tempfile::tempdir().unwrap();
    let file = key_file(keys.path(), "master.key", &"5a".repeat(32));
    let mut app = TestApp::spawn_with(|c| c.master_key = KeySource::File(file.clone())).await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;

    app.restart().await;

    let (port, password) = port_and_password(&app.detail(ALICE, &instance).await);
    assert!(redis_connect(port, &password).await.is_ok(), "the password decrypts after a restart");
    let store = Store::open(&app.config.database_url).await.unwrap();
    let stored = store.oldest_password().await.unwrap().expect("a stored password");
    let from_file = MasterKey::from_hex(&"5a".repeat(32), "the test's key").unwrap();
    assert_eq!(from_file.decrypt(&stored).unwrap().expose(), password, "it is the file's key that encrypts");
    assert!(!app.config.data_dir.join("master.key").exists(), "no key was made in the data directory");
}

#[tokio::test]
async fn a_master_key_file_that_cannot_decrypt_the_store_refuses_to_start_naming_the_file() {
    let keys = tempfile::tempdir().unwrap();
    let right = key_file(keys.path(), "right.key", &"5a".repeat(32));
    let wrong = key_file(keys.path(), "wrong.key", &"a5".repeat(32));
    let mut app = TestApp::spawn_with(|c| c.master_key = KeySource::File(right.clone())).await;
    app.stop().await;
    insert_record(&app, &MasterKey::load(&app.config.master_key, &app.config.data_dir, false).unwrap(), "kept").await;
    app.config.master_key = KeySource::File(wrong.clone());

    let error = start_up_error(&app).await;

    assert!(error.contains("does not decrypt") && error.contains(&wrong.display().to_string()), "{error}");
    app.config.master_key = KeySource::File(right);
    app.restart().await;
    let (status, listed) = app.get("/v1/instances", ALICE).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
}

#[tokio::test]
async fn dbroker_serve_refuses_a_key_file_others_may_read_given_by_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = key_file(dir.path(), "open.key", &"5a".repeat(32));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();

    let refusal = serve_refusal(&dir.path().join("data"), |c| {
        c.env("DBROKER_MASTER_KEY_FILE", &file);
    })
    .await;

    assert!(refusal.contains(&format!("chmod 600 {}", file.display())), "{refusal}");
}

/// The refusal comes before the store is opened, so it holds whatever answers at the URL: here,
/// nothing does.
#[tokio::test]
async fn dbroker_serve_on_a_postgresql_store_without_a_given_key_refuses_saying_how_to_make_one_and_makes_none() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    let refusal = serve_refusal(&data_dir, |c| {
        c.env("DBROKER_DATABASE_URL", format!("postgres://dbroker@127.0.0.1:{}/dbroker", free_port()));
    })
    .await;

    assert!(refusal.contains("openssl rand -hex 32") && refusal.contains("every replica"), "{refusal}");
    assert!(!data_dir.join("master.key").exists(), "no key was made");
}
