//! Running an instance day to day: stop, start, restart, resize, rotate, logs and events, each
//! keeping the data written before it; and a status that tells the truth when a server dies.

use std::time::Duration;

use bollard::query_parameters::RestartContainerOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, Row};

use crate::helpers::{
    ALICE, BOB, TestApp, docker, kill_server_process, memory_cap, mysql_connect, port_and_password, redis_connect,
    redis_loaded, wait_until, write_mysql_row,
};

const DEADLINE: Duration = Duration::from_secs(60);

async fn redis_get(port: u16, password: &str, key: &str) -> Option<String> {
    let mut conn = redis_connect(port, password).await.expect("login");
    redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap()
}

async fn redis_set(port: u16, password: &str, key: &str, value: &str) {
    let mut conn = redis_connect(port, password).await.expect("login");
    let _: () = redis::cmd("SET").arg(key).arg(value).query_async(&mut conn).await.unwrap();
}

async fn action(app: &TestApp, instance: &Value, verb: &str) -> Value {
    let (status, body) =
        app.post(&format!("/v1/instances/{}/{verb}", instance["id"].as_str().unwrap()), ALICE, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{verb}: {body}");
    body
}

#[tokio::test]
async fn stop_and_start_keep_port_credentials_and_data_and_are_recorded_as_events() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (port, password) = port_and_password(&instance);
    redis_set(port, &password, "k", "before-stop").await;

    let stopped = action(&app, &instance, "stop").await;
    let refused_while_stopped = redis_connect(port, &password).await.is_err();
    let started = action(&app, &instance, "start").await;

    assert_eq!(stopped["status"], "stopped");
    assert!(refused_while_stopped, "a stopped instance serves nobody");
    assert_eq!(started["status"], "running");
    assert_eq!(port_and_password(&started), (port, password.clone()), "same port and credentials");
    assert_eq!(redis_get(port, &password, "k").await.as_deref(), Some("before-stop"));
    let kinds = app.event_kinds(ALICE, &instance).await;
    assert_eq!(kinds, ["created", "ready", "stopped", "started"]);
    let (_, events) = app.get(&format!("/v1/instances/{}/events", instance["id"].as_str().unwrap()), ALICE).await;
    assert_eq!(events["events"][2]["actor"], ALICE, "who asked is recorded");
}

#[tokio::test]
async fn restart_keeps_a_mysql_row_and_returns_once_ready() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "mysql"})).await;
    let (port, password) = port_and_password(&instance);
    write_mysql_row(port, &password).await;

    let restarted = action(&app, &instance, "restart").await;

    assert_eq!(restarted["status"], "running");
    let mut conn = mysql_connect(port, "root", &password).await.expect("ready when restart answers");
    let row = sqlx::query("SELECT v FROM keep.t").fetch_one(&mut conn).await.unwrap();
    assert_eq!(row.get::<String, _>(0), "row");
    conn.close().await.ok();
}

#[tokio::test]
async fn resize_changes_the_container_cap_and_redis_maxmemory_in_place_and_keeps_them_after_a_restart() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let (port, password) = port_and_password(&instance);
    redis_set(port, &password, "k", "kept").await;
    let id = instance["id"].as_str().unwrap();

    let (status, resized) = app.patch(&format!("/v1/instances/{id}"), ALICE, json!({"memory_mb": 128})).await;
    let (too_small, body) = app.patch(&format!("/v1/instances/{id}"), ALICE, json!({"memory_mb": 4})).await;
    let (unknown_field, _) = app.patch(&format!("/v1/instances/{id}"), ALICE, json!({"image": "x"})).await;

    assert_eq!(status, StatusCode::OK, "{resized}");
    assert_eq!(resized["memory_mb"], 128);
    assert_eq!(too_small, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(unknown_field, StatusCode::UNPROCESSABLE_ENTITY);
    let container = app.container_of(&instance);
    assert_eq!(memory_cap(&container).await, Some(128 * 1024 * 1024));
    let maxmemory = |port: u16, password: String| async move {
        let mut conn = redis_connect(port, &password).await.unwrap();
        let (_, value): (String, u64) =
            redis::cmd("CONFIG").arg("GET").arg("maxmemory").query_async(&mut conn).await.unwrap();
        value
    };
    assert_eq!(maxmemory(port, password.clone()).await, 96 * 1024 * 1024, "75% of the new cap, live");
    docker().await.restart_container(&container, None::<RestartContainerOptions>).await.unwrap();
    wait_until("Redis back", DEADLINE, || redis_loaded(port, &password)).await;
    assert_eq!(maxmemory(port, password.clone()).await, 96 * 1024 * 1024, "and after a restart");
    assert_eq!(redis_get(port, &password, "k").await.as_deref(), Some("kept"));
    assert!(app.event_kinds(ALICE, &instance).await.contains(&"resized".to_string()));
}

