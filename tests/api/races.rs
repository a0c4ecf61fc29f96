//! Faults in the middle of a change: clients that hang up, two processes racing one change,
//! dbroker killed mid-way, a repair that hangs, a second deployment on the same engine, and an
//! adopt that cannot start its container. None of them may leave an instance locked out, an
//! orphan behind, or another deployment's containers touched.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptions,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::AsyncWriteExt;

use crate::helpers::{
    ALICE, BOB, PrefixGuard, TestApp, TestStore, docker, free_port, image, mysql_connect, port_and_password,
    redis_connect, step_names, unique_name, wait_for_api, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// The delays after which a client hangs up or dbroker is killed: at once, within the first
/// steps, and later.
const DELAYS_MS: [u64; 5] = [0, 1, 5, 20, 100];

fn id_of(value: &Value) -> &str {
    value["id"].as_str().unwrap_or_else(|| panic!("an id in {value}"))
}

async fn redis_set(port: u16, password: &str, key: &str, value: &str) {
    let mut conn = redis_connect(port, password).await.expect("login");
    let _: () = redis::cmd("SET").arg(key).arg(value).query_async(&mut conn).await.unwrap();
}

/// Logs in with `password`, insists on PONG, and returns the value of `key`.
async fn ping_and_get(port: u16, password: &str, key: &str, what: &str) -> Option<String> {
    let mut conn =
        redis_connect(port, password).await.unwrap_or_else(|e| panic!("{what}: the stored password is refused: {e}"));
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG", "{what}");
    redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap()
}

async fn action(app: &TestApp, instance_id: &str, verb: &str) -> Value {
    let (status, body) = app.post(&format!("/v1/instances/{instance_id}/{verb}"), ALICE, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{verb}: {body}");
    body
}

/// Sends a request as Alice over a socket of its own and hangs up `after` its last byte, without
/// reading a byte of the answer.
async fn hang_up_after(app: &TestApp, method: &str, path: &str, body: &str, after: Duration) {
    let host = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(host).await.expect("dbroker accepts a connection");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.expect("the request is sent");
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
    drop(socket);
}

/// Changes a Redis instance's password behind dbroker's back, live and in its configuration file,
/// then stops its container through Docker: the reconciler starts it again and waits for a
/// password that no longer works.
async fn break_behind_dbrokers_back(app: &TestApp, instance: &Value) {
    let (port, password) = port_and_password(instance);
    let mut conn = redis_connect(port, &password).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("not-what-dbroker-stored")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG").arg("REWRITE").query_async(&mut conn).await.unwrap();
    drop(conn);
    docker().await.stop_container(&app.container_of(instance), None::<StopContainerOptions>).await.unwrap();
}

/// Waits until a repair operation runs on the instance, and returns its id.
async fn running_repair(app: &TestApp, instance_id: &str) -> String {
    wait_until("a repair to run on the broken instance", DEADLINE, || async {
        let (_, instance) = app.get(&format!("/v1/instances/{instance_id}"), ALICE).await;
        let operation = instance["running_operation"].as_str()?.to_string();
        let (_, running) = app.get(&format!("/v1/operations/{operation}"), ALICE).await;
        (running["kind"] == "repair").then_some(operation)
    })
    .await
}

/// Whether a container exists and runs.
async fn is_running(container: &str) -> bool {
    match docker().await.inspect_container(container, None::<InspectContainerOptions>).await {
        Ok(inspect) => inspect.state.and_then(|s| s.running).unwrap_or(false),
        Err(_) => false,
    }
}

/// The reconciler's passes so far, as an admin of `app` reads them.
async fn passes(app: &TestApp, admin: &str) -> u64 {
    let (status, report) = app.get("/v1/admin/reconciler", admin).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report["passes"].as_u64().unwrap_or_else(|| panic!("a count of passes: {report}"))
}

/// Whether the admin quarantine of `app` lists `container`.
async fn quarantine_lists(app: &TestApp, admin: &str, container: &str) -> bool {
    let (status, body) = app.get("/v1/admin/quarantine", admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["containers"].as_array().unwrap().iter().any(|c| c["container"] == container)
}

/// Waits for the operation of a request that was hung up on (one not in `before`) to end, and
/// returns it; if none ends in time, fails with what the instance and its operations show.
async fn hung_up_operation(app: &TestApp, id: &str, kind: &str, before: &HashSet<String>, what: &str) -> Value {
    let ended = wait_until(what, 2 * DEADLINE, || async {
        let operations = app.operations(ALICE, id).await;
        let operation = operations.into_iter().find(|o| o["kind"] == kind && !before.contains(id_of(o)))?;
        matches!(operation["state"].as_str(), Some("succeeded" | "failed")).then_some(operation)
    });
    match tokio::time::timeout(DEADLINE, ended).await {
        Ok(operation) => operation,
        Err(_) => {
            let (_, instance) = app.get(&format!("/v1/instances/{id}"), ALICE).await;
            let operations: Vec<(Value, Value)> =
                app.operations(ALICE, id).await.iter().map(|o| (o["kind"].clone(), o["state"].clone())).collect();
            panic!(
                "{what}: no {kind} operation of it ended within {DEADLINE:?}, the request was dropped; the instance \
                 is {} and its operations, newest first, are {operations:?}",
                instance["status"]
            )
        }
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_during_a_change_leaves_the_instance_consistent_and_usable() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let id = id_of(&instance).to_string();
    let (port, password) = port_and_password(&instance);
    redis_set(port, &password, "k", "kept").await;
    let mut memory = 64;

    for (verb, kind) in [
        ("rotate-password", "rotate"),
        ("stop", "stop"),
        ("start", "start"),
        ("restart", "restart"),
        ("resize", "resize"),
    ] {
        for ms in DELAYS_MS {
            let what = format!("a {verb} hung up after {ms} ms");
            if verb == "start" {
                action(&app, &id, "stop").await;
            }
            let (method, path, body) = if verb == "resize" {
                memory = if memory == 64 { 96 } else { 64 };
                ("PATCH", format!("/v1/instances/{id}"), json!({"memory_mb": memory}).to_string())
            } else {
                ("POST", format!("/v1/instances/{id}/{verb}"), "{}".to_string())
            };
            let before: HashSet<String> =
                app.operations(ALICE, &id).await.iter().map(|o| id_of(o).to_string()).collect();

            hang_up_after(&app, method, &path, &body, Duration::from_millis(ms)).await;

            // The change runs to its end although nobody waits for its answer.
            let operation = hung_up_operation(&app, &id, kind, &before, &what).await;
            let settled = app.settled(ALICE, &id).await;
            assert_eq!(operation["state"], "succeeded", "{what}: {operation}");
            let expected = if verb == "stop" { "stopped" } else { "running" };
            assert_eq!(settled["status"], expected, "{what}: {settled}");
            assert_eq!(settled["memory_mb"], memory, "{what}: {settled}");
            if expected == "running" {
                let (port, password) = port_and_password(&settled);
                assert_eq!(ping_and_get(port, &password, "k", &what).await.as_deref(), Some("kept"), "{what}");
            } else {
                action(&app, &id, "start").await;
            }
        }
    }

    // Deletes, last: one instance for each delay, the one changed above the last of them.
    let mut doomed = Vec::new();
    for _ in 1..DELAYS_MS.len() {
        doomed.push(app.create(ALICE, json!({"engine": "redis", "memory_mb": 32})).await);
    }
    doomed.push(instance.clone());
    for (target, ms) in doomed.iter().zip(DELAYS_MS) {
        let target_id = id_of(target);
        let container = app.container_of(target);

        hang_up_after(&app, "DELETE", &format!("/v1/instances/{target_id}"), "", Duration::from_millis(ms)).await;

        wait_until(&format!("the delete hung up after {ms} ms to finish"), DEADLINE, || async {
            let (status, _) = app.get(&format!("/v1/instances/{target_id}"), ALICE).await;
            let containers = app.containers().await;
            let volumes = app.volumes().await;
            let gone = status == StatusCode::NOT_FOUND
                && !containers.iter().any(|c| c.trim_start_matches('/') == container)
                && !volumes.iter().any(|v| v.starts_with(&container));
            gone.then_some(())
        })
        .await;
    }
    assert!(app.containers().await.is_empty(), "no container left");
    assert!(app.volumes().await.is_empty(), "no volume left");
}

#[tokio::test]
async fn two_processes_racing_the_same_rotation_on_one_instance_never_both_succeed_and_never_lock_out() {
    let first = TestApp::spawn().await;
    let second = first.spawn_sibling().await;
    let instance = first.create(ALICE, json!({"engine": "redis"})).await;
    let id = id_of(&instance).to_string();
    let (port, mut stored) = port_and_password(&instance);
    redis_set(port, &stored, "k", "kept").await;
    let path = format!("/v1/instances/{id}/rotate-password");
    let mut conflicts = 0;

    for round in 0..20 {
        let ((a, a_body), (b, b_body)) =
            tokio::join!(first.post(&path, ALICE, json!({})), second.post(&path, ALICE, json!({})));

        let what = format!("round {round}: {a} {a_body} / {b} {b_body}");
        for (status, body) in [(a, &a_body), (b, &b_body)] {
            assert!(status == StatusCode::OK || status == StatusCode::CONFLICT, "{what}");
            if status == StatusCode::CONFLICT {
                assert!(body["operation"].is_string(), "the 409 names the operation that won: {what}");
            }
        }
        let settled = first.settled(ALICE, &id).await;
        let (_, now) = port_and_password(&settled);
        let winners: Vec<String> = [(a, &a_body), (b, &b_body)]
            .into_iter()
            .filter(|(s, _)| *s == StatusCode::OK)
            .map(|(_, body)| port_and_password(body).1)
            .collect();
        if winners.len() == 2 {
            // On a busy machine one may end before the other is even asked for: then both
            // succeed, one after the other, and the later one's password is the one that works.
            assert!(winners.contains(&now), "the stored password is one of the two: {what}");
            let earlier = winners.iter().find(|w| **w != now).expect("two passwords");
            assert!(redis_connect(port, earlier).await.is_err(), "the earlier password is refused: {what}");
        } else {
            conflicts += 1;
        }
        if !winners.is_empty() {
            assert!(winners.contains(&now), "the winner's password is the stored one: {what}");
            assert_ne!(now, stored, "{what}");
            assert!(redis_connect(port, &stored).await.is_err(), "the previous password is refused: {what}");
        }
        assert_eq!(ping_and_get(port, &now, "k", &what).await.as_deref(), Some("kept"));
        stored = now;
    }
    assert!(conflicts > 0, "the two processes never raced: no round had a 409");
}

// ---------------------------------------------------------------------------------------------
// dbroker as real processes, killed with SIGKILL.

/// `dbroker serve` on `store` with the offline Redis image too, a 2 s operation lease and a
/// reconciler pass a second: the process (killed when dropped) and its API's base URL.
fn serve(store: &TestStore, prefix: &str, first_port: u16) -> (tokio::process::Child, String) {
    let (mut command, base) = store.serve(prefix, ALICE, first_port);
    command
        .env("DBROKER_REDIS_IMAGE", image("redis"))
        .env("DBROKER_OPERATION_LEASE", "2")
        .env("DBROKER_RECONCILE_INTERVAL", "1");
    (command.spawn().expect("dbroker starts"), base)
}

/// Kills the process with SIGKILL, as the OOM killer or a crash would, and reaps it.
async fn kill(server: &mut tokio::process::Child) {
    server.start_kill().expect("SIGKILL is sent");
    server.wait().await.expect("the process is reaped");
}

async fn get_json(client: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let response = client.get(url).header("Authorization", ALICE).send().await.expect("an answer");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the instance has no running operation on the dbroker at `base`, and returns it.
async fn settled_at(client: &reqwest::Client, base: &str, instance_id: &str, deadline: Duration) -> Value {
    wait_until(&format!("instance {instance_id} to have no running operation"), deadline, || async {
        let (status, instance) = get_json(client, format!("{base}/v1/instances/{instance_id}")).await;
        assert_eq!(status, StatusCode::OK, "{instance}");
        instance.get("running_operation").is_none_or(Value::is_null).then_some(instance)
    })
    .await
}

/// The containers labelled as the instance's, under `prefix`.
async fn containers_of(prefix: &str, instance_id: &str) -> Vec<String> {
    let labels = vec![format!("dbroker.prefix={prefix}"), format!("dbroker.instance={instance_id}")];
    let filters = HashMap::from([("label", labels)]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    let containers = docker().await.list_containers(Some(options)).await.unwrap();
    containers.into_iter().flat_map(|c| c.names.unwrap_or_default()).collect()
}

/// The volumes named after the instance, under `prefix`.
async fn volumes_of(prefix: &str, instance_id: &str) -> Vec<String> {
    let filters = HashMap::from([("name", vec![format!("{prefix}-{instance_id}")])]);
    let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
    let volumes = docker().await.list_volumes(Some(options)).await.unwrap();
    volumes.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect()
}

#[tokio::test]
async fn sigkill_during_a_rotation_then_a_restart_leaves_no_lockout() {
    let prefix = unique_name("dbt-rotkill");
    let _cleanup = PrefixGuard(prefix.clone());
    let store = TestStore::new().await;
    let first_port = free_port();
    let client = reqwest::Client::new();
    let (mut server, mut base) = serve(&store, &prefix, first_port);
    wait_for_api(&base).await;
    let response = client
        .post(format!("{base}/v1/instances"))
        .header("Authorization", ALICE)
        .json(&json!({"engine": "redis"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let instance: Value = response.json().await.unwrap();
    let id = id_of(&instance).to_string();
    let (port, password) = port_and_password(&instance);
    redis_set(port, &password, "k", "kept").await;

    for ms in [0, 2, 5, 10, 30] {
        let what = format!("dbroker killed {ms} ms into a rotation");
        let rotation = tokio::spawn(
            client
                .post(format!("{base}/v1/instances/{id}/rotate-password"))
                .header("Authorization", ALICE)
                .json(&json!({}))
                .send(),
        );
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        kill(&mut server).await;
        let _ = rotation.await; // answered or not: the kill may come before or after its end
        (server, base) = serve(&store, &prefix, first_port);
        wait_for_api(&base).await;

        // The lease of the killed process's operation expires, and the new one takes it over.
        let settled = settled_at(&client, &base, &id, DEADLINE).await;

        assert_eq!(settled["status"], "running", "{what}: {settled}");
        let (port, password) = port_and_password(&settled);
        assert_eq!(ping_and_get(port, &password, "k", &what).await.as_deref(), Some("kept"), "{what}");
    }
    drop(server);
}

#[tokio::test]
async fn sigkill_at_each_step_of_a_create_then_a_restart_leaves_no_orphan() {
    let prefix = unique_name("dbt-createkill");
    let _cleanup = PrefixGuard(prefix.clone());
    let store = TestStore::new().await;
    let first_port = free_port();
    let client = reqwest::Client::new();
    let (mut server, mut base) = serve(&store, &prefix, first_port);
    wait_for_api(&base).await;

    // `None`: at once after the 202, when the image is (about to be) ready.
    for step in [None, Some("container created"), Some("started")] {
        let what = format!("dbroker killed at {}", step.unwrap_or("the 202"));
        let response = client
            .post(format!("{base}/v1/instances"))
            .header("Authorization", ALICE)
            .header("Prefer", "respond-async")
            .json(&json!({"engine": "mysql"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{what}");
        let operation: Value = response.json().await.unwrap();
        let operation_id = id_of(&operation).to_string();
        let instance_id = operation["instance_id"].as_str().expect("the operation names its instance").to_string();
        if let Some(step) = step {
            wait_until(&format!("the create to reach {step:?}"), Duration::from_secs(120), || async {
                let (_, operation) = get_json(&client, format!("{base}/v1/operations/{operation_id}")).await;
                step_names(&operation).iter().any(|s| s == step).then_some(())
            })
            .await;
        }
        kill(&mut server).await;
        (server, base) = serve(&store, &prefix, first_port);
        wait_for_api(&base).await;

        // The lease of the killed process's operation expires, and the new one takes it over: it
        // finishes the create or rolls it back.
        let operation = wait_until(&format!("{what}: the create to end"), Duration::from_secs(180), || async {
            let (status, operation) = get_json(&client, format!("{base}/v1/operations/{operation_id}")).await;
            assert_eq!(status, StatusCode::OK, "{what}: {operation}");
            matches!(operation["state"].as_str(), Some("succeeded" | "failed")).then_some(operation)
        })
        .await;
        let (status, instance) = get_json(&client, format!("{base}/v1/instances/{instance_id}")).await;

        let containers = containers_of(&prefix, &instance_id).await;
        let volumes = volumes_of(&prefix, &instance_id).await;
        if operation["state"] == "succeeded" {
            assert_eq!(status, StatusCode::OK, "{what}: {instance}");
            // A repair may look at the instance a moment longer (and find nothing to do).
            let instance = settled_at(&client, &base, &instance_id, DEADLINE).await;
            assert_eq!(instance["status"], "running", "{what}: {instance}");
            assert_eq!(containers.len(), 1, "{what}: one container: {containers:?}");
            let (port, password) = port_and_password(&instance);
            mysql_connect(port, "root", &password)
                .await
                .unwrap_or_else(|e| panic!("{what}: the finished create refuses its password: {e}"))
                .close()
                .await
                .ok();
        } else {
            assert!(containers.is_empty(), "{what}: no orphan container: {containers:?}");
            assert!(volumes.is_empty(), "{what}: no orphan volume: {volumes:?}");
            // The record of a rolled-back create, if one was written, says so and holds no port.
            if status != StatusCode::NOT_FOUND {
                assert_eq!(status, StatusCode::OK, "{what}: {instance}");
                assert_eq!(instance["status"], "failed", "{what}: {instance}");
                assert!(instance.get("running_operation").is_none_or(Value::is_null), "{what}: {instance}");
                assert!(
                    instance["connection"]["port"].is_null(),
                    "{what}: the failed create holds no port: {instance}"
                );
            }
        }
    }
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// Repairs that hang, and deployments that share an engine.

#[tokio::test]
async fn a_create_that_finishes_during_a_slow_repair_is_never_touched() {
    let app = TestApp::spawn_with(|c| {
        c.ready_timeout = Duration::from_secs(20);
        c.quotas.instances = 16; // one user's 1 + 15: more than the default quota
    })
    .await;
    let admin = app.add_admin("root").await;
    let broken = app.create(ALICE, json!({"engine": "redis", "memory_mb": 32})).await;
    let broken_id = id_of(&broken).to_string();
    break_behind_dbrokers_back(&app, &broken).await;
    running_repair(&app, &broken_id).await;

    let mut created = Vec::new();
    for _ in 0..5 {
        let creates = (0..3).map(|_| app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 32})));
        for (status, instance) in futures_util::future::join_all(creates).await {
            assert_eq!(status, StatusCode::CREATED, "{instance}");
            created.push(instance);
        }
    }
    // The broken instance's repair fails, and is tried again and fails again (or it is set aside
    // as needing attention): passes of the reconciler have come and gone with the new instances
    // there.
    wait_until("the broken instance's repair to be tried twice", Duration::from_secs(300), || async {
        let (_, now) = app.get(&format!("/v1/instances/{broken_id}"), ALICE).await;
        let operations = app.operations(ALICE, &broken_id).await;
        let ended = |o: &&Value| o["kind"] == "repair" && matches!(o["state"].as_str(), Some("succeeded" | "failed"));
        let repairs = operations.iter().filter(ended).count();
        (repairs >= 2 || now["needs_attention"].is_string()).then_some(())
    })
    .await;

    assert_eq!(created.len(), 15);
    for instance in &created {
        let id = id_of(instance);
        let what = format!("instance {id}, created during the repair");
        let now = app.detail(ALICE, instance).await;
        assert_eq!(now["status"], "running", "{what}: {now}");
        assert!(is_running(&app.container_of(instance)).await, "{what}: its container runs");
        let (port, password) = port_and_password(&now);
        assert_eq!(ping_and_get(port, &password, "absent", &what).await, None);
        let kinds: Vec<Value> = app.operations(ALICE, id).await.iter().map(|o| o["kind"].clone()).collect();
        assert_eq!(kinds, [json!("create")], "{what}: nothing but its create ever ran on it");
        assert!(!quarantine_lists(&app, &admin, &app.container_of(instance)).await, "{what}: never quarantined");
    }
}

#[tokio::test]
async fn a_broken_instance_does_not_delay_the_repair_of_another() {
    let app = TestApp::spawn_with(|c| c.ready_timeout = Duration::from_secs(30)).await;
    let broken = app.create(ALICE, json!({"engine": "redis", "memory_mb": 32})).await;
    let other = app.create(ALICE, json!({"engine": "redis", "memory_mb": 32})).await;
    let (port, password) = port_and_password(&other);
    redis_set(port, &password, "k", "kept").await;
    break_behind_dbrokers_back(&app, &broken).await;
    let repair = running_repair(&app, id_of(&broken)).await;

    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    docker().await.remove_container(&app.container_of(&other), Some(options)).await.expect("the container is removed");

    let mut conn = wait_until("the other instance to be recreated", DEADLINE, || async {
        redis_connect(port, &password).await.ok()
    })
    .await;
    let still = app.detail(ALICE, &broken).await;

    assert_eq!(still["running_operation"], repair.as_str(), "the broken one's repair still runs: {still}");
    let value: Option<String> = redis::cmd("GET").arg("k").query_async(&mut conn).await.unwrap();
    assert_eq!(value.as_deref(), Some("kept"), "recreated from its volume");
    let settled = app.settled(ALICE, id_of(&other)).await;
    assert_eq!(settled["status"], "running", "{settled}");
}

#[tokio::test]
async fn a_second_deployment_with_the_same_prefix_leaves_the_first_deployments_containers_running() {
    let first = TestApp::spawn().await;
    let first_admin = first.add_admin("root").await;
    let instance = first.create(ALICE, json!({"engine": "redis"})).await;
    let (port, password) = port_and_password(&instance);
    redis_set(port, &password, "k", "kept").await;
    let container = first.container_of(&instance);

    // Declared after the first, so dropped before it: the first cleans the prefix up, last.
    let second = first.spawn_sharing_prefix().await;
    let admin = second.add_admin("root").await;
    wait_until("three passes of the second deployment's reconciler", DEADLINE, || async {
        (passes(&second, &admin).await >= 3).then_some(())
    })
    .await;

    assert!(is_running(&container).await, "the first deployment's container runs");
    assert_eq!(ping_and_get(port, &password, "k", "the first's instance").await.as_deref(), Some("kept"));
    assert!(!quarantine_lists(&second, &admin, &container).await, "the second quarantined nothing of the first's");
    let (_, quarantine) = second.get("/v1/admin/quarantine", &admin).await;
    assert_eq!(quarantine["containers"], json!([]), "{quarantine}");
    assert!(!quarantine_lists(&first, &first_admin, &container).await);
    assert_eq!(first.detail(ALICE, &instance).await["status"], "running");
    let kinds: Vec<Value> = first.operations(ALICE, id_of(&instance)).await.iter().map(|o| o["kind"].clone()).collect();
    assert_eq!(kinds, [json!("create")], "nothing was repaired: nothing was touched");
    let (_, seconds) = second.get("/v1/instances", ALICE).await;
    assert_eq!(seconds, json!({"instances": []}));
}

#[tokio::test]
async fn a_failed_adopt_keeps_the_quarantined_container_and_its_volume() {
    let app = TestApp::spawn().await;
    let admin = app.add_admin("root").await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let (port, password) = port_and_password(&instance);
    redis_set(port, &password, "k", "precious").await;
    app.lose_records(&[&instance]).await;
    let container = app.container_of(&instance);
    let volume = format!("{container}-data");
    wait_until("the container to be quarantined and stopped", DEADLINE, || async {
        (quarantine_lists(&app, &admin, &container).await && !is_running(&container).await).then_some(())
    })
    .await;
    // Its port taken on the host: its container cannot start.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the test holds the instance's port");
    let adopt = format!("/v1/admin/quarantine/{container}/adopt");

    let (refused, body) = app.post(&adopt, &admin, json!({"owner": BOB})).await;
    let after_the_refusal = passes(&app, &admin).await;
    wait_until("three more reconciler passes", DEADLINE, || async {
        (passes(&app, &admin).await >= after_the_refusal + 3).then_some(())
    })
    .await;

    assert!(refused.is_client_error() || refused.is_server_error(), "the adopt fails: {refused} {body}");
    assert!(app.containers().await.iter().any(|c| c.trim_start_matches('/') == container), "the container is kept");
    assert!(app.volumes().await.contains(&volume), "its volume is kept");
    assert!(quarantine_lists(&app, &admin, &container).await, "still in the quarantine");
    let (_, bobs) = app.get("/v1/instances", BOB).await;
    assert_eq!(bobs, json!({"instances": []}), "no record left of the failed adopt");
    drop(squatter);
    let (adopted, body) = app.post(&adopt, &admin, json!({"owner": BOB})).await;
    assert_eq!(adopted, StatusCode::CREATED, "with its port free, the adopt goes through: {body}");
    assert_eq!(ping_and_get(port, &password, "k", "the adopted instance").await.as_deref(), Some("precious"));
    assert!(!quarantine_lists(&app, &admin, &container).await, "out of the quarantine");
}
