//! Backups through the v1 API, on real servers, a real directory target and a real S3 server
//! (`s3`): for each engine, data written, backed up to both, the instance deleted, restored into
//! a new instance with identical content, cloned, exported and loaded by the engine's own client,
//! and imported. Policies, verification, quotas and each fault have tests of their own.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backup_setup::{BackupSetup, Content};
use crate::helpers::{ALICE, TestApp, port_and_password, wait_until};

const BEARER_ALICE: &str = "Bearer alice";

fn id(value: &Value) -> &str {
    value["id"].as_str().unwrap_or_else(|| panic!("an id in {value}"))
}

/// Takes a backup of `instance` to `target` (with `verify` if asked), insisting on 201.
async fn back_up(app: &TestApp, instance: &Value, body: Value) -> Value {
    let (status, backup) = app.post(&format!("/v1/instances/{}/backups", id(instance)), BEARER_ALICE, body).await;
    assert_eq!(status, StatusCode::CREATED, "backup: {backup}");
    assert_eq!(backup["state"], "succeeded", "{backup}");
    backup
}

/// The whole round trip of one engine (see the file's header).
async fn round_trip(engine: &str) {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app().await;
    let source = app.create(ALICE, json!({"engine": engine})).await;
    let content = Content::fill(engine, &source).await;

    let local = back_up(&app, &source, json!({"target": "local"})).await;
    assert_eq!(local["target"], "local");
    assert_eq!(local["encrypted"], true);
    assert_eq!(
        setup.sha256_of_local_object(&local).await,
        local["sha256"].as_str().unwrap(),
        "the recorded sha256 is the stored object's"
    );
    let offsite = back_up(&app, &source, json!({"target": "offsite", "verify": true})).await;
    assert!(offsite["verified_at"].is_string(), "a verified backup says when: {offsite}");
    assert!(offsite.get("verify_error").is_none(), "{offsite}");
    assert!(setup.on_s3(&offsite), "the backup is on the S3 server");

    let (status, clone) = app.post(&format!("/v1/instances/{}/clone", id(&source)), BEARER_ALICE, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "clone: {clone}");
    assert_ne!(port_and_password(&clone).1, port_and_password(&source).1, "a clone has its own password");
    content.assert_in(&clone).await;

    let export = setup.export(&app, &source).await;
    let fresh = app.create(ALICE, json!({"engine": engine})).await;
    setup.load_with_engines_own_client(&app, &fresh, &export).await;
    content.assert_in(&fresh).await;

    let target = app.create(ALICE, json!({"engine": engine})).await;
    let (status, imported) = setup.import(&app, &target, export.clone()).await;
    assert_eq!(status, StatusCode::OK, "import: {imported}");
    content.assert_in(&target).await;

    let (status, _) = app.delete(&format!("/v1/instances/{}", id(&source)), BEARER_ALICE).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, kept) = app.get(&format!("/v1/backups?instance={}", id(&source)), BEARER_ALICE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kept["backups"].as_array().unwrap().len(), 2, "both backups outlive their instance: {kept}");

    for backup in [&local, &offsite] {
        let restored = app.create(ALICE, json!({"engine": engine, "from_backup": id(backup)})).await;
        content.assert_in(&restored).await;
    }
}

#[tokio::test]
async fn a_mysql_instance_round_trips_through_backups_clones_exports_and_imports() {
    round_trip("mysql").await;
}

#[tokio::test]
async fn a_postgres_instance_round_trips_through_backups_clones_exports_and_imports() {
    round_trip("postgres").await;
}

#[tokio::test]
async fn a_redis_instance_round_trips_through_backups_clones_exports_and_imports() {
    round_trip("redis").await;
}

#[tokio::test]
async fn an_in_place_restore_takes_a_safety_backup_and_brings_back_the_backed_up_data() {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let before = Content::fill("redis", &instance).await;
    let backup = back_up(&app, &instance, json!({})).await;
    let after = Content::fill_other("redis", &instance).await;

    let (status, restored) = app
        .post(&format!("/v1/instances/{}/restore", id(&instance)), BEARER_ALICE, json!({"backup": id(&backup)}))
        .await;
    assert_eq!(status, StatusCode::OK, "restore: {restored}");
    before.assert_in(&instance).await;

    let (_, listed) = app.get(&format!("/v1/instances/{}/backups", id(&instance)), BEARER_ALICE).await;
    let safety: Vec<&Value> = listed["backups"].as_array().unwrap().iter().filter(|b| b["kind"] == "safety").collect();
    assert_eq!(safety.len(), 1, "one safety backup: {listed}");
    let back = app.create(ALICE, json!({"engine": "redis", "from_backup": id(safety[0])})).await;
    after.assert_in(&back).await;
}

#[tokio::test]
async fn a_dump_the_server_refuses_is_422_with_its_message_and_leaves_the_data_as_it_was() {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app().await;
    for engine in ["mysql", "postgres"] {
        let instance = app.create(ALICE, json!({"engine": engine})).await;
        let content = Content::fill(engine, &instance).await;
        let (status, problem) = setup.import(&app, &instance, b"THIS IS NOT A DUMP;\n".to_vec()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{engine}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("did not load"), "{engine}: {problem}");
        content.assert_in(&instance).await;
    }
}