#[tokio::test]
async fn a_rotated_redis_password_works_at_once_the_old_is_refused_and_a_restart_keeps_it_so() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (port, old) = port_and_password(&instance);
    redis_set(port, &old, "k", "kept").await;

    let rotated = action(&app, &instance, "rotate-password").await;

    let (_, new) = port_and_password(&rotated);
    assert_ne!(new, old);
    assert!(redis_connect(port, &old).await.is_err(), "the old password is refused");
    assert_eq!(redis_get(port, &new, "k").await.as_deref(), Some("kept"));
    assert_eq!(port_and_password(&app.detail(ALICE, &instance).await).1, new, "the store has the new one");
    docker().await.restart_container(&app.container_of(&instance), None::<RestartContainerOptions>).await.unwrap();
    wait_until("Redis back with the new password", DEADLINE, || redis_loaded(port, &new)).await;
    assert!(redis_connect(port, &old).await.is_err(), "a restart does not bring the old password back");
}

#[tokio::test]
async fn a_rotated_mysql_password_works_at_once_and_the_old_is_refused() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "mysql"})).await;
    let (port, old) = port_and_password(&instance);

    let rotated = action(&app, &instance, "rotate-password").await;

    let (_, new) = port_and_password(&rotated);
    assert!(mysql_connect(port, "root", &old).await.is_err(), "the old password is refused");
    mysql_connect(port, "root", &new).await.expect("the new password works").close().await.ok();
    assert!(app.event_kinds(ALICE, &instance).await.contains(&"rotated".to_string()));
}

#[tokio::test]
async fn operations_on_another_users_instance_are_404_and_on_a_stopped_one_409_where_they_make_no_sense() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let id = instance["id"].as_str().unwrap();

    let mut bob_statuses = Vec::new();
    for verb in ["stop", "start", "restart", "rotate-password"] {
        bob_statuses.push(app.post(&format!("/v1/instances/{id}/{verb}"), BOB, json!({})).await.0);
    }
    bob_statuses.push(app.patch(&format!("/v1/instances/{id}"), BOB, json!({"memory_mb": 64})).await.0);
    bob_statuses.push(app.get(&format!("/v1/instances/{id}/logs"), BOB).await.0);
    bob_statuses.push(app.get(&format!("/v1/instances/{id}/events"), BOB).await.0);
    action(&app, &instance, "stop").await;
    let (rotate_stopped, body) = app.post(&format!("/v1/instances/{id}/rotate-password"), ALICE, json!({})).await;

    assert!(bob_statuses.iter().all(|s| *s == StatusCode::NOT_FOUND), "{bob_statuses:?}");
    assert_eq!(rotate_stopped, StatusCode::CONFLICT);
    assert!(body["detail"].as_str().unwrap().contains("stopped"), "{body}");
}

#[tokio::test]
async fn logs_return_the_servers_last_lines() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (_, password) = port_and_password(&instance);

    let (status, body) =
        app.get(&format!("/v1/instances/{}/logs?tail=3", instance["id"].as_str().unwrap()), ALICE).await;

    assert_eq!(status, StatusCode::OK);
    let lines = body["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 3, "{lines:?}");
    assert!(lines.iter().any(|l| l.as_str().unwrap().contains("Ready to accept connections")), "{lines:?}");
    assert!(!body.to_string().contains(&password));
}

#[tokio::test]
async fn a_killed_server_shows_as_exited_with_its_exit_code_and_comes_back_with_its_data() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (port, password) = port_and_password(&instance);
    redis_set(port, &password, "k", "kept").await;

    kill_server_process(&app.container_of(&instance)).await;

    // The history keeps what happened; Docker's restart policy brings the server back, and the
    // status follows once it accepts logins again.
    let events = wait_until("the exit to be recorded", DEADLINE, || async {
        let (_, body) = app.get(&format!("/v1/instances/{}/events", instance["id"].as_str().unwrap()), ALICE).await;
        let events = body["events"].as_array().unwrap().clone();
        events.iter().any(|e| e["kind"] == "exited").then_some(events)
    })
    .await;
    wait_until("the restart to be recorded", DEADLINE, || async {
        let kinds = app.event_kinds(ALICE, &instance).await;
        (kinds.last().map(String::as_str) == Some("started")).then_some(())
    })
    .await;
    assert_eq!(app.detail(ALICE, &instance).await["status"], "running");
    let exited = events.iter().find(|e| e["kind"] == "exited").unwrap();
    assert!(exited["detail"].as_str().unwrap().contains("137"), "SIGKILL's exit code: {exited}");
    assert_eq!(redis_get(port, &password, "k").await.as_deref(), Some("kept"));
}

