//! Several `dbroker serve` processes, replicas, on one store and one Docker engine, as a fleet runs
//! them behind a load balancer; the store is whatever the backend switch gives (`TestStore`). Each
//! replica has a data directory of its own, as on a host of its own, and all share the master key
//! (one key file), the instance prefix, the port range and the demo user. Each test proves
//! one sentence of the issue on several replicas: an operation is visible from every replica, a
//! replica killed mid-create has its operation taken over and ended, a client retrying through a
//! real haproxy gets the one instance, and a killed leader is replaced.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    ALICE, OPERATION_DEADLINE, PrefixGuard, TestStore, docker, free_port, image, mysql_connect, port_and_password,
    step_names, unique_name, wait_for_api, wait_until,
};

/// Each replica's operation lease (and so the reconciler's leadership lease): short, so that a
/// takeover comes soon after a kill.
const LEASE_SECONDS: u64 = 3;

/// The bound: a killed replica's operation is taken over, and a killed leader replaced,
/// within this long.
const FAILOVER_BOUND: Duration = Duration::from_secs(15);

/// Replicas of one dbroker deployment. Dropping it kills every replica still running, then
/// removes every container, volume and network of the prefix, then the store.
struct Fleet {
    replicas: Vec<Replica>,
    /// Admin's token, for `/v1/admin/reconciler`.
    admin: String,
    client: reqwest::Client,
    prefix: String,
    _cleanup: PrefixGuard,
    _store: TestStore,
}

/// One `dbroker serve` process of the fleet.
struct Replica {
    base: String,
    /// `None` once it has been killed.
    process: Option<tokio::process::Child>,
    _data_dir: tempfile::TempDir,
}

impl Fleet {
    /// `count` replicas on a new store, each answering; and an admin, added with `dbroker user`.
    async fn start(count: usize) -> Fleet {
        Self::start_with(count, None).await
    }

    /// `start`, with each replica given the configuration file `config`.
    async fn start_with(count: usize, config: Option<&std::path::Path>) -> Fleet {
        let prefix = unique_name("dbt-replicas");
        let cleanup = PrefixGuard(prefix.clone());
        let store = TestStore::new().await;
        let first_port = free_port();
        let mut replicas = Vec::new();
        for _ in 0..count {
            let data_dir = tempfile::tempdir().unwrap();
            let (mut command, base) = store.serve_in(data_dir.path(), &prefix, ALICE, first_port);
            if let Some(config) = config {
                command.env("DBROKER_CONFIG", config);
            }
            command
                .env("DBROKER_OPERATION_LEASE", LEASE_SECONDS.to_string())
                .env("DBROKER_RECONCILE_INTERVAL", "1")
                .env("DBROKER_REDIS_IMAGE", image("redis"));
            if std::env::var_os("TEST_LOG").is_some() {
                command.stderr(Stdio::inherit());
            }
            let process = command.spawn().expect("dbroker starts");
            replicas.push(Replica { base, process: Some(process), _data_dir: data_dir });
            // The first makes the new store before the others start: on SQLite, processes opening
            // one new file at once sometimes fail "database is locked" (about one run in ten of
            // this module; a start-up bug of the SQLite store, not what these tests are about).
            if replicas.len() == 1 {
                replicas[0].wait_until_serving().await;
            }
        }
        for replica in &mut replicas {
            replica.wait_until_serving().await;
        }
        let admin = add_admin(&store).await;
        Fleet { replicas, admin, client: reqwest::Client::new(), prefix, _cleanup: cleanup, _store: store }
    }

    fn base(&self, replica: usize) -> &str {
        &self.replicas[replica].base
    }

    /// Kills the replica with SIGKILL, as a host's crash or the OOM killer would, and reaps it.
    async fn kill(&mut self, replica: usize) {
        let mut process = self.replicas[replica].process.take().expect("the replica runs");
        process.start_kill().expect("SIGKILL is sent");
        process.wait().await.expect("the process is reaped");
    }

