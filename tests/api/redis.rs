//! Redis instances through v1 and the old routes, logged into with a real client.

use std::time::Duration;

use bollard::query_parameters::{InspectContainerOptions, RestartContainerOptions};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ALICE, TestApp, docker, port_and_password, redis_connect, redis_loaded, wait_until};

#[tokio::test]
async fn a_redis_instance_from_v1_accepts_its_password_and_refuses_another() {
    let app = TestApp::spawn().await;

    let instance = app.create(ALICE, json!({"engine": "redis", "name": "cache"})).await;

    let (port, password) = port_and_password(&instance);
    assert_eq!(instance["status"], "running");
    assert_eq!(instance["name"], "cache");
    assert_eq!(instance["engine"], "redis");
    assert_eq!(instance["memory_mb"], 500, "the old tool's default");
    assert!(password.len() >= 24, "a strong password: {password}");
    assert_eq!(instance["connection"]["uri"], format!("redis://:{password}@127.0.0.1:{port}/0"));
    let mut conn = redis_connect(port, &password).await.expect("the returned password works");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.expect("PING");
    assert_eq!(pong, "PONG");
    assert!(redis_connect(port, "wrong-password").await.is_err(), "a wrong password is refused");
}

#[tokio::test]
async fn the_old_redis_route_takes_memory_as_a_string_and_caps_the_container_and_redis() {
    let app = TestApp::spawn().await;

    let (status, body) = app.post("/redis", ALICE, json!({"memory": "400"})).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["code"], 200);
    assert_eq!(body["msg"], "success");
    let data = &body["data"];
    assert_eq!(data["host"], "127.0.0.1");
    assert!(data.get("user").is_none(), "Redis has no user: {data}");
    let port = data["port"].as_u64().unwrap() as u16;
    let password = data["pwd"].as_str().expect("pwd is a string now");
    let id = data["dockerId"].as_str().unwrap();
    assert_eq!(id.len(), 12);

    let inspect = docker()
        .await
        .inspect_container(&format!("{}-{id}", app.config.instance_prefix), None::<InspectContainerOptions>)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(400 * 1024 * 1024));
    assert_eq!(host.memory_swap, host.memory, "swap is off");
    let mut conn = redis_connect(port, password).await.expect("login");
    let (_, maxmemory): (String, u64) =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory").query_async(&mut conn).await.unwrap();
    assert!(maxmemory > 0 && maxmemory < 400 * 1024 * 1024, "maxmemory {maxmemory} is below the cap");
}

#[tokio::test]
async fn a_redis_key_survives_a_container_restart_and_a_dbroker_restart() {
    let mut app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (port, password) = port_and_password(&instance);
    let mut conn = redis_connect(port, &password).await.unwrap();
    let _: () = redis::cmd("SET").arg("greeting").arg("hello").query_async(&mut conn).await.unwrap();

    docker().await.restart_container(&app.container_of(&instance), None::<RestartContainerOptions>).await.unwrap();
    let mut conn =
        wait_until("Redis back after a restart", Duration::from_secs(60), || redis_loaded(port, &password)).await;
    let after_container_restart: String = redis::cmd("GET").arg("greeting").query_async(&mut conn).await.unwrap();

    app.restart().await;
    let (status, detail) = app.get(&format!("/v1/instances/{}", instance["id"].as_str().unwrap()), ALICE).await;
    assert_eq!(status, StatusCode::OK);
    let (port_after, password_after) = port_and_password(&detail);
    let mut conn = redis_connect(port_after, &password_after).await.expect("the same credentials work");
    let after_dbroker_restart: String = redis::cmd("GET").arg("greeting").query_async(&mut conn).await.unwrap();

    assert_eq!(after_container_restart, "hello");
    assert_eq!((port_after, password_after), (port, password));
    assert_eq!(after_dbroker_restart, "hello");
}
