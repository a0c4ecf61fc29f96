//! Creates that cannot succeed say why and leave nothing behind; shutdown finishes what is in flight.

use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use dbroker::model::Engine;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    ALICE, PrefixGuard, TestApp, TestStore, docker, free_port, image, unique_name, wait_for_api, wait_until,
};

#[tokio::test]
async fn a_missing_image_that_cannot_be_pulled_is_503_naming_the_image_and_its_flag() {
    let app =
        TestApp::spawn_with(|c| c.catalogue.set_default_image(Engine::Mysql, "dbroker-local/no-such-image:0".into()))
            .await;

    let (status, body) = app.post("/v1/instances", ALICE, json!({"engine": "mysql"})).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("dbroker-local/no-such-image:0"), "{detail}");
    assert!(detail.contains("--mysql-image"), "{detail}");
    assert!(app.containers().await.is_empty());
    let (_, list) = app.get("/v1/instances", ALICE).await;
    assert_eq!(list, json!({"instances": []}));
}

#[tokio::test]
async fn a_server_that_exits_at_start_is_an_error_with_its_last_logs_and_leaves_nothing_behind() {
    // The Redis image as MySQL's: redis-server refuses MySQL's server options and exits.
    let app = TestApp::spawn_with(|c| c.catalogue.set_default_image(Engine::Mysql, image("redis"))).await;

    let (status, body) = app.post("/v1/instances", ALICE, json!({"engine": "mysql", "charset": "latin1"})).await;

    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("did not become ready"), "{body}");
    let logs = body["last_logs"].as_array().expect("the server's last log lines");
    assert!(logs.iter().any(|l| l.as_str().unwrap().contains("character-set-server")), "{logs:?}");
    assert!(app.containers().await.is_empty(), "no container left");
    assert!(app.volumes().await.is_empty(), "no volume left");
    let (_, list) = app.get("/v1/instances", ALICE).await;
    assert_eq!(list, json!({"instances": []}), "no record left");
    let next = app.create(ALICE, json!({"engine": "redis"})).await;
    assert_eq!(next["connection"]["port"], app.config.port_range.first, "the port was released");
}

#[tokio::test]
async fn containers_are_capped_isolated_labelled_and_published_only_on_the_publish_ip() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;

    let inspect =
        docker().await.inspect_container(&app.container_of(&instance), None::<InspectContainerOptions>).await.unwrap();

    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.memory_swap, Some(64 * 1024 * 1024));
    assert!(host.pids_limit.unwrap_or(0) > 0, "a pids limit");
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_string()]));
    assert_eq!(host.restart_policy.unwrap().name.unwrap().to_string(), "unless-stopped");
    assert!(host.binds.unwrap_or_default().is_empty(), "no bind mounts, so no Docker socket");
    assert!(host.network_mode.as_deref() != Some("host") && host.pid_mode.as_deref().unwrap_or("") != "host");
    let bindings = host.port_bindings.unwrap();
    let binding = &bindings["6379/tcp"].as_ref().unwrap()[0];
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    let mounts = inspect.mounts.unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].destination.as_deref(), Some("/data"));
    assert_eq!(mounts[0].name.as_deref(), Some(format!("{}-data", app.container_of(&instance)).as_str()));
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels["dbroker.instance"], instance["id"].as_str().unwrap());
    assert_eq!(labels["dbroker.engine"], "redis");
    assert!(labels.contains_key("dbroker.owner"));
}

#[tokio::test]
async fn sigterm_lets_a_create_in_flight_finish_before_dbroker_exits() {
    let prefix = unique_name("dbt-sigterm");
    let _cleanup = PrefixGuard(prefix.clone());
    let store = TestStore::new().await;
    let (mut command, base) = store.serve(&prefix, ALICE, free_port());
    let mut server = command.spawn().unwrap();
    let client = reqwest::Client::new();
    wait_for_api(&base).await;

    let create = tokio::spawn({
        let client = client.clone();
        let base = base.clone();
        async move {
            let response = client
                .post(format!("{base}/v1/instances"))
                .header("Authorization", ALICE)
                // A fresh store knows no collations of the image yet: this create starts the
                // image's server once to list them, which takes seconds, so it is surely in flight.
                .json(&json!({"engine": "mysql", "charset": "latin1"}))
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<serde_json::Value>().await.unwrap())
        }
    });
    // SIGTERM once the create is seen in flight: its container exists, its server initialises.
    wait_until("the create to be in flight", Duration::from_secs(60), || async {
        let filters = std::collections::HashMap::from([("label", vec![format!("dbroker.prefix={prefix}")])]);
        let options =
            bollard::query_parameters::ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let containers = docker().await.list_containers(Some(options)).await.ok()?;
        (!containers.is_empty()).then_some(())
    })
    .await;
    let terminated = std::process::Command::new("kill").args(["-TERM", &server.id().unwrap().to_string()]).status();
    assert!(terminated.unwrap().success());
    let (status, instance) = create.await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), server.wait()).await.expect("dbroker exits").unwrap();

    assert_eq!(status, StatusCode::CREATED, "the create in flight finished: {instance}");
    assert!(exit.success(), "a clean exit: {exit:?}");
    let port = instance["connection"]["port"].as_u64().unwrap() as u16;
    let password = instance["connection"]["password"].as_str().unwrap();
    assert!(crate::helpers::mysql_connect(port, "root", password).await.is_ok(), "the instance works");
}

#[tokio::test]
async fn a_slow_create_blocks_no_other_request_and_ends_in_a_timeout_that_leaves_nothing_behind() {
    // Redis's image as MySQL's, with no MySQL options: redis-server runs happily but nothing ever
    // answers on MySQL's port, so this create waits for its whole ready timeout.
    let app = TestApp::spawn_with(|c| {
        c.catalogue.set_default_image(Engine::Mysql, image("redis"));
        c.ready_timeout = Duration::from_secs(8);
    })
    .await;
    let slow = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url("/v1/instances"));
        async move {
            let response =
                client.post(url).header("Authorization", ALICE).json(&json!({"engine": "mysql"})).send().await.unwrap();
            (response.status(), response.json::<serde_json::Value>().await.unwrap())
        }
    });

    let other_user = app.create(crate::helpers::BOB, json!({"engine": "redis"})).await;
    let (list_status, _) = app.get("/v1/instances", ALICE).await;

    assert_eq!(other_user["status"], "running");
    assert_eq!(list_status, StatusCode::OK);
    assert!(!slow.is_finished(), "Bob's create and Alice's list finished while the slow create still waits");
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("not ready within"), "{body}");
    assert_eq!(app.containers().await.len(), 1, "only Bob's container is left");
    let (_, alice_list) = app.get("/v1/instances", ALICE).await;
    assert_eq!(alice_list, json!({"instances": []}));
}
