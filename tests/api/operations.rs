//! Every change is an operation: answered at once with `Prefer: respond-async` and followed to its
//! end, shown to its owner and admins only, listed per instance newest first, one at a time per
//! instance, and replayed rather than repeated under an idempotency key.

use std::collections::HashSet;

use dbroker::model::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

use std::time::Duration;

use crate::helpers::{
    ALICE, BOB, TestApp, image, mysql_connect, port_and_password, redis_connect, step_names, unique_name, wait_until,
};

fn id_of(value: &Value) -> &str {
    value["id"].as_str().unwrap_or_else(|| panic!("an id in {value}"))
}

/// The kinds of a page of operations, in the order listed.
fn kinds(page: &Value) -> Vec<String> {
    let operations = page["operations"].as_array().unwrap_or_else(|| panic!("a list of operations: {page}"));
    operations.iter().map(|o| o["kind"].as_str().unwrap().to_string()).collect()
}

async fn ping(port: u16, password: &str) -> String {
    let mut conn = redis_connect(port, password).await.expect("the stored password is accepted");
    redis::cmd("PING").query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn prefer_respond_async_answers_202_with_a_location_and_the_operation_which_then_succeeds() {
    let app = TestApp::spawn().await;

    let accepted = app.send_async(Method::POST, "/v1/instances", ALICE, Some(json!({"engine": "redis"}))).await;
    let created = app.operation_outcome(ALICE, id_of(&accepted)).await;

    assert_eq!(accepted["kind"], "create", "{accepted}");
    assert!(matches!(accepted["state"].as_str(), Some("pending" | "running")), "answered before it ran: {accepted}");
    assert_eq!(accepted["requested_by"], ALICE, "{accepted}");
    assert_eq!(created["state"], "succeeded", "{created}");
    assert!(created["finished_at"].is_string(), "{created}");
    assert!(created.get("error").is_none_or(Value::is_null), "{created}");
    let steps = step_names(&created);
    let positions: Vec<usize> = ["image ready", "container created", "started", "ready"]
        .iter()
        .map(|step| steps.iter().position(|s| s == step).unwrap_or_else(|| panic!("no step {step:?} in {steps:?}")))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "the create's steps in order: {steps:?}");
    let instance_id = created["instance_id"].as_str().expect("the operation names its instance").to_string();
    assert_eq!(accepted["instance_id"], instance_id.as_str(), "named from the start");
    let instance = app.settled(ALICE, &instance_id).await;
    assert_eq!(instance["status"], "running", "{instance}");
    let (port, old) = port_and_password(&instance);
    assert_eq!(ping(port, &old).await, "PONG");

    // A rotation, asynchronously.
    let accepted = app
        .send_async(Method::POST, &format!("/v1/instances/{instance_id}/rotate-password"), ALICE, Some(json!({})))
        .await;
    let rotated = app.operation_outcome(ALICE, id_of(&accepted)).await;

    assert_eq!(accepted["kind"], "rotate", "{accepted}");
    assert_eq!(accepted["instance_id"], instance_id.as_str());
    assert_eq!(rotated["state"], "succeeded", "{rotated}");
    let (_, new) = port_and_password(&app.settled(ALICE, &instance_id).await);
    assert_ne!(new, old, "a new password is stored");
    assert_eq!(ping(port, &new).await, "PONG");
    assert!(redis_connect(port, &old).await.is_err(), "the old password is refused");

    // A delete, asynchronously.
    let accepted = app.send_async(Method::DELETE, &format!("/v1/instances/{instance_id}"), ALICE, None).await;
    let deleted = app.operation_outcome(ALICE, id_of(&accepted)).await;

    assert_eq!(accepted["kind"], "delete", "{accepted}");
    assert_eq!(deleted["state"], "succeeded", "{deleted}");
    let (gone, body) = app.get(&format!("/v1/instances/{instance_id}"), ALICE).await;
    assert_eq!(gone, StatusCode::NOT_FOUND, "{body}");
    assert!(app.containers().await.is_empty(), "the container is gone");
    assert!(app.volumes().await.is_empty(), "the volume is gone");
}

