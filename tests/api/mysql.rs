//! MySQL instances through v1 and the old routes, logged into with a real client.

use std::time::Duration;

use bollard::query_parameters::RestartContainerOptions;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Row};

use crate::helpers::{ALICE, TestApp, docker, mysql_connect, port_and_password, wait_until};

async fn server_charset(conn: &mut sqlx::MySqlConnection) -> (String, String) {
    let row = sqlx::query("SELECT @@character_set_server, @@collation_server").fetch_one(conn).await.unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_mysql_instance_from_v1_has_the_charset_asked_for_and_refuses_a_wrong_password() {
    let app = TestApp::spawn().await;

    let instance = app.create(ALICE, json!({"engine": "mysql", "charset": "latin1", "memory_mb": 512})).await;

    let (port, password) = port_and_password(&instance);
    assert_eq!(instance["connection"]["user"], "root");
    assert_eq!(instance["memory_mb"], 512);
    assert_eq!(instance["connection"]["uri"], format!("mysql://root:{password}@127.0.0.1:{port}/"));
    let mut conn = mysql_connect(port, "root", &password).await.expect("the returned password works");
    let (charset, _) = server_charset(&mut conn).await;
    assert_eq!(charset, "latin1");
    assert!(mysql_connect(port, "root", "wrong-password").await.is_err(), "a wrong password is refused");
    conn.close().await.ok();
}

#[tokio::test]
async fn the_old_mysql_route_applies_the_old_defaults_and_answers_in_the_envelope() {
    let app = TestApp::spawn().await;

    let (status, body) = app.post("/mysql", ALICE, json!({})).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["code"].clone(), body["msg"].clone()), (json!(200), json!("success")));
    let data = &body["data"];
    assert_eq!(data["user"], "root");
    let port = data["port"].as_u64().unwrap() as u16;
    let mut conn = mysql_connect(port, "root", data["pwd"].as_str().unwrap()).await.expect("login");
    let (charset, collation) = server_charset(&mut conn).await;
    // MariaDB and MySQL 8 report the old `utf8` by its new name, utf8mb3.
    assert!(charset == "utf8" || charset == "utf8mb3", "{charset}");
    assert!(collation == "utf8_general_ci" || collation == "utf8mb3_general_ci", "{collation}");
    conn.close().await.ok();

    let (status, detail) = app.get(&format!("/detail/{}", data["dockerId"].as_str().unwrap()), ALICE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["data"], *data, "detail is shaped like the create answer");
    let (_, list) = app.get("/list/1", ALICE).await;
    assert_eq!(list["data"], json!([data]));
    let (_, redis_list) = app.get("/list/2", ALICE).await;
    assert_eq!(redis_list["data"], json!([]));
}

#[tokio::test]
async fn the_old_mysql_route_takes_a_charset_and_its_collection() {
    let app = TestApp::spawn().await;

    let (status, body) = app.post("/mysql", ALICE, json!({"charset": "utf8mb4", "collection": "utf8mb4_bin"})).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let port = body["data"]["port"].as_u64().unwrap() as u16;
    let mut conn = mysql_connect(port, "root", body["data"]["pwd"].as_str().unwrap()).await.unwrap();
    assert_eq!(server_charset(&mut conn).await, ("utf8mb4".to_string(), "utf8mb4_bin".to_string()));
    conn.close().await.ok();
}

#[tokio::test]
async fn a_mysql_row_survives_a_container_restart_and_a_dbroker_restart() {
    let mut app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "mysql"})).await;
    let (port, password) = port_and_password(&instance);
    let mut conn = mysql_connect(port, "root", &password).await.unwrap();
    for statement in [
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT)",
        "INSERT INTO shop.orders VALUES (1, 'teapot')",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.ok();
    let read_item = |mut conn: sqlx::MySqlConnection| async move {
        let row = sqlx::query("SELECT item FROM shop.orders WHERE id = 1").fetch_one(&mut conn).await.unwrap();
        row.get::<String, _>(0)
    };

    docker().await.restart_container(&app.container_of(&instance), None::<RestartContainerOptions>).await.unwrap();
    let conn = wait_until("MySQL back after a restart", Duration::from_secs(120), || async {
        mysql_connect(port, "root", &password).await.ok()
    })
    .await;
    let after_container_restart = read_item(conn).await;

    app.restart().await;
    let (status, detail) = app.get(&format!("/v1/instances/{}", instance["id"].as_str().unwrap()), ALICE).await;
    assert_eq!(status, StatusCode::OK);
    let (port_after, password_after) = port_and_password(&detail);
    let after_dbroker_restart = read_item(mysql_connect(port_after, "root", &password_after).await.unwrap()).await;

    assert_eq!(after_container_restart, "teapot");
    assert_eq!(after_dbroker_restart, "teapot");
}