#[tokio::test]
async fn a_stopped_redis_resized_starts_with_the_new_maxmemory() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let (port, password) = port_and_password(&instance);
    action(&app, &instance, "stop").await;

    let (status, body) = app
        .patch(&format!("/v1/instances/{}", instance["id"].as_str().unwrap()), ALICE, json!({"memory_mb": 200}))
        .await;
    action(&app, &instance, "start").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(memory_cap(&app.container_of(&instance)).await, Some(200 * 1024 * 1024));
    let mut conn = redis_connect(port, &password).await.expect("the same password after the restart");
    let (_, maxmemory): (String, u64) =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory").query_async(&mut conn).await.unwrap();
    assert_eq!(maxmemory, 150 * 1024 * 1024, "75% of the new cap, from the rewritten file");
}

#[tokio::test]
async fn the_logs_of_an_instance_without_a_container_are_409_saying_why_not_500() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let container = app.container_of(&instance);
    // Container and volume removed behind dbroker's back: the reconciler marks it failed.
    let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
    docker().await.remove_container(&container, Some(options)).await.unwrap();
    docker()
        .await
        .remove_volume(&format!("{container}-data"), None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
        .unwrap();
    wait_until("the instance to be marked failed", DEADLINE, || async {
        (app.detail(ALICE, &instance).await["status"] == "failed").then_some(())
    })
    .await;

    let (status, body) = app.get(&format!("/v1/instances/{}/logs", instance["id"].as_str().unwrap()), ALICE).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("no container"), "{body}");
}

#[tokio::test]
async fn a_shrink_below_what_redis_holds_is_409_with_its_usage_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let (port, password) = port_and_password(&instance);
    let mut conn = redis_connect(port, &password).await.unwrap();
    let megabyte = "x".repeat(1024 * 1024);
    for key in 0..34 {
        let _: () = redis::cmd("SET").arg(format!("k{key}")).arg(&megabyte).query_async(&mut conn).await.unwrap();
    }
    let maxmemory_before: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory").query_async(&mut conn).await.unwrap();

    let id = instance["id"].as_str().unwrap();
    let (status, body) = app.patch(&format!("/v1/instances/{id}"), ALICE, json!({"memory_mb": 16})).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("MiB of data"), "it says how much it holds: {body}");
    let maxmemory_after: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory").query_async(&mut conn).await.unwrap();
    assert_eq!(maxmemory_after, maxmemory_before, "Redis's own limit is unchanged");
    let _: () = redis::cmd("SET").arg("still").arg("writable").query_async(&mut conn).await.unwrap();
    assert_eq!(app.detail(ALICE, &instance).await["memory_mb"], 64);
    assert_eq!(memory_cap(&app.container_of(&instance)).await, Some(64 * 1024 * 1024));
}

#[tokio::test]
async fn events_are_paged_with_limit_and_before_oldest_first_within_a_page() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    for verb in ["stop", "start", "rotate-password"] {
        action(&app, &instance, verb).await;
    }
    let events = format!("/v1/instances/{}/events", instance["id"].as_str().unwrap());
    let kinds = |page: &Value| -> Vec<String> {
        page["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
    };

    let (_, latest) = app.get(&format!("{events}?limit=2"), ALICE).await;
    let (_, older) = app.get(&format!("{events}?limit=2&before={}", latest["next"]), ALICE).await;
    let (_, oldest) = app.get(&format!("{events}?limit=2&before={}", older["next"]), ALICE).await;
    let (too_many, refused) = app.get(&format!("{events}?limit=100000"), ALICE).await;

    assert_eq!(kinds(&latest), ["started", "rotated"], "{latest}");
    assert_eq!(kinds(&older), ["ready", "stopped"], "{older}");
    assert_eq!(kinds(&oldest), ["created"], "{oldest}");
    assert!(oldest["next"].is_null(), "the first page of the history has no older one: {oldest}");
    assert_eq!(too_many, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
}

#[tokio::test]
async fn events_and_ended_operations_past_the_retention_are_forgotten() {
    let app = TestApp::spawn_with(|c| c.history_retention = Duration::from_secs(2)).await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let id = instance["id"].as_str().unwrap();

    wait_until("the history to be forgotten", DEADLINE, || async {
        let (_, events) = app.get(&format!("/v1/instances/{id}/events"), ALICE).await;
        let (_, operations) = app.get(&format!("/v1/instances/{id}/operations"), ALICE).await;
        let forgotten = events["events"] == json!([]) && operations["operations"] == json!([]);
        forgotten.then_some(())
    })
    .await;

    assert_eq!(app.detail(ALICE, &instance).await["status"], "running", "the instance itself is kept");
}
