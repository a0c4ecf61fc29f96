//! Quotas and the host's memory budget: a create, a resize, a pool claim or an adopt beyond one is
//! refused (403 for a user's quota, 503 for the host's budget) naming it, and creates nothing;
//! concurrent creates, in one process or two, never pass a quota together; `dbroker user quota`
//! gives a user their own. And what bounds every container: CPU shares and rotated logs.

use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use dbroker::config::FileConfig;
use dbroker::model::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ALICE, BOB, TestApp, docker, image, memory_cap, succeeded, wait_until};
use crate::pool::{catalogue_with_pool, wait_for_pool};

const DEADLINE: Duration = Duration::from_secs(120);

/// A 403 problem naming the quota, its limit, what is in use and what was asked.
fn assert_over_quota(status: StatusCode, body: &Value, quota: &str, limit: u64, in_use: u64, requested: u64) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    assert_eq!(
        (&body["quota"], &body["limit"], &body["in_use"], &body["requested"]),
        (&json!(quota), &json!(limit), &json!(in_use), &json!(requested)),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains(&format!("quota of {limit}")), "{body}");
}

/// The ids of `token`'s instances, as the API lists them.
async fn listed(app: &TestApp, token: &str) -> Vec<String> {
    let (status, body) = app.get("/v1/instances", token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

/// The statuses of `answers`, counted: (201s, 403s); insists there is nothing else.
fn created_and_refused(answers: &[(StatusCode, Value)]) -> (usize, usize) {
    for (status, body) in answers {
        assert!(matches!(*status, StatusCode::CREATED | StatusCode::FORBIDDEN), "{status}: {body}");
        if *status == StatusCode::FORBIDDEN {
            assert_eq!(body["quota"], "instances", "{body}");
        }
    }
    let created = answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    (created, answers.len() - created)
}

#[tokio::test]
async fn a_create_beyond_the_instance_quota_is_403_naming_it_and_creates_nothing() {
    let app = TestApp::spawn_with(|c| c.quotas.instances = 1).await;
    let first = app.create(ALICE, json!({"engine": "redis", "memory_mb": 32})).await;

    let (status, body) = app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 32})).await;
    let (legacy, legacy_body) = app.post("/redis", ALICE, json!({"memory": "32"})).await;
    let bobs = app.create(BOB, json!({"engine": "redis", "memory_mb": 32})).await;

    assert_over_quota(status, &body, "instances", 1, 1, 1);
    assert_eq!(legacy, StatusCode::FORBIDDEN, "the old routes too: {legacy_body}");
    assert_eq!((&legacy_body["code"], &legacy_body["data"]["quota"]), (&json!(403), &json!("instances")));
    assert_eq!(listed(&app, ALICE).await, [first["id"].as_str().unwrap()], "no record of the refused creates");
    assert_eq!(app.containers().await.len(), 2, "no container either: alice's one and bob's");
    assert_eq!(app.volumes().await.len(), 2);
    assert!(bobs["id"].is_string(), "the quota is alice's, not everyone's together");
}

#[tokio::test]
async fn a_create_or_a_resize_beyond_the_memory_quota_is_403_and_the_instance_keeps_its_cap() {
    let app = TestApp::spawn_with(|c| c.quotas.memory_mb = 100).await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let path = format!("/v1/instances/{}", instance["id"].as_str().unwrap());

    let (created, created_body) = app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let (grown, grown_body) = app.patch(&path, ALICE, json!({"memory_mb": 128})).await;
    let after_refusal = app.detail(ALICE, &instance).await;
    let cap_after_refusal = memory_cap(&app.container_of(&instance)).await;
    let (within, within_body) = app.patch(&path, ALICE, json!({"memory_mb": 100})).await;

    assert_over_quota(created, &created_body, "memory", 100, 64, 64);
    assert_over_quota(grown, &grown_body, "memory", 100, 64, 64);
    assert_eq!(after_refusal["memory_mb"], 64, "{after_refusal}");
    assert_eq!(cap_after_refusal, Some(64 * 1024 * 1024), "the container's cap is unchanged");
    assert_eq!(within, StatusCode::OK, "a resize that fits goes through: {within_body}");
    assert_eq!(memory_cap(&app.container_of(&instance)).await, Some(100 * 1024 * 1024));
    assert_eq!(app.containers().await.len(), 1);
}

