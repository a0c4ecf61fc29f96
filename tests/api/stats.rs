//! `GET /v1/instances/{id}/stats` against real servers with known content: what each server says
//! of itself, Docker's figures, who may read them, and what a stopped or silent server gives.

use bollard::query_parameters::InspectContainerOptions;
use dbroker::api::{DatabaseSizeView, InstanceStatsView, ServerStatsView};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{ALICE, BOB, TestApp, docker, mysql_connect, port_and_password, postgres_connect, redis_connect};

const MIB: u64 = 1024 * 1024;

fn stats_path(instance: &Value) -> String {
    format!("/v1/instances/{}/stats", instance["id"].as_str().expect("an id"))
}

/// The stats of `instance` as its owner reads them, insisting on 200 and on the documented shape.
async fn stats_of(app: &TestApp, instance: &Value) -> InstanceStatsView {
    let (status, body) = app.get(&stats_path(instance), ALICE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats: InstanceStatsView = serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(stats.id, instance["id"].as_str().unwrap());
    assert_eq!(serde_json::to_value(&stats).unwrap(), body, "the types serialize what they deserialize");
    stats
}

/// Sends `signal` (`STOP`, `CONT`) to the server process of a container from the host.
async fn signal_server(container: &str, signal: &str) {
    let inspect = docker().await.inspect_container(container, None::<InspectContainerOptions>).await.unwrap();
    let pid = inspect.state.and_then(|s| s.pid).expect("a running container has a pid");
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test]
async fn redis_stats_count_the_keys_written_and_a_held_client_and_the_cap_is_memory_mb() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let (port, password) = port_and_password(&instance);
    let mut held = redis_connect(port, &password).await.unwrap();
    for i in 0..25 {
        let _: () = redis::cmd("SET").arg(format!("key-{i}")).arg("value").query_async(&mut held).await.unwrap();
    }

    let stats = stats_of(&app, &instance).await;

    let Some(ServerStatsView::Redis { used_memory_bytes, keys, connected_clients }) = stats.server else {
        panic!("Redis figures: {stats:?}");
    };
    assert_eq!(keys, 25);
    assert!(connected_clients >= 1, "the test's connection counts: {connected_clients}");
    assert!(used_memory_bytes > 0);
    assert_eq!(stats.server_unavailable, None);
    assert_eq!(stats.container.memory_limit_bytes, 64 * MIB, "the cap is the instance's memory_mb");
    assert!(stats.container.memory_used_bytes > 0 && stats.container.memory_used_bytes <= 64 * MIB, "{stats:?}");
    assert!(stats.container.cpu_seconds > 0.0, "the server has run: {stats:?}");
}

#[tokio::test]
async fn mysql_stats_list_a_database_with_rows_by_size_and_count_a_held_connection() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "mysql", "memory_mb": 512})).await;
    let (port, password) = port_and_password(&instance);
    let mut held = mysql_connect(port, "root", &password).await.unwrap();
    for statement in [
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT)",
        "INSERT INTO shop.orders VALUES (1, 'teapot'), (2, 'kettle'), (3, 'cup')",
    ] {
        sqlx::query(statement).execute(&mut held).await.unwrap();
    }

    let stats = stats_of(&app, &instance).await;

    let Some(ServerStatsView::Mysql { connections, databases }) = &stats.server else {
        panic!("MySQL figures: {stats:?}");
    };
    assert!(*connections >= 1, "the test's connection counts: {connections}");
    let shop = databases.iter().find(|d| d.name == "shop").unwrap_or_else(|| panic!("shop in {databases:?}"));
    assert!(shop.bytes > 0, "{databases:?}");
    let system = ["mysql", "sys", "information_schema", "performance_schema"];
    assert!(databases.iter().all(|d| !system.contains(&d.name.as_str())), "not the server's own: {databases:?}");
    assert_eq!(stats.container.memory_limit_bytes, 512 * MIB);
    held.close().await.ok();
}

#[tokio::test]
async fn postgres_stats_report_its_database_growing_with_rows_and_a_held_connection() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "postgres", "database": "shop", "memory_mb": 256})).await;
    let (port, password) = port_and_password(&instance);
    let size = |stats: &InstanceStatsView| match &stats.server {
        Some(ServerStatsView::Postgres { database: DatabaseSizeView { name, bytes }, .. }) if name == "shop" => *bytes,
        other => panic!("PostgreSQL figures of the database shop: {other:?}"),
    };
    let before = size(&stats_of(&app, &instance).await);
    let mut held = postgres_connect(port, &password, "shop").await.unwrap();
    sqlx::query("CREATE TABLE orders (item TEXT)").execute(&mut held).await.unwrap();
    // About 2 MB of rows, written to the table's files as it grows.
    sqlx::query("INSERT INTO orders SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
        .execute(&mut held)
        .await
        .unwrap();

    let stats = stats_of(&app, &instance).await;

    assert!(size(&stats) > before, "{} bytes after the rows, {before} before", size(&stats));
    let Some(ServerStatsView::Postgres { connections, .. }) = stats.server else { unreachable!() };
    assert!(connections >= 1, "the test's connection counts: {connections}");
    assert_eq!(stats.container.memory_limit_bytes, 256 * MIB);
    held.close().await.ok();
}

#[tokio::test]
async fn another_users_stats_are_404_and_a_stopped_instances_are_409_saying_to_start_it() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;

    let (bob, _) = app.get(&stats_path(&instance), BOB).await;
    let (stopped, _) =
        app.post(&format!("/v1/instances/{}/stop", instance["id"].as_str().unwrap()), ALICE, json!({})).await;
    let (status, body) = app.get(&stats_path(&instance), ALICE).await;

    assert_eq!(bob, StatusCode::NOT_FOUND);
    assert_eq!(stopped, StatusCode::OK);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("stopped") && detail.contains("start it"), "{detail}");
}

#[tokio::test]
async fn a_server_that_does_not_answer_leaves_the_docker_figures_and_says_what_is_missing() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let container = app.container_of(&instance);
    // Frozen, not dead: Docker still says it runs, and its port still takes connections, but
    // the server answers nothing.
    signal_server(&container, "STOP").await;

    let (status, body) = app.get(&stats_path(&instance), ALICE).await;

    signal_server(&container, "CONT").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats: InstanceStatsView = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(stats.server, None, "{body}");
    let missing = stats.server_unavailable.expect("a note of what is missing");
    // Why, in the client's words ("timed out", or dbroker's own "no answer within 3s").
    assert!(missing.starts_with("the server's own figures are missing: "), "{missing}");
    assert_eq!(stats.container.memory_limit_bytes, 64 * MIB, "Docker's figures are there");
}
