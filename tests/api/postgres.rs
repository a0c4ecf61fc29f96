//! PostgreSQL instances through v1 and the old-style route, logged into with a real client.

use std::time::Duration;

use bollard::query_parameters::RestartContainerOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, Row};

use crate::helpers::{ALICE, TestApp, docker, port_and_password, postgres_connect, wait_until};

#[tokio::test]
async fn a_postgres_instance_accepts_its_password_on_its_database_keeps_data_across_restarts_and_is_deleted() {
    let mut app = TestApp::spawn().await;

    let instance = app.create(ALICE, json!({"engine": "postgres", "database": "shop"})).await;

    let (port, password) = port_and_password(&instance);
    assert_eq!(instance["engine"], "postgres");
    assert_eq!(instance["database"], "shop");
    assert_eq!(instance["connection"]["user"], "postgres");
    assert_eq!(instance["connection"]["uri"], format!("postgresql://postgres:{password}@127.0.0.1:{port}/shop"));
    let mut conn = postgres_connect(port, &password, "shop").await.expect("the returned credentials work");
    sqlx::query("CREATE TABLE orders (item TEXT)").execute(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO orders VALUES ('teapot')").execute(&mut conn).await.unwrap();
    conn.close().await.ok();
    assert!(postgres_connect(port, "wrong-password", "shop").await.is_err(), "a wrong password is refused");

    docker().await.restart_container(&app.container_of(&instance), None::<RestartContainerOptions>).await.unwrap();
    let mut conn = wait_until("PostgreSQL back", Duration::from_secs(60), || async {
        postgres_connect(port, &password, "shop").await.ok()
    })
    .await;
    let item: String = sqlx::query("SELECT item FROM orders").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(item, "teapot", "after a container restart");
    conn.close().await.ok();
    app.restart().await;
    let (_, password_after) = port_and_password(&app.detail(ALICE, &instance).await);
    let mut conn = postgres_connect(port, &password_after, "shop").await.expect("after a dbroker restart");
    let item: String = sqlx::query("SELECT item FROM orders").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(item, "teapot");
    conn.close().await.ok();

    let (deleted, _) = app.delete(&format!("/v1/instances/{}", instance["id"].as_str().unwrap()), ALICE).await;
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    assert!(app.containers().await.is_empty() && app.volumes().await.is_empty());
}

#[tokio::test]
async fn the_old_style_postgres_route_answers_in_the_envelope_and_lists_as_type_3() {
    let app = TestApp::spawn().await;

    let (status, body) = app.post("/postgres", ALICE, json!({"memory": "256"})).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let data = &body["data"];
    assert_eq!(data["user"], "postgres");
    assert_eq!(data["database"], "app", "the default database");
    let port = data["port"].as_u64().unwrap() as u16;
    let mut conn = postgres_connect(port, data["pwd"].as_str().unwrap(), "app").await.expect("login");
    let one: i32 = sqlx::query("SELECT 1").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(one, 1);
    conn.close().await.ok();
    let (_, list) = app.get("/list/3", ALICE).await;
    assert_eq!(list["data"], json!([data]));
    let detail: Value = app.detail(ALICE, &json!({"id": data["dockerId"]})).await;
    assert_eq!(detail["memory_mb"], 256);
}

#[tokio::test]
async fn a_rotated_postgres_password_works_at_once_and_the_old_is_refused() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "postgres"})).await;
    let (port, old) = port_and_password(&instance);

    let (status, rotated) = app
        .post(&format!("/v1/instances/{}/rotate-password", instance["id"].as_str().unwrap()), ALICE, json!({}))
        .await;

    assert_eq!(status, StatusCode::OK, "{rotated}");
    let (_, new) = port_and_password(&rotated);
    assert!(postgres_connect(port, &old, "app").await.is_err(), "the old password is refused");
    postgres_connect(port, &new, "app").await.expect("the new password works").close().await.ok();
}