#[tokio::test]
async fn an_import_with_no_body_is_422_and_starts_nothing() {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (status, problem) = setup.import(&app, &instance, Vec::new()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("no dump"), "{problem}");
    assert!(app.operations(BEARER_ALICE, id(&instance)).await.iter().all(|o| o["kind"] != "import"));
}

#[tokio::test]
async fn an_import_beyond_the_configured_limit_is_413() {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app_with(|c| BackupSetup::set_import_limit(c, 1024)).await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (status, problem) = setup.import(&app, &instance, vec![b'x'; 4096]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("1024"), "{problem}");
}

#[tokio::test]
async fn a_corrupted_or_truncated_backup_is_refused_before_anything_is_changed() {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let _ = Content::fill("redis", &instance).await;
    for damage in [Damage::FlipAByte, Damage::Truncate] {
        let backup = back_up(&app, &instance, json!({"target": "local"})).await;
        let now = Content::fill_other("redis", &instance).await;
        setup.damage_local_object(&backup, damage).await;
        let (status, problem) = app
            .post(&format!("/v1/instances/{}/restore", id(&instance)), BEARER_ALICE, json!({"backup": id(&backup)}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{damage:?}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("cannot be restored"), "{damage:?}: {problem}");
        now.assert_in(&instance).await;
        let before = app.containers().await.len();
        let (status, problem) =
            app.post("/v1/instances", BEARER_ALICE, json!({"engine": "redis", "from_backup": id(&backup)})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{damage:?}: {problem}");
        assert_eq!(app.containers().await.len(), before, "nothing is left of the refused create");
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Damage {
    FlipAByte,
    Truncate,
}

#[tokio::test]
async fn a_backup_sealed_to_another_key_is_refused_with_a_clear_message() {
    let setup = BackupSetup::new().await;
    let mut app = setup.spawn_app().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let backup = back_up(&app, &instance, json!({"target": "local"})).await;
    app.restart_with(|c| setup.use_another_identity(c)).await;
    let (status, problem) =
        app.post("/v1/instances", BEARER_ALICE, json!({"engine": "redis", "from_backup": id(&backup)})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("key"), "the message names the key: {problem}");
}

#[tokio::test]
async fn an_unreachable_target_or_refused_credentials_fail_the_backup_with_that_reason() {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app_with(|c| setup.add_broken_targets(c)).await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    for (target, reason) in [("nowhere", "cannot be reached"), ("wrong-key", "refused dbroker's credentials")] {
        let (status, problem) = app
            .post(&format!("/v1/instances/{}/backups", id(&instance)), BEARER_ALICE, json!({"target": target}))
            .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{target}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(reason), "{target}: {problem}");
    }
    let (_, listed) = app.get(&format!("/v1/instances/{}/backups", id(&instance)), BEARER_ALICE).await;
    let backups = listed["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "{listed}");
    assert!(backups.iter().all(|b| b["state"] == "failed" && b["reason"].is_string()), "{listed}");
}

#[tokio::test]
async fn a_full_directory_target_fails_the_backup_cleanly() {
    let setup = BackupSetup::new().await;
    let Some(full) = setup.small_filesystem().await else {
        panic!("a small filesystem could not be mounted for the test");
    };
    let app = setup.spawn_app_with(|c| setup.add_dir_target(c, "full", full.path())).await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    Content::fill_large("redis", &instance, 8 * 1024 * 1024).await;
    let (status, problem) =
        app.post(&format!("/v1/instances/{}/backups", id(&instance)), BEARER_ALICE, json!({"target": "full"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("space"), "{problem}");
    assert!(full.is_empty(), "no partial object is left");
}

#[tokio::test]
async fn a_schedule_every_minute_with_keep_last_2_takes_the_third_and_removes_the_first() {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let path = format!("/v1/instances/{}/backup-policy", id(&instance));
    let response = app
        .client
        .put(app.url(&path))
        .header("Authorization", BEARER_ALICE)
        .json(&json!({"schedule": "* * * * *", "keep_last": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let backups_of = || async {
        let (_, listed) = app.get(&format!("/v1/instances/{}/backups", id(&instance)), BEARER_ALICE).await;
        listed["backups"].as_array().unwrap().clone()
    };
    let first = wait_until("the first scheduled backup", Duration::from_secs(150), || async {
        backups_of().await.into_iter().find(|b| b["state"] == "succeeded")
    })
    .await;
    assert_eq!(first["kind"], "scheduled");
    let kept = wait_until("the third scheduled backup, and the first removed", Duration::from_secs(200), || async {
        let backups = backups_of().await;
        let gone = backups.iter().all(|b| b["id"] != first["id"]);
        (gone && backups.len() == 2).then_some(backups)
    })
    .await;
    assert!(kept.iter().all(|b| b["kind"] == "scheduled" && b["state"] == "succeeded"), "{kept:?}");
}

#[tokio::test]
async fn backups_count_against_the_users_backup_quota() {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app_with(|c| c.quotas.backups = 1).await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    back_up(&app, &instance, json!({})).await;
    let (status, problem) =
        app.post(&format!("/v1/instances/{}/backups", id(&instance)), BEARER_ALICE, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let metrics = reqwest::get(format!("{}/metrics", app.metrics_address)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("dbroker_quota_backups_held 1"), "{metrics}");
}