#[tokio::test]
async fn operations_are_visible_to_their_owner_and_admins_and_404_to_anyone_else() {
    let app = TestApp::spawn().await;
    let admin = app.add_admin("root").await;
    let accepted = app.send_async(Method::POST, "/v1/instances", ALICE, Some(json!({"engine": "redis"}))).await;
    let operation = app.operation_outcome(ALICE, id_of(&accepted)).await;
    let path = format!("/v1/operations/{}", id_of(&operation));
    let instance_id = operation["instance_id"].as_str().unwrap();

    let (by_owner, owners_view) = app.get(&path, ALICE).await;
    let (by_admin, admins_view) = app.get(&path, &admin).await;
    let (by_bob, bobs_view) = app.get(&path, BOB).await;
    let (bobs_list, bobs_listing) = app.get(&format!("/v1/instances/{instance_id}/operations"), BOB).await;
    let (unknown, _) = app.get("/v1/operations/0123456789abcdef", ALICE).await;
    let anonymous = app.client.get(app.url(&path)).send().await.unwrap().status();

    assert_eq!(by_owner, StatusCode::OK, "{owners_view}");
    assert_eq!(owners_view["id"], operation["id"]);
    assert_eq!(owners_view["kind"], "create");
    assert_eq!(by_admin, StatusCode::OK, "{admins_view}");
    assert_eq!(admins_view["id"], operation["id"]);
    assert_eq!(by_bob, StatusCode::NOT_FOUND, "{bobs_view}");
    assert!(!bobs_view.to_string().contains(instance_id), "the 404 tells Bob nothing of the instance: {bobs_view}");
    assert_eq!(bobs_list, StatusCode::NOT_FOUND, "{bobs_listing}");
    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_eq!(anonymous, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_instances_operations_are_listed_newest_first_and_paged() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let id = id_of(&instance);
    for verb in ["stop", "start", "rotate-password"] {
        let (status, body) = app.post(&format!("/v1/instances/{id}/{verb}"), ALICE, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{verb}: {body}");
    }

    let (first_status, first) = app.get(&format!("/v1/instances/{id}/operations?limit=2"), ALICE).await;
    let next = first["next"].as_str().unwrap_or_else(|| panic!("a next page: {first}")).to_string();
    let (second_status, second) = app.get(&format!("/v1/instances/{id}/operations?limit=2&before={next}"), ALICE).await;
    let (all_status, all) = app.get(&format!("/v1/instances/{id}/operations"), ALICE).await;

    assert_eq!(first_status, StatusCode::OK, "{first}");
    assert_eq!(kinds(&first), ["rotate", "start"], "newest first: {first}");
    assert_eq!(second_status, StatusCode::OK, "{second}");
    assert_eq!(kinds(&second), ["stop", "create"], "{second}");
    assert!(second["next"].is_null(), "nothing older than the create: {second}");
    assert_eq!(all_status, StatusCode::OK, "{all}");
    assert_eq!(kinds(&all), ["rotate", "start", "stop", "create"], "the default page holds them all: {all}");
    assert!(all["next"].is_null(), "{all}");
    for operation in all["operations"].as_array().unwrap() {
        assert_eq!(operation["state"], "succeeded", "{operation}");
        assert_eq!(operation["instance_id"], id, "{operation}");
        assert_eq!(operation["requested_by"], ALICE, "{operation}");
    }
    let ids: HashSet<&str> = all["operations"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids.len(), 4, "four operations, four ids");
    assert!(ids.contains(next.as_str()), "next is the id of the last operation of the first page");
}

#[tokio::test]
async fn a_second_change_while_one_runs_is_409_naming_the_running_operation() {
    let app = TestApp::spawn().await;
    // MariaDB takes seconds to stop and start again: the restart is still running when the
    // rotation comes.
    let instance = app.create(ALICE, json!({"engine": "mysql"})).await;
    let id = id_of(&instance).to_string();
    let (port, password) = port_and_password(&instance);

    let restart = app.send_async(Method::POST, &format!("/v1/instances/{id}/restart"), ALICE, Some(json!({}))).await;
    let (status, conflict) = app.post(&format!("/v1/instances/{id}/rotate-password"), ALICE, json!({})).await;
    let during = app.detail(ALICE, &instance).await;

    let running = id_of(&restart);
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["operation"], running, "the 409 names the running operation: {conflict}");
    assert!(conflict["detail"].as_str().unwrap_or_default().contains(running), "{conflict}");
    assert_eq!(during["running_operation"], running, "{during}");
    let settled = app.settled(ALICE, &id).await;
    assert_eq!(app.operation_outcome(ALICE, running).await["state"], "succeeded");
    assert_eq!(settled["status"], "running", "{settled}");
    assert_eq!(port_and_password(&settled).1, password, "the refused rotation changed nothing");
    mysql_connect(port, "root", &password).await.expect("the old password still works").close().await.ok();
    assert_eq!(kinds(&json!({"operations": app.operations(ALICE, &id).await})), ["restart", "create"]);
    let (after, body) = app.post(&format!("/v1/instances/{id}/rotate-password"), ALICE, json!({})).await;
    assert_eq!(after, StatusCode::OK, "once none runs, the rotation goes through: {body}");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_a_different_body_is_422() {
    let app = TestApp::spawn().await;
    let key = unique_name("key");
    let with_key = [("Idempotency-Key", key.as_str())];
    let body = json!({"engine": "redis"});

    let (first, _, created) = app.send(Method::POST, "/v1/instances", ALICE, &with_key, Some(body.clone())).await;
    let (again, _, replayed) = app.send(Method::POST, "/v1/instances", ALICE, &with_key, Some(body.clone())).await;
    let containers_after_the_retry = app.containers().await.len();
    let other = json!({"engine": "redis", "memory_mb": 64});
    let (other_body, _, refused) = app.send(Method::POST, "/v1/instances", ALICE, &with_key, Some(other)).await;
    let bobs_body = json!({"engine": "redis", "memory_mb": 32});
    let (bobs, _, bobs_instance) = app.send(Method::POST, "/v1/instances", BOB, &with_key, Some(bobs_body)).await;

    assert_eq!(first, StatusCode::CREATED, "{created}");
    assert_eq!(again, StatusCode::CREATED, "the same answer: {replayed}");
    assert_eq!(replayed["id"], created["id"], "the same instance");
    assert_eq!(port_and_password(&replayed), port_and_password(&created));
    assert_eq!(containers_after_the_retry, 1, "never a second container");
    assert_eq!(other_body, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(bobs, StatusCode::CREATED, "Bob's key is his own: {bobs_instance}");
    assert_ne!(bobs_instance["id"], created["id"], "a different instance");
    assert_eq!(bobs_instance["memory_mb"], 32, "made from Bob's body");
    assert_eq!(app.containers().await.len(), 2, "Alice's and Bob's");
    let (_, alices) = app.get("/v1/instances", ALICE).await;
    assert_eq!(alices["instances"].as_array().unwrap().len(), 1, "{alices}");
    let (port, password) = port_and_password(&created);
    assert_eq!(ping(port, &password).await, "PONG");
}

#[tokio::test]
async fn ten_concurrent_creates_with_one_key_create_one_instance() {
    let app = TestApp::spawn().await;
    let key = unique_name("key");
    let with_key = [("Idempotency-Key", key.as_str())];

    let creates =
        (0..10).map(|_| app.send(Method::POST, "/v1/instances", ALICE, &with_key, Some(json!({"engine": "redis"}))));
    let answers = futures_util::future::join_all(creates).await;

    let mut instance_ids = HashSet::new();
    for (status, _, body) in &answers {
        let instance_id = match *status {
            StatusCode::CREATED => body["id"].as_str(),
            StatusCode::ACCEPTED => body["instance_id"].as_str(),
            other => panic!("{other}: {body}"),
        };
        instance_ids.insert(instance_id.unwrap_or_else(|| panic!("an instance id in {body}")).to_string());
    }
    assert_eq!(instance_ids.len(), 1, "one instance for one key: {instance_ids:?}");
    let instance_id = instance_ids.into_iter().next().unwrap();
    let instance = app.settled(ALICE, &instance_id).await;
    assert_eq!(instance["status"], "running", "{instance}");
    assert_eq!(app.containers().await.len(), 1, "one container");
    let (_, list) = app.get("/v1/instances", ALICE).await;
    assert_eq!(list["instances"].as_array().unwrap().len(), 1, "one instance: {list}");
    assert_eq!(kinds(&json!({"operations": app.operations(ALICE, &instance_id).await})), ["create"]);
    let (port, password) = port_and_password(&instance);
    assert_eq!(ping(port, &password).await, "PONG");
}

#[tokio::test]
async fn a_failed_create_is_a_failed_operation_with_its_problem_detail() {
    // The Redis image as MySQL's: redis-server refuses MySQL's server options and exits.
    let app = TestApp::spawn_with(|c| c.catalogue.set_default_image(Engine::Mysql, image("redis"))).await;

    let accepted = app
        .send_async(Method::POST, "/v1/instances", ALICE, Some(json!({"engine": "mysql", "charset": "latin1"})))
        .await;
    let failed = app.operation_outcome(ALICE, id_of(&accepted)).await;

    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["finished_at"].is_string(), "{failed}");
    let error = &failed["error"];
    assert_eq!(error["status"], 502, "the problem detail a synchronous create answers: {failed}");
    assert!(error["detail"].as_str().unwrap_or_default().contains("did not become ready"), "{failed}");
    assert!(error["type"].is_string() && error["title"].is_string(), "a whole problem detail: {failed}");
    assert!(app.containers().await.is_empty(), "no container left");
    assert!(app.volumes().await.is_empty(), "no volume left");
    let (_, list) = app.get("/v1/instances", ALICE).await;
    for instance in list["instances"].as_array().unwrap() {
        assert_eq!(instance["status"], "failed", "nothing but a record of the failure: {instance}");
        assert!(instance["connection"]["port"].is_null(), "holding no port: {instance}");
    }
    // Docker's proxy of the removed container may hold the host port a moment longer on a busy
    // machine, and a create skips a port something on the host listens on.
    let first = app.config.port_range.first;
    wait_until("Docker to let go of the host port", Duration::from_secs(30), || async {
        std::net::TcpListener::bind(("127.0.0.1", first)).ok().map(drop)
    })
    .await;
    let next = app.create(ALICE, json!({"engine": "redis"})).await;
    assert_eq!(next["connection"]["port"], first, "the port was released");
}

#[tokio::test]
async fn an_asynchronous_resize_beyond_the_engines_bounds_is_422_at_once_and_records_no_operation() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let path = format!("/v1/instances/{}", id_of(&instance));
    let prefer = [("Prefer", "respond-async")];

    let (status, _, problem) = app.send(Method::PATCH, &path, ALICE, &prefer, Some(json!({"memory_mb": 8}))).await;
    let operations = app.operations(ALICE, id_of(&instance)).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("16 to 65536"), "{problem}");
    assert_eq!(operations.iter().map(|o| o["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["create"]);
}

#[tokio::test]
async fn replaying_the_key_of_a_change_to_an_instance_deleted_since_is_404_saying_so() {
    let app = TestApp::spawn().await;
    let key = unique_name("key");
    let with_key = [("Idempotency-Key", key.as_str())];
    let (created, _, instance) =
        app.send(Method::POST, "/v1/instances", ALICE, &with_key, Some(json!({"engine": "redis"}))).await;
    assert_eq!(created, StatusCode::CREATED, "{instance}");
    let (deleted, _) = app.delete(&format!("/v1/instances/{}", id_of(&instance)), ALICE).await;
    assert_eq!(deleted, StatusCode::NO_CONTENT);

    let (replayed, _, problem) =
        app.send(Method::POST, "/v1/instances", ALICE, &with_key, Some(json!({"engine": "redis"}))).await;

    assert_eq!(replayed, StatusCode::NOT_FOUND, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("has been deleted since") && detail.contains(id_of(&instance)), "{problem}");
}

#[tokio::test]
async fn an_abandoned_operation_is_taken_over_soon_after_its_lease_expires_not_at_the_next_pass() {
    // One pass at start-up, the next in five minutes: only the leader's every-second look can
    // take the operation over within the deadline.
    let app = TestApp::spawn_with(|c| c.reconcile_interval = Duration::from_secs(300)).await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let id: dbroker::model::InstanceId = instance["id"].as_str().unwrap().parse().unwrap();
    let store = dbroker::store::Store::open(&app.config.database_url).await.unwrap();
    let alice = store.user_by_name(ALICE).await.unwrap().unwrap();
    // A restart recorded by a replica that died at once: its lease ends as soon as it is written.
    let operation = dbroker::model::OperationId::random();
    store
        .insert_operation(&dbroker::store::NewOperation {
            id: &operation,
            instance_id: &id,
            kind: dbroker::model::OperationKind::Restart,
            requested_by: ALICE,
            owner_id: Some(alice.id),
            holder: "a-replica-that-died",
            lease: Duration::ZERO,
            input: json!({}),
            idempotency: None,
        })
        .await
        .unwrap();

    let ended = wait_until("the abandoned restart to be taken over and end", Duration::from_secs(30), || async {
        let (_, body) = app.get(&format!("/v1/operations/{operation}"), ALICE).await;
        matches!(body["state"].as_str(), Some("succeeded" | "failed")).then_some(body)
    })
    .await;

    assert_eq!(ended["state"], "succeeded", "{ended}");
    let (port, password) = port_and_password(&app.detail(ALICE, &instance).await);
    assert_eq!(ping(port, &password).await, "PONG");
}

#[tokio::test]
async fn an_operation_this_process_runs_is_never_taken_over_by_it_when_its_renewal_lags() {
    let app = TestApp::spawn().await;
    let admin = format!("Bearer {}", app.add_admin("root").await);
    let store = dbroker::store::Store::open(&app.config.database_url).await.unwrap();
    let create = app.send_async(Method::POST, "/v1/instances", ALICE, Some(json!({"engine": "mysql"}))).await;
    let id: dbroker::model::OperationId = create["id"].as_str().unwrap().parse().unwrap();
    let holder = store.operation(&id).await.unwrap().unwrap().holder.expect("a holder while it runs");

    // Its lease lapses again and again while it runs, as renewals that lag on a busy machine let it.
    let ended = wait_until("the create to end", Duration::from_secs(150), || async {
        store.renew_lease(&id, &holder, Duration::ZERO).await.unwrap();
        let (_, operation) = app.get(&format!("/v1/operations/{id}"), ALICE).await;
        matches!(operation["state"].as_str(), Some("succeeded" | "failed")).then_some(operation)
    })
    .await;

    assert_eq!(ended["state"], "succeeded", "{ended}");
    let (_, report) = app.get("/v1/admin/reconciler", &admin).await;
    assert_eq!(report["repairs"].get("take_over"), None, "nothing was taken over: {report}");
}