    /// Which of `replicas` says it leads the reconciler (`/v1/admin/reconciler`), if one does;
    /// insists that no two do.
    async fn leader_among(&self, replicas: &[usize]) -> Option<usize> {
        let mut leaders = Vec::new();
        for &replica in replicas {
            if self.reconciler(replica).await["leader"].as_bool().expect("leader is a boolean") {
                leaders.push(replica);
            }
        }
        assert!(leaders.len() <= 1, "one leader at most: {leaders:?}");
        leaders.first().copied()
    }

    async fn reconciler(&self, replica: usize) -> Value {
        let url = self.url(replica, "/v1/admin/reconciler");
        let (status, report) = call(&self.client, Method::GET, &url, &self.admin, &[], None).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        report
    }

    fn url(&self, replica: usize, path: &str) -> String {
        format!("{}{path}", self.base(replica))
    }

    /// `GET path` on `replica` as the demo user.
    async fn get(&self, replica: usize, path: &str) -> (StatusCode, Value) {
        call(&self.client, Method::GET, &self.url(replica, path), ALICE, &[], None).await
    }

    /// Polls the operation on `replica` until it has ended, and returns it.
    async fn outcome_on(&self, replica: usize, operation_id: &str) -> Value {
        wait_until(&format!("operation {operation_id} to end"), OPERATION_DEADLINE, || async {
            let (status, operation) = self.get(replica, &format!("/v1/operations/{operation_id}")).await;
            assert_eq!(status, StatusCode::OK, "{operation}");
            (!in_flight(&operation)).then_some(operation)
        })
        .await
    }

    /// Polls the operation on `replica` until it has done `step`, and returns it.
    async fn after_step(&self, replica: usize, operation_id: &str, step: &str) -> Value {
        wait_until(&format!("operation {operation_id} to be done with {step:?}"), OPERATION_DEADLINE, || async {
            let (_, operation) = self.get(replica, &format!("/v1/operations/{operation_id}")).await;
            step_names(&operation).iter().any(|s| s == step).then_some(operation)
        })
        .await
    }

    /// The fleet's containers and volumes of an instance, as Docker has them.
    async fn docker_of(&self, instance_id: &str) -> (Vec<String>, Vec<String>) {
        let by_name = HashMap::from([("name", vec![format!("{}-{instance_id}", self.prefix)])]);
        let docker = docker().await;
        let containers = ListContainersOptionsBuilder::default().all(true).filters(&by_name).build();
        let containers = docker.list_containers(Some(containers)).await.unwrap();
        let volumes = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&by_name).build()));
        let volumes = volumes.await.unwrap();
        (
            containers.into_iter().flat_map(|c| c.names.unwrap_or_default()).collect(),
            volumes.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect(),
        )
    }
}

impl Replica {
    /// Waits until the replica answers; one that exits first fails the test at once, saying so.
    async fn wait_until_serving(&mut self) {
        let client = reqwest::Client::new();
        let process = self.process.as_mut().expect("the replica runs");
        let healthz = format!("{}/healthz", self.base);
        wait_until("a replica to listen", Duration::from_secs(30), || {
            if let Some(status) = process.try_wait().expect("the replica's status") {
                panic!("a replica exited before it listened ({status}); TEST_LOG=1 shows its log");
            }
            let answer = client.get(&healthz).send();
            async move { answer.await.ok() }
        })
        .await;
    }
}