#[tokio::test]
async fn concurrent_creates_never_pass_the_instance_quota_together() {
    let app = TestApp::spawn_with(|c| c.quotas.instances = 3).await;

    let creates = (0..8).map(|_| app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 16})));
    let answers = futures_util::future::join_all(creates).await;

    assert_eq!(created_and_refused(&answers), (3, 5));
    assert_eq!(listed(&app, ALICE).await.len(), 3);
    assert_eq!(app.containers().await.len(), 3);
}

#[tokio::test]
async fn two_processes_creating_at_once_never_pass_the_instance_quota_together() {
    let first = TestApp::spawn_with(|c| c.quotas.instances = 3).await;
    let second = first.spawn_sibling().await;

    let creates = (0..8).map(|n| {
        let app = if n % 2 == 0 { &first } else { &second };
        app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 16}))
    });
    let answers = futures_util::future::join_all(creates).await;

    assert_eq!(created_and_refused(&answers), (3, 5));
    assert_eq!(listed(&first, ALICE).await.len(), 3);
    assert_eq!(first.containers().await.len(), 3);
}

#[tokio::test]
async fn concurrent_creates_served_from_the_pool_never_pass_the_quota_and_leave_the_rest_in_the_pool() {
    let app = TestApp::spawn_with(|c| {
        c.catalogue = catalogue_with_pool(&[Engine::Redis], 3);
        c.quotas.instances = 2;
    })
    .await;
    let admin = app.add_admin("root").await;
    let members: Vec<String> =
        wait_for_pool(&app, &admin, "redis", 3).await.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();

    // Each passes the check made before anything is recorded: only the claim's own check,
    // made as the member is handed over, can refuse the third.
    let creates = (0..4).map(|_| app.post("/v1/instances", ALICE, json!({"engine": "redis"})));
    let answers = futures_util::future::join_all(creates).await;

    assert_eq!(created_and_refused(&answers), (2, 2));
    let alices = listed(&app, ALICE).await;
    assert_eq!(alices.len(), 2);
    let (_, pool) = app.get("/v1/admin/pool", &admin).await;
    let unclaimed: Vec<&str> = pool["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    let left = members.iter().find(|m| !alices.contains(m)).expect("a member nobody claimed");
    assert!(unclaimed.contains(&left.as_str()), "the refused claim left its member in the pool: {pool}");
}

#[tokio::test]
async fn dbroker_user_quota_gives_a_user_their_own_quota_and_user_list_shows_it() {
    let app = TestApp::spawn().await;
    app.create(ALICE, json!({"engine": "redis", "memory_mb": 16})).await;

    succeeded(&app.dbroker_user(&["quota", ALICE, "--instances", "1"]));
    let (status, body) = app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 16})).await;
    let listing = succeeded(&app.dbroker_user(&["list"]));
    succeeded(&app.dbroker_user(&["quota", ALICE, "--default"]));
    let (again, again_body) = app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 16})).await;
    let listing_after = succeeded(&app.dbroker_user(&["list"]));
    let unknown = app.dbroker_user(&["quota", "nobody", "--memory-mb", "5"]);
    let nothing_asked = app.dbroker_user(&["quota", ALICE]);

    assert_over_quota(status, &body, "instances", 1, 1, 1);
    let line = |listing: &str, user: &str| listing.lines().find(|l| l.starts_with(user)).unwrap().to_string();
    assert!(line(&listing, ALICE).ends_with("instances=1\tmemory_mb=default"), "{listing}");
    assert!(line(&listing, BOB).ends_with("instances=default\tmemory_mb=default"), "{listing}");
    assert_eq!(again, StatusCode::CREATED, "back to the default of 10: {again_body}");
    assert!(line(&listing_after, ALICE).ends_with("instances=default\tmemory_mb=default"), "{listing_after}");
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("no user named nobody"));
    assert!(!nothing_asked.status.success(), "a quota command that sets nothing is refused");
}

