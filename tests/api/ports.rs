//! Port leases: distinct under concurrency, busy host ports skipped, freed on delete, 503 when
//! none is left.

use std::collections::HashSet;
use std::net::TcpListener;

use dbroker::config::PortRange;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ALICE, TestApp, port_and_password, redis_connect};

#[tokio::test]
async fn twenty_concurrent_redis_creates_are_all_ready_on_distinct_ports() {
    // Twenty of one user's: more than the default quota of instances.
    let app = TestApp::spawn_with(|c| c.quotas.instances = 20).await;

    let creates = (0..20).map(|_| app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 32})));
    let answers = futures_util::future::join_all(creates).await;

    let mut ports = HashSet::new();
    for (status, instance) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{instance}");
        let (port, password) = port_and_password(instance);
        assert!(app.config.port_range.iter().any(|p| p == port), "{port} is in the range");
        let mut conn = redis_connect(port, &password).await.expect("each instance accepts its own password");
        let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        ports.insert(port);
    }
    assert_eq!(ports.len(), 20, "every instance has a port of its own");
}

#[tokio::test]
async fn a_port_busy_on_the_host_is_skipped() {
    let app = TestApp::spawn().await;
    let first = app.config.port_range.first;
    let _squatter = TcpListener::bind(("127.0.0.1", first)).expect("the test holds the first port");

    let instance = app.create(ALICE, json!({"engine": "redis"})).await;

    let (port, password) = port_and_password(&instance);
    assert_ne!(port, first);
    assert!(redis_connect(port, &password).await.is_ok());
}

#[tokio::test]
async fn delete_removes_container_and_volume_and_frees_the_port_for_reuse() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (port, _) = port_and_password(&instance);
    let id = instance["id"].as_str().unwrap();
    assert_eq!(app.containers().await.len(), 1);
    assert_eq!(app.volumes().await.len(), 1);

    let (status, body) = app.delete(&format!("/v1/instances/{id}"), ALICE).await;

    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(app.containers().await.is_empty(), "the container is gone");
    assert!(app.volumes().await.is_empty(), "the volume is gone");
    let (after, _) = app.get(&format!("/v1/instances/{id}"), ALICE).await;
    assert_eq!(after, StatusCode::NOT_FOUND);
    let next = app.create(ALICE, json!({"engine": "redis"})).await;
    assert_eq!(port_and_password(&next).0, port, "the freed port is handed out again");
}

#[tokio::test]
async fn an_exhausted_port_range_is_503_and_leaves_nothing_behind() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let only_port = held.local_addr().unwrap().port();
    let app = TestApp::spawn_with(|c| c.port_range = PortRange { first: only_port, last: only_port }).await;

    let (status, body) = app.post("/v1/instances", ALICE, json!({"engine": "redis"})).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["detail"].as_str().unwrap().contains("every port"), "{body}");
    assert!(app.containers().await.is_empty());
    let (_, list) = app.get("/v1/instances", ALICE).await;
    assert_eq!(list, json!({"instances": []}));
}

#[tokio::test]
async fn a_second_instance_with_the_same_name_is_409_but_another_user_may_use_it() {
    let app = TestApp::spawn().await;
    app.create(ALICE, json!({"engine": "redis", "name": "cache"})).await;

    let (again, body) = app.post("/v1/instances", ALICE, json!({"engine": "redis", "name": "cache"})).await;
    let (bob, _) = app.post("/v1/instances", crate::helpers::BOB, json!({"engine": "redis", "name": "cache"})).await;

    assert_eq!(again, StatusCode::CONFLICT);
    assert!(body["detail"].as_str().unwrap().contains("already have an instance named"), "{body}");
    assert_eq!(bob, StatusCode::CREATED);
    assert_eq!(app.containers().await.len(), 2, "the refused create left no container");
}

#[tokio::test]
async fn two_dbrokers_on_one_data_directory_never_hand_out_the_same_port() {
    let first = TestApp::spawn().await;
    let second = first.spawn_sibling().await;

    let creates = (0..6).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 32}))
    });
    let answers = futures_util::future::join_all(creates).await;

    let mut ports = HashSet::new();
    for (status, instance) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{instance}");
        ports.insert(port_and_password(instance).0);
    }
    assert_eq!(ports.len(), 6, "six instances, six ports");
    let (_, listed) = first.get("/v1/instances", ALICE).await;
    assert_eq!(listed["instances"].as_array().unwrap().len(), 6, "both processes share one store");
}
