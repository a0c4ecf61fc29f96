//! The master key that encrypts instance passwords: never silently replaced when the store holds
//! passwords, refused when it cannot decrypt them, and one record it cannot decrypt never fails
//! a list.

use dbroker::app::App;
use dbroker::model::{EngineSettings, InstanceId, MemoryMb, Status};
use dbroker::secrets::{MasterKey, Secret};
use dbroker::store::{NewInstanceRecord, Store};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ALICE, TestApp, port_and_password, redis_connect};

/// Starting dbroker on the app's data directory as it is now fails; the error, with its causes.
async fn start_up_error(app: &TestApp) -> String {
    match App::build(app.config.clone()).await {
        Ok(_) => panic!("start-up was not refused"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn a_store_with_passwords_and_no_master_key_refuses_to_start_saying_what_to_restore() {
    let mut app = TestApp::spawn().await;
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
    let key = app.config.data_dir.join("master.key");
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
    let store = Store::open(&app.config.database_url).await.unwrap();
    let alice = store.user_by_name(ALICE).await.unwrap().expect("alice");
    let other_key = MasterKey::load(Some(&"22".repeat(32)), &app.config.data_dir, false).unwrap();
    let stray = InstanceId::random();
    store
        .insert_instance(&NewInstanceRecord {
            id: &stray,
            node_id: dbroker::store::Node::LOCAL,
            owner_id: Some(alice.id),
            name: &"stray".parse().unwrap(),
            settings: &EngineSettings::Redis,
            version: "7.0",
            image: &crate::helpers::image("redis"),
            memory_mb: MemoryMb(32),
            port: app.config.port_range.last,
            username: None,
            password_enc: &other_key.encrypt(&Secret::generate_password()),
            status: Status::Stopped,
            template_image: None,
        })
        .await
        .unwrap();
    drop(store);

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