#[tokio::test]
async fn an_adopt_beyond_the_owners_quota_is_403_and_the_container_stays_quarantined() {
    let app = TestApp::spawn().await;
    let admin = app.add_admin("root").await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 16})).await;
    app.lose_records(&[&instance]).await;
    let container = app.container_of(&instance);
    let quarantine = || async {
        let (_, body) = app.get("/v1/admin/quarantine", &admin).await;
        body["containers"].as_array()?.iter().any(|c| c["container"] == container.as_str()).then_some(())
    };
    wait_until("the container to be quarantined", DEADLINE, quarantine).await;
    succeeded(&app.dbroker_user(&["quota", BOB, "--instances", "0"]));

    let (status, body) =
        app.post(&format!("/v1/admin/quarantine/{container}/adopt"), &admin, json!({"owner": BOB})).await;

    assert_over_quota(status, &body, "instances", 0, 0, 1);
    assert!(quarantine().await.is_some(), "still quarantined");
    assert!(listed(&app, BOB).await.is_empty(), "no record for bob");
    assert_eq!(app.containers().await.len(), 1, "the container is kept");
}

#[tokio::test]
async fn a_create_beyond_the_hosts_memory_budget_is_503_saying_so() {
    let app = TestApp::spawn_with(|c| {
        c.quotas.host_memory_percent = 1;
        c.quotas.memory_mb = u64::MAX;
    })
    .await;
    let fits = app.create(ALICE, json!({"engine": "redis", "memory_mb": 16})).await;

    // 64 GiB: more than 1 % of any host this runs on.
    let (status, body) = app.post("/v1/instances", ALICE, json!({"engine": "redis", "memory_mb": 65536})).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!((&body["code"], &body["quota"]), (&json!("host_memory_exhausted"), &json!("host_memory")), "{body}");
    assert_eq!((&body["in_use"], &body["requested"]), (&json!(16), &json!(65536)), "{body}");
    let limit = body["limit"].as_u64().unwrap();
    assert!((16..65536).contains(&limit), "1 % of the host's memory: {body}");
    assert!(body["detail"].as_str().unwrap().contains(&format!("host's memory budget for instances, {limit} MiB")));
    assert_eq!(listed(&app, ALICE).await, [fits["id"].as_str().unwrap()]);
    assert_eq!(app.containers().await.len(), 1);
}

#[tokio::test]
async fn every_instance_has_its_engines_cpu_shares_and_cap_and_rotated_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpu.toml");
    let toml = format!(
        "[engines.mysql]\ndefault_version = \"10.11\"\n\
         versions = {{ \"10.11\" = {{ image = \"{}\", flavor = \"mariadb\" }} }}\n\
         [engines.redis]\ndefault_version = \"7.0\"\ncpu_shares = 512\ncpus = 0.5\n\
         versions = {{ \"7.0\" = {{ image = \"{}\" }} }}\n\
         [engines.postgres]\ndefault_version = \"15\"\nversions = {{ \"15\" = {{ image = \"{}\" }} }}\n",
        image("mysql"),
        image("redis"),
        image("postgres")
    );
    std::fs::write(&path, toml).unwrap();
    let catalogue = FileConfig::load(&path).unwrap().1;
    let app = TestApp::spawn_with(|c| c.catalogue = catalogue).await;

    let redis = app.create(ALICE, json!({"engine": "redis", "memory_mb": 16})).await;
    let postgres = app.create(ALICE, json!({"engine": "postgres"})).await;

    for (instance, shares, nano_cpus) in [(&redis, 512, Some(500_000_000)), (&postgres, 1024, None)] {
        let container = app.container_of(instance);
        let inspect = docker().await.inspect_container(&container, None::<InspectContainerOptions>).await.unwrap();
        let host = inspect.host_config.unwrap();
        assert_eq!(host.cpu_shares, Some(shares), "{container}");
        assert_eq!(host.nano_cpus.filter(|n| *n > 0), nano_cpus, "{container}");
        let logs = host.log_config.unwrap();
        assert_eq!(logs.typ.as_deref(), Some("json-file"));
        let options = logs.config.unwrap();
        assert_eq!((options["max-size"].as_str(), options["max-file"].as_str()), ("10m", "3"), "{container}");
    }
}
