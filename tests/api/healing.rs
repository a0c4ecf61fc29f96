//! Self-healing against real faults: a container removed behind dbroker's back, a store that lost
//! rows, dbroker killed in the middle of a create, and a Docker engine that goes away.

use std::time::Duration;

use bollard::query_parameters::RemoveContainerOptionsBuilder;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Row};

use crate::helpers::{
    ALICE, BOB, DockerProxy, PrefixGuard, TestApp, TestStore, docker, free_port, mysql_connect, port_and_password,
    redis_connect, unique_name, wait_for_api, wait_until, write_mysql_row,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// Removes a container the way someone at the host would: `docker rm -f`, through the API.
async fn remove_behind_dbrokers_back(container: &str) {
    // `v`: also the anonymous volumes an image's VOLUME lines made; the named data volume stays.
    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    docker().await.remove_container(container, Some(options)).await.expect("the container is removed");
}

#[tokio::test]
async fn a_redis_container_removed_behind_dbrokers_back_comes_back_on_its_port_with_its_data() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (port, password) = port_and_password(&instance);
    let mut conn = redis_connect(port, &password).await.unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("survives").query_async(&mut conn).await.unwrap();

    remove_behind_dbrokers_back(&app.container_of(&instance)).await;

    // Until it has loaded its data, a Redis that accepts connections answers LOADING.
    let value: String = wait_until("the container to be recreated and its data loaded", DEADLINE, || async {
        let mut conn = redis_connect(port, &password).await.ok()?;
        redis::cmd("GET").arg("k").query_async(&mut conn).await.ok()
    })
    .await;
    assert_eq!(value, "survives");
    let kinds = wait_until("the repair to be recorded", DEADLINE, || async {
        let kinds = app.event_kinds(ALICE, &instance).await;
        kinds.contains(&"repaired".to_string()).then_some(kinds)
    })
    .await;
    assert!(kinds.contains(&"repaired".to_string()), "{kinds:?}");
    assert_eq!(app.detail(ALICE, &instance).await["status"], "running");
}

#[tokio::test]
async fn a_mysql_container_removed_behind_dbrokers_back_comes_back_with_its_rows() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "mysql", "charset": "latin1"})).await;
    let (port, password) = port_and_password(&instance);
    write_mysql_row(port, &password).await;

    remove_behind_dbrokers_back(&app.container_of(&instance)).await;

    let mut conn = wait_until("the container to be recreated", Duration::from_secs(120), || async {
        mysql_connect(port, "root", &password).await.ok()
    })
    .await;
    let row = sqlx::query("SELECT v, @@character_set_server FROM keep.t").fetch_one(&mut conn).await.unwrap();
    assert_eq!(row.get::<String, _>(0), "row");
    assert_eq!(row.get::<String, _>(1), "latin1", "recreated with the same server options");
    conn.close().await.ok();
}

#[tokio::test]
async fn a_container_whose_record_was_lost_is_stopped_and_quarantined_never_deleted_and_an_admin_can_adopt_it() {
    let app = TestApp::spawn().await;
    let admin = app.add_admin("root").await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (port, password) = port_and_password(&instance);
    let mut conn = redis_connect(port, &password).await.unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("precious").query_async(&mut conn).await.unwrap();
    drop(conn);

    app.lose_records(&[&instance]).await;

    let container = app.container_of(&instance);
    let quarantined = wait_until("the container to be quarantined", DEADLINE, || async {
        let (_, body) = app.get("/v1/admin/quarantine", &admin).await;
        let listed = body["containers"].as_array()?.iter().any(|c| c["container"] == container.as_str());
        listed.then_some(body)
    })
    .await;
    assert_eq!(quarantined["containers"][0]["instance_id"], instance["id"]);
    assert_eq!(app.containers().await.len(), 1, "the container is kept");
    assert!(redis_connect(port, &password).await.is_err(), "and stopped");
    let (forbidden, _) = app.get("/v1/admin/quarantine", ALICE).await;
    assert_eq!(forbidden, StatusCode::FORBIDDEN, "only admins see the quarantine");

    let (adopted, body) =
        app.post(&format!("/v1/admin/quarantine/{container}/adopt"), &admin, json!({"owner": BOB})).await;

    assert_eq!(adopted, StatusCode::CREATED, "{body}");
    let bobs = app.detail(BOB, &instance).await;
    assert_eq!(bobs["status"], "running");
    assert_eq!(port_and_password(&bobs), (port, password.clone()), "the same port and credentials");
    let mut conn = redis_connect(port, &password).await.expect("the adopted instance works");
    let value: String = redis::cmd("GET").arg("k").query_async(&mut conn).await.unwrap();
    assert_eq!(value, "precious");
    let (_, after) = app.get("/v1/admin/quarantine", &admin).await;
    assert_eq!(after["containers"], json!([]));
}

#[tokio::test]
async fn an_admin_can_remove_a_quarantined_container_with_its_volume() {
    let app = TestApp::spawn().await;
    let admin = app.add_admin("root").await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    app.lose_records(&[&instance]).await;
    let container = app.container_of(&instance);
    wait_until("the container to be quarantined", DEADLINE, || async {
        let (_, body) = app.get("/v1/admin/quarantine", &admin).await;
        (!body["containers"].as_array()?.is_empty()).then_some(())
    })
    .await;

    let (status, _) = app.delete(&format!("/v1/admin/quarantine/{container}"), &admin).await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(app.containers().await.is_empty());
    assert!(app.volumes().await.is_empty());
}