impl Drop for Fleet {
    /// Kills every replica still running and waits until each has exited, before the fields'
    /// guards remove what the fleet made: no replica can make anything after the cleanup.
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            if let Some(mut process) = replica.process.take() {
                let _ = process.start_kill();
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while matches!(process.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// `dbroker user add root --admin` on the store: the admin's token.
async fn add_admin(store: &TestStore) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dbroker"))
        .args(["user", "add", "root", "--admin", "--data-dir"])
        .arg(store.data_dir())
        .env("DBROKER_DATABASE_URL", store.url_for_env())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "dbroker user add: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn in_flight(operation: &Value) -> bool {
    !matches!(operation["state"].as_str(), Some("succeeded" | "failed"))
}

/// Any request as `token`, with `headers` besides and an optional JSON body: the status and the
/// body (`Null` if none, or if it is not JSON).
async fn call(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let response = send(client, method, url, token, headers, body).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client.request(method, url).header("Authorization", format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await
}

/// A create answered at once (202) by `replica`: the operation.
async fn create_async(fleet: &Fleet, replica: usize, body: Value) -> Value {
    let url = fleet.url(replica, "/v1/instances");
    let (status, operation) =
        call(&fleet.client, Method::POST, &url, ALICE, &[("Prefer", "respond-async")], Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{operation}");
    operation
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("an id in {value}")).to_string()
}

/// Connects to a MySQL instance with its connection details, as its user would.
async fn assert_connectable(instance: &Value, what: &str) {
    let (port, password) = port_and_password(instance);
    let connection = mysql_connect(port, "root", &password).await;
    let connection = connection.unwrap_or_else(|e| panic!("{what}: the instance refuses its own password: {e}"));
    sqlx::Connection::close(connection).await.ok();
}

#[tokio::test]
async fn an_operation_started_on_one_replica_is_pollable_on_another_and_both_then_serve_its_instance() {
    let fleet = Fleet::start(2).await;

    let operation = create_async(&fleet, 0, json!({"engine": "mysql"})).await;
    let operation_id = id_of(&operation);
    // Polled on the other replica from the first moment to the end.
    let seen_in_flight = std::cell::Cell::new(false);
    let ended = wait_until("the create to end, polled on the other replica", OPERATION_DEADLINE, || async {
        let (status, operation) = fleet.get(1, &format!("/v1/operations/{operation_id}")).await;
        assert_eq!(status, StatusCode::OK, "the other replica knows the operation: {operation}");
        seen_in_flight.set(seen_in_flight.get() || in_flight(&operation));
        (!in_flight(&operation)).then_some(operation)
    })
    .await;

    assert!(seen_in_flight.get(), "the other replica saw the create while it ran");
    assert_eq!(ended["state"], "succeeded", "{ended}");
    assert_eq!(ended, fleet.outcome_on(0, &operation_id).await, "both replicas tell the same end");
    let instance_id = operation["instance_id"].as_str().unwrap();
    for replica in 0..2 {
        let (status, instance) = fleet.get(replica, &format!("/v1/instances/{instance_id}")).await;
        assert_eq!(status, StatusCode::OK, "replica {replica}: {instance}");
        assert_eq!(instance["status"], "running", "replica {replica}: {instance}");
        assert_connectable(&instance, &format!("replica {replica}")).await;
    }
}

#[tokio::test]
async fn a_replica_killed_mid_create_has_its_operation_taken_over_and_ended_by_another() {
    let mut fleet = Fleet::start(2).await;
    let operation = create_async(&fleet, 0, json!({"engine": "mysql"})).await;
    let operation_id = id_of(&operation);
    let instance_id = operation["instance_id"].as_str().unwrap().to_string();
    fleet.after_step(1, &operation_id, "container created").await;

    fleet.kill(0).await;

    let (_, at_the_kill) = fleet.get(1, &format!("/v1/operations/{operation_id}")).await;
    assert!(in_flight(&at_the_kill), "killed before the create ended: {at_the_kill}");
    wait_until("the other replica to take the create over", FAILOVER_BOUND, || async {
        let report = fleet.reconciler(1).await;
        (report["repairs"]["take_over"].as_u64().unwrap_or(0) >= 1).then_some(())
    })
    .await;
    let ended = fleet.outcome_on(1, &operation_id).await;
    // The store and Docker agree, whichever way it ended.
    let (status, instance) = fleet.get(1, &format!("/v1/instances/{instance_id}")).await;
    let (containers, volumes) = fleet.docker_of(&instance_id).await;
    if ended["state"] == "succeeded" {
        assert_eq!(status, StatusCode::OK, "{instance}");
        assert_eq!(instance["status"], "running", "{instance}");
        assert_eq!(containers.len(), 1, "one container: {containers:?}");
        assert_connectable(&instance, "the finished create").await;
    } else {
        assert!(ended["error"]["detail"].as_str().is_some_and(|d| !d.is_empty()), "a reason: {ended}");
        assert!(containers.is_empty(), "no container left: {containers:?}");
        assert!(volumes.is_empty(), "no volume left: {volumes:?}");
        if status != StatusCode::NOT_FOUND {
            assert_eq!(instance["status"], "failed", "{instance}");
            assert!(instance["connection"]["port"].is_null(), "the failed create holds no port: {instance}");
        }
    }
}

#[tokio::test]
async fn a_client_retrying_through_a_load_balancer_with_its_idempotency_key_gets_the_one_instance() {
    let mut fleet = Fleet::start(2).await;
    let balancer = LoadBalancer::start(&[fleet.base(0), fleet.base(1)]).await;
    let create = |client: reqwest::Client, url: String| async move {
        let headers = [("Idempotency-Key", "one-mysql-for-alice")];
        send(&client, Method::POST, &url, ALICE, &headers, Some(json!({"engine": "mysql"}))).await
    };
    let first = tokio::spawn(create(fleet.client.clone(), balancer.url("/v1/instances")));
    // The balancer sends every request to the first replica while it is up; followed on the other.
    let instance_id = wait_until("the create to be recorded", OPERATION_DEADLINE, || async {
        let (_, listed) = fleet.get(1, "/v1/instances").await;
        listed["instances"].as_array().and_then(|l| l.first()).map(id_of)
    })
    .await;
    let operations = format!("/v1/instances/{instance_id}/operations");
    let operation_id = wait_until("the create's operation", OPERATION_DEADLINE, || async {
        let (_, listed) = fleet.get(1, &operations).await;
        listed["operations"].as_array().and_then(|l| l.first()).map(id_of)
    })
    .await;
    fleet.after_step(1, &operation_id, "started").await;

    fleet.kill(0).await;
    let cut = first.await.unwrap();
    // The client sees its request fail (the balancer's 502, or a cut connection) and retries,
    // through the balancer, until a live replica answers.
    let retried = wait_until("a retry to be answered by a live replica", OPERATION_DEADLINE, || async {
        let response = create(fleet.client.clone(), balancer.url("/v1/instances")).await.ok()?;
        let status = response.status();
        if matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT) {
            return None;
        }
        Some((status, response.json::<Value>().await.unwrap_or(Value::Null)))
    })
    .await;

    let first_created = cut.as_ref().is_ok_and(|r| r.status() == StatusCode::CREATED);
    assert!(!first_created, "the first request died with its replica");
    let (status, instance) = retried;
    assert_eq!(status, StatusCode::CREATED, "{instance}");
    assert_eq!(id_of(&instance), instance_id, "the retry answers the first request's instance");
    let (_, listed) = call(&fleet.client, Method::GET, &balancer.url("/v1/instances"), ALICE, &[], None).await;
    let ids: Vec<String> = listed["instances"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, [instance_id], "the user holds the one instance");
    assert_connectable(&instance, "the retried create").await;
}

#[tokio::test]
async fn when_the_leader_is_killed_another_replica_leads_within_the_bound() {
    let mut fleet = Fleet::start(3).await;
    let leader = wait_until("one replica to lead", FAILOVER_BOUND, || fleet.leader_among(&[0, 1, 2])).await;

    fleet.kill(leader).await;

    let survivors: Vec<usize> = (0..3).filter(|r| *r != leader).collect();
    let successor = wait_until("another replica to lead", FAILOVER_BOUND, || fleet.leader_among(&survivors)).await;
    assert_ne!(successor, leader);
}

/// A real haproxy in front of replicas: its own configuration on a free port, the replicas as
/// its backends, health-checked on `/healthz`. Every request goes to the first replica while it
/// is up (`balance first`), so a test knows which replica a request reached; a request that
/// cannot connect to a dead one is sent to the next (`redispatch`). Killed when dropped.
struct LoadBalancer {
    base: String,
    _process: tokio::process::Child,
    _config: tempfile::TempDir,
}

impl LoadBalancer {
    async fn start(backends: &[&str]) -> LoadBalancer {
        let listen = format!("127.0.0.1:{}", free_port());
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, base)| format!("    server replica{i} {}\n", base.trim_start_matches("http://")))
            .collect();
        // Timeouts above the longest create a client waits for (MariaDB's first start).
        let config = format!(
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 300s\n    timeout server 300s\n\
             \x20   retries 3\n    option redispatch\n\
             frontend api\n    bind {listen}\n    default_backend replicas\n\
             backend replicas\n    balance first\n    option httpchk GET /healthz\n\
             \x20   default-server check inter 500ms fall 2 rise 1\n{servers}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        // Debian puts it in /usr/sbin, which a test's PATH may lack.
        let binary = ["/usr/sbin/haproxy", "haproxy"].into_iter().find(|b| std::path::Path::new(b).exists());
        let mut command = tokio::process::Command::new(binary.unwrap_or("haproxy"));
        // -db: in the foreground, so that it is this test's process to kill.
        command.arg("-db").arg("-f").arg(&path).stdout(Stdio::null()).kill_on_drop(true);
        if std::env::var_os("TEST_LOG").is_none() {
            command.stderr(Stdio::null());
        }
        let process = command.spawn().expect("haproxy runs (scripts/test installs Debian's haproxy)");
        let balancer = LoadBalancer { base: format!("http://{listen}"), _process: process, _config: dir };
        wait_for_api(&balancer.base).await;
        balancer
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

#[tokio::test]
async fn a_replica_killed_mid_backup_has_its_backup_failed_and_its_partial_object_removed_by_another() {
    let files = tempfile::tempdir().unwrap();
    let target = files.path().join("local");
    std::fs::create_dir(&target).unwrap();
    let identity = age::x25519::Identity::generate();
    let identity_file = files.path().join("backup.key");
    crate::backup_setup::write_private(&identity_file, crate::backup_setup::identity_text(&identity).as_bytes());
    let config = files.path().join("dbroker.toml");
    let toml = format!(
        "[backups]\nrecipient = {recipient:?}\nidentity_file = {identity_file:?}\n\n\
         [backups.targets.local]\nkind = \"dir\"\npath = {target:?}\n",
        recipient = identity.to_public().to_string(),
    );
    std::fs::write(&config, toml).unwrap();
    let mut fleet = Fleet::start_with(2, Some(&config)).await;
    let instance = create_async(&fleet, 0, json!({"engine": "redis", "memory_mb": 512})).await;
    let instance = fleet.outcome_on(0, instance["id"].as_str().unwrap()).await;
    let instance_id = instance["instance_id"].as_str().unwrap().to_string();
    let (_, instance) = fleet.get(0, &format!("/v1/instances/{instance_id}")).await;
    // Enough incompressible data that its backup takes a while: 160 MiB.
    let (port, password) = port_and_password(&instance);
    let mut conn = crate::helpers::redis_connect(port, &password).await.unwrap();
    for batch in 0..40 {
        let mut pipe = redis::pipe();
        for i in 0..64 {
            let value: Vec<u8> = (0..64 * 1024).map(|_| rand::random::<u8>()).collect();
            pipe.cmd("SET").arg(format!("k:{batch}:{i}")).arg(value).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }

    let url = fleet.url(0, &format!("/v1/instances/{instance_id}/backups"));
    let (status, operation) =
        call(&fleet.client, Method::POST, &url, ALICE, &[("Prefer", "respond-async")], Some(json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{operation}");
    let partial_written =
        || walk(&target).iter().any(|f| f.file_name().is_some_and(|n| n.to_string_lossy().contains(".partial-")));
    wait_until("the backup to be half written", OPERATION_DEADLINE, || async { partial_written().then_some(()) }).await;
    fleet.kill(0).await;

    let started = std::time::Instant::now();
    let ended = fleet.outcome_on(1, operation["id"].as_str().unwrap()).await;
    assert_eq!(ended["state"], "failed", "{ended}");
    let backup = wait_until("the backup to be marked failed", FAILOVER_BOUND, || async {
        let (_, listed) = fleet.get(1, &format!("/v1/instances/{instance_id}/backups")).await;
        let backup = listed["backups"][0].clone();
        (backup["state"] == "failed").then_some(backup)
    })
    .await;
    assert!(started.elapsed() < FAILOVER_BOUND + Duration::from_secs(LEASE_SECONDS), "taken over in time");
    assert_eq!(backup["reason"], "dbroker stopped while it ran", "{backup}");
    assert!(walk(&target).is_empty(), "nothing is left of the partial object: {:?}", walk(&target));
}

/// Every file under `dir`, in any directory.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().flat_map(|e| if e.path().is_dir() { walk(&e.path()) } else { vec![e.path()] }).collect()
}