#[tokio::test]
async fn dbroker_killed_during_a_create_leaves_after_a_restart_no_orphan_and_no_leaked_port() {
    let prefix = unique_name("dbt-sigkill");
    let _cleanup = PrefixGuard(prefix.clone());
    let store = TestStore::new().await;
    // Both processes share the data directory and the port range, as a restart would.
    let first_port = free_port();
    let spawn = || {
        let (mut command, base) = store.serve(&prefix, ALICE, first_port);
        (command.env("DBROKER_RECONCILE_INTERVAL", "1").spawn().unwrap(), base)
    };
    let client = reqwest::Client::new();
    let (mut first, first_base) = spawn();
    wait_for_api(&first_base).await;
    let create = tokio::spawn(
        client
            .post(format!("{first_base}/v1/instances"))
            .header("Authorization", ALICE)
            .json(&json!({"engine": "mysql"}))
            .send(),
    );

    // MariaDB's start takes a while: kill dbroker as soon as the instance's container exists (not
    // a container that only looks into the image, made before the record).
    let containers_of = |prefix: String| async move {
        let filters = std::collections::HashMap::from([("label", vec![format!("dbroker.prefix={prefix}")])]);
        let options =
            bollard::query_parameters::ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        docker().await.list_containers(Some(options)).await.unwrap()
    };
    wait_until("the instance's container to be created", DEADLINE, || async {
        let containers = containers_of(prefix.clone()).await;
        containers.iter().any(|c| c.labels.as_ref().is_some_and(|l| l.contains_key("dbroker.instance"))).then_some(())
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    assert!(create.await.unwrap().is_err(), "the create never answered");

    let (_second, second_base) = spawn();
    let instance = wait_until("the interrupted create to be settled", Duration::from_secs(120), || async {
        let response =
            client.get(format!("{second_base}/v1/instances")).header("Authorization", ALICE).send().await.ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        let instance = body["instances"].as_array()?.first()?.clone();
        (instance["status"] == "running" || instance["status"] == "failed").then_some(instance)
    })
    .await;

    let containers = containers_of(prefix.clone()).await;
    if instance["status"] == "running" {
        let (port, password) = port_and_password(&instance);
        assert_eq!(containers.len(), 1);
        mysql_connect(port, "root", &password).await.expect("the finished create works").close().await.ok();
    } else {
        assert!(containers.is_empty(), "no orphan container: {containers:?}");
        assert!(instance["connection"]["port"].is_null(), "the failed create holds no port: {instance}");
        assert!(instance["status_reason"].as_str().unwrap().contains("dbroker stopped during the create"));
    }
}

#[tokio::test]
async fn with_docker_unreachable_creates_are_503_reads_still_answer_and_all_recover_when_it_is_back() {
    let mut proxy = DockerProxy::new();
    proxy.up();
    let host = proxy.host();
    let app = TestApp::spawn_with(|c| c.docker_host = Some(host)).await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;

    proxy.down();
    let (create, body) = app.post("/v1/instances", ALICE, json!({"engine": "redis"})).await;
    let (list, listed) = app.get("/v1/instances", ALICE).await;
    let (detail, _) = app.get(&format!("/v1/instances/{}", instance["id"].as_str().unwrap()), ALICE).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();

    assert_eq!(create, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("unreachable"), "{body}");
    assert_eq!(list, StatusCode::OK);
    assert_eq!(listed["instances"].as_array().unwrap().len(), 1);
    assert_eq!(detail, StatusCode::OK);
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["store"], "ok");
    assert_eq!(health["docker"], "unreachable", "a plain word, no socket path: {health}");

    proxy.up();
    wait_until("healthz to recover", DEADLINE, || async {
        let response = app.client.get(app.url("/healthz")).send().await.ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    let again = app.create(ALICE, json!({"engine": "redis"})).await;
    assert_eq!(again["status"], "running");
}

/// The race behind a repair of a container removed with its volume: the repair sees the volume,
/// the volume goes, then the container is made again. Docker would make an empty volume for it;
/// the runtime notices and leaves nothing, so the repair marks the instance's data lost.
#[tokio::test]
async fn a_container_made_again_on_a_volume_that_is_gone_is_refused_and_leaves_no_empty_volume() {
    use dbroker::runtime::{ContainerSpec, NetworkSpec, Runtime};
    let name = crate::helpers::unique_name("dbt-volume-gone");
    let network = NetworkSpec { name: format!("{name}-net"), labels: Default::default() };
    let _guards = (crate::helpers::ContainerGuard(name.clone()), crate::helpers::PrefixGuard(name.clone()));
    let spec = ContainerSpec {
        name: name.clone(),
        image: crate::helpers::image("redis"),
        env: Vec::new(),
        args: Vec::new(),
        labels: std::collections::HashMap::from([("dbroker.prefix".to_string(), name.clone())]),
        volume: format!("{name}-data"),
        data_path: "/data".into(),
        container_port: 6379,
        publish_ip: "127.0.0.1".parse().unwrap(),
        host_port: crate::helpers::free_port(),
        memory_bytes: 64 * 1024 * 1024,
        cpu_shares: 1024,
        nano_cpus: None,
        files: Vec::new(),
        network: network.clone(),
        capabilities: &["SETGID", "SETUID"],
    };
    let runtime = Runtime::new(None);

    let made = runtime.create_on_existing_volume(&spec).await.unwrap();

    assert!(!made, "no container on a volume Docker made just now");
    assert!(!runtime.volume_exists(&spec.volume).await.unwrap(), "and no empty volume left");
    let docker = crate::helpers::docker().await;
    let gone = docker.inspect_container(&name, None::<bollard::query_parameters::InspectContainerOptions>).await;
    assert!(gone.is_err(), "and no container left");
    crate::helpers::remove_networks(std::collections::HashMap::from([("name", vec![network.name])])).await;
}
