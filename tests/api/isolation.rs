//! A user sees and touches only their own instances; another user's is a 404, as if it did not exist.
//! Nor can one tenant's server reach another's over the network (dbroker's own bridge network has
//! inter-container communication off), and each container keeps only the capabilities its
//! engine's entrypoint needs.

use std::collections::{BTreeSet, HashMap};

use bollard::models::{HostConfig, NetworkInspect};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, InspectNetworkOptions, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use dbroker::engines::profile;
use dbroker::model::Engine;
use dbroker::provision::Provisioner;
use dbroker::runtime::{NetworkSpec, Runtime, Throwaway};
use dbroker::secrets::MasterKey;
use dbroker::store::Store;
use futures_util::StreamExt;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ALICE, BOB, ContainerGuard, TestApp, block_on_fresh_runtime, docker, image, port_and_password, redis_connect,
    remove_networks, unique_name, wait_until,
};
use crate::templates::ChangedImage;

#[tokio::test]
async fn another_users_instance_is_invisible_in_list_and_detail_and_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let id = instance["id"].as_str().unwrap();

    let (bob_list, bob_instances) = app.get("/v1/instances", BOB).await;
    let (bob_detail, _) = app.get(&format!("/v1/instances/{id}"), BOB).await;
    let (bob_old_detail, bob_old_body) = app.get(&format!("/detail/{id}"), BOB).await;
    let (bob_old_list, bob_old_instances) = app.get("/list/2", BOB).await;
    let (bob_delete, _) = app.delete(&format!("/v1/instances/{id}"), BOB).await;

    assert_eq!(bob_list, StatusCode::OK);
    assert_eq!(bob_instances, json!({"instances": []}));
    assert_eq!(bob_detail, StatusCode::NOT_FOUND);
    assert_eq!(bob_old_detail, StatusCode::NOT_FOUND);
    assert_eq!(bob_old_body["code"], 404);
    assert_eq!(bob_old_list, StatusCode::OK);
    assert_eq!(bob_old_instances["data"], json!([]));
    assert_eq!(bob_delete, StatusCode::NOT_FOUND);
    let (alice_detail, still_there) = app.get(&format!("/v1/instances/{id}"), ALICE).await;
    assert_eq!(alice_detail, StatusCode::OK);
    assert_eq!(still_there["status"], "running");
    assert_eq!(app.containers().await.len(), 1, "Bob's delete removed nothing");
    let (_, alice_list) = app.get("/v1/instances?engine=redis", ALICE).await;
    assert_eq!(alice_list["instances"].as_array().unwrap().len(), 1);
    let (_, alice_mysql) = app.get("/v1/instances?engine=mysql", ALICE).await;
    assert_eq!(alice_mysql, json!({"instances": []}));
}

#[tokio::test]
async fn an_unknown_id_is_404_in_both_apis() {
    let app = TestApp::spawn().await;

    let (v1, body) = app.get("/v1/instances/000000000000", ALICE).await;
    let (malformed, _) = app.get("/v1/instances/..%2F..%2Fetc", ALICE).await;
    let (old, old_body) = app.get("/detail/6aecdcdf980b", ALICE).await;

    assert_eq!(v1, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], 404);
    assert_eq!(malformed, StatusCode::NOT_FOUND);
    assert_eq!(old, StatusCode::NOT_FOUND);
    assert_eq!(old_body["code"], 404, "not the old tool's data: {{}} with 200");
}

/// The network an app's containers join, as Docker shows it.
async fn network_of(app: &TestApp) -> NetworkInspect {
    let name = format!("{}-net", app.config.instance_prefix);
    docker().await.inspect_network(&name, None::<InspectNetworkOptions>).await.expect("the app's network")
}

/// Asserts that `what`'s container dropped every capability (`ALL`) but exactly `kept`.
fn assert_keeps_only(what: &str, host: &HostConfig, kept: &[&str]) {
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]), "{what}");
    let added: BTreeSet<&str> = host.cap_add.iter().flatten().map(String::as_str).collect();
    assert_eq!(added, kept.iter().copied().collect::<BTreeSet<_>>(), "{what}");
}

/// How long the tests here wait for what Docker reports.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long one connection attempt may take: one that is dropped on the way never answers.
const CONNECT_ATTEMPT_SECS: &str = "5";

/// A real TCP connection attempt with bash's `/dev/tcp`, from inside `container` (`docker exec`),
/// or from the host when `None`: whether it opened. The address and port are arguments of the
/// script (`$0`, `$1`), never part of it.
async fn connects(container: Option<&str>, ip: &str, port: u16) -> bool {
    let exec = container.map_or(Vec::new(), |c| vec!["docker", "exec", c]);
    let port = port.to_string();
    let attempt = ["timeout", CONNECT_ATTEMPT_SECS, "bash", "-c", "exec 3<>/dev/tcp/$0/$1", ip, &port];
    let argv: Vec<&str> = exec.into_iter().chain(attempt).collect();
    let output = tokio::process::Command::new(argv[0]).args(&argv[1..]).output().await.expect("the attempt runs");
    output.status.success()
}

/// An instance's container as the tests look at it: its name, its address on dbroker's network,
/// the port its server listens on there and the host port it is published on.
struct Server {
    container: String,
    ip: String,
    port: u16,
    published: u16,
}

impl Server {
    async fn of(app: &TestApp, instance: &Value, port: u16) -> Server {
        let container = app.container_of(instance);
        let inspect = docker().await.inspect_container(&container, None::<InspectContainerOptions>).await.unwrap();
        let networks = inspect.network_settings.and_then(|n| n.networks).unwrap_or_default();
        let ip = networks.values().find_map(|n| n.ip_address.clone().filter(|ip| !ip.is_empty())).expect("an address");
        let published = instance["connection"]["port"].as_u64().unwrap() as u16;
        Server { container, ip, port, published }
    }
}

#[tokio::test]
async fn a_tenants_server_cannot_reach_another_tenants_though_the_host_reaches_every_one() {
    let app = TestApp::spawn().await;
    let (postgres, redis, mysql) = tokio::join!(
        app.create(ALICE, json!({"engine": "postgres"})),
        app.create(BOB, json!({"engine": "redis"})),
        app.create(BOB, json!({"engine": "mysql"})),
    );
    let servers = [
        Server::of(&app, &postgres, 5432).await,
        Server::of(&app, &redis, 6379).await,
        Server::of(&app, &mysql, 3306).await,
    ];

    // Every attempt between two instances at once: each blocked one waits out its timeout.
    let pairs: Vec<(&Server, &Server)> = servers
        .iter()
        .flat_map(|from| servers.iter().filter(move |to| to.ip != from.ip).map(move |to| (from, to)))
        .collect();
    let reached = join_all(pairs.iter().map(|(from, to)| connects(Some(&from.container), &to.ip, to.port))).await;
    let mut controls = Vec::new();
    for server in &servers {
        controls.push((
            connects(None, "127.0.0.1", server.published).await,
            connects(None, &server.ip, server.port).await,
            connects(Some(&server.container), &server.ip, server.port).await,
        ));
    }

    for ((from, to), reached) in pairs.iter().zip(reached) {
        assert!(!reached, "{} reached {} at {}:{}", from.container, to.container, to.ip, to.port);
    }
    for (server, (published, direct, itself)) in servers.iter().zip(controls) {
        assert!(published, "the host reaches {} through its published port", server.container);
        assert!(
            direct,
            "the host reaches {} at {}:{}: the attempts above aim right",
            server.container, server.ip, server.port
        );
        assert!(itself, "{} reaches itself: the attempt works inside a container", server.container);
    }
}

/// Docker's container creates and network connects from the moment it is made, each as its kind
/// (`container create`, `network connect`) and its actor's attributes with the actor's id as `id`,
/// collected until it is dropped. A live subscription, since the
/// engine keeps only its last 256 events for a later look back, fewer than a busy host makes.
struct Events {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, HashMap<String, String>)>>>,
    following: tokio::task::JoinHandle<()>,
}

impl Events {
    fn follow() -> Events {
        let seen = std::sync::Arc::<std::sync::Mutex<Vec<_>>>::default();
        // From the current second on: what happens before the subscription is made is replayed.
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
        let log = seen.clone();
        let following = tokio::spawn(async move {
            let filters = HashMap::from([("type", vec!["container", "network"]), ("event", vec!["create", "connect"])]);
            let options = EventsOptionsBuilder::default().since(&since).filters(&filters).build();
            let mut events = docker().await.events(Some(options));
            while let Some(Ok(event)) = events.next().await {
                let kind = format!(
                    "{} {}",
                    event.typ.map(|t| t.to_string()).unwrap_or_default(),
                    event.action.unwrap_or_default()
                );
                let actor = event.actor.unwrap_or_default();
                let mut attributes = actor.attributes.unwrap_or_default();
                attributes.insert("id".into(), actor.id.unwrap_or_default());
                log.lock().unwrap().push((kind, attributes));
            }
        });
        Events { seen, following }
    }

    /// The ids of the containers whose name starts with `prefix` that were created, and of those
    /// that joined the network `network`.
    fn created_and_joined(&self, prefix: &str, network: &str) -> (Vec<String>, Vec<String>) {
        let seen = self.seen.lock().unwrap();
        let of_kind = |kind: &'static str| seen.iter().filter(move |(k, _)| k == kind).map(|(_, a)| a);
        let created = of_kind("container create").filter(|a| a.get("name").is_some_and(|n| n.starts_with(prefix)));
        let joined = of_kind("network connect").filter(|a| a.get("name").map(String::as_str) == Some(network));
        (
            created.filter_map(|a| a.get("id").cloned()).collect(),
            joined.filter_map(|a| a.get("container").cloned()).collect(),
        )
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.following.abort();
    }
}

#[tokio::test]
async fn every_engines_containers_keep_only_their_profiles_capabilities_on_dbrokers_network_with_icc_off() {
    // Images of their own, so that this test builds MariaDB's and PostgreSQL's templates itself.
    let (mysql, postgres) = tokio::join!(ChangedImage::of(Engine::Mysql), ChangedImage::of(Engine::Postgres));
    let app = TestApp::spawn_with(|c| {
        c.catalogue.set_default_image(Engine::Mysql, mysql.reference.clone());
        c.catalogue.set_default_image(Engine::Postgres, postgres.reference.clone());
    })
    .await;
    let prefix = app.config.instance_prefix.clone();
    let events = Events::follow();

    // A first start (MariaDB's and PostgreSQL's: a template's build, which initialises the data
    // directory, with the same capabilities, then its copy's), a restart, a stop and a start, each
    // answered once ready.
    let app = &app;
    let instances = join_all(Engine::ALL.map(|engine| async move {
        let instance = app.create(ALICE, json!({"engine": engine.as_str()})).await;
        for verb in ["restart", "stop", "start"] {
            let path = format!("/v1/instances/{}/{verb}", instance["id"].as_str().unwrap());
            let (status, body) = app.post(&path, ALICE, json!({})).await;
            assert_eq!(status, StatusCode::OK, "{engine} {verb}: {body}");
        }
        (engine, instance)
    }))
    .await;

    let network = network_of(&app).await;
    let options = network.options.unwrap_or_default();
    assert_eq!(options.get("com.docker.network.bridge.enable_icc").map(String::as_str), Some("false"));
    assert_eq!(network.labels.unwrap_or_default().get("dbroker.prefix"), Some(&prefix));
    let network_id = network.id.unwrap();
    for (engine, instance) in &instances {
        let inspect = docker()
            .await
            .inspect_container(&app.container_of(instance), None::<InspectContainerOptions>)
            .await
            .unwrap();
        let host = inspect.host_config.unwrap();
        assert_keeps_only(engine.as_str(), &host, profile(*engine).capabilities);
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_string()]), "{engine}");
        assert_eq!(host.network_mode, Some(network_id.clone()), "{engine}: on dbroker's network only");
        if *engine != Engine::Redis {
            let image = docker().await.inspect_image(&inspect.image.unwrap()).await.unwrap();
            let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
            assert!(labels.contains_key("dbroker.template-of"), "{engine} runs a template's copy");
        }
    }
    // The template builds ran on the same network. (Containers named like them that only look
    // into an image are never started, so they join no network.)
    let (build_prefix, network) = (format!("{prefix}-template-build-"), format!("{prefix}-net"));
    wait_until("MariaDB's and PostgreSQL's template builds to have joined the network", DEADLINE, || async {
        let (builds, joined) = events.created_and_joined(&build_prefix, &network);
        (builds.iter().filter(|build| joined.contains(build)).count() == 2).then_some(())
    })
    .await;
}

/// A throwaway Redis container `name` on `network`, keeping `capabilities`.
fn redis_throwaway(name: &str, network: &NetworkSpec, capabilities: &'static [&'static str]) -> Throwaway {
    Throwaway {
        name: name.to_string(),
        image: image("redis"),
        env: Vec::new(),
        args: Vec::new(),
        container_port: 6379,
        labels: HashMap::new(),
        memory_bytes: 64 * 1024 * 1024,
        files: Vec::new(),
        network: network.clone(),
        capabilities,
    }
}

#[tokio::test]
async fn a_throwaway_container_joins_the_network_it_is_given_with_only_the_capabilities_it_is_given() {
    let network = NetworkSpec { name: unique_name("dbt-throwaway-net"), labels: HashMap::new() };
    let _network_cleanup = NetworkGuard(network.name.clone());
    let container = ContainerGuard(unique_name("dbt-throwaway"));
    let throwaway = redis_throwaway(&container.0, &network, &["SETGID", "SETUID"]);

    Runtime::new(None).run_throwaway(throwaway).await.expect("the throwaway runs");

    let inspect = docker().await.inspect_container(&container.0, None::<InspectContainerOptions>).await.unwrap();
    let host = inspect.host_config.unwrap();
    assert_keeps_only("the throwaway", &host, &["SETGID", "SETUID"]);
    let network = docker().await.inspect_network(&network.name, None::<InspectNetworkOptions>).await.unwrap();
    assert_eq!(host.network_mode, network.id);
}

/// Removes the networks named `.0` (every one, if there are several) when dropped.
struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let filters = HashMap::from([("name", vec![self.0.clone()])]);
        block_on_fresh_runtime(remove_networks(filters));
    }
}

#[tokio::test]
async fn dbrokers_sharing_a_store_that_make_the_network_at_once_make_one_with_icc_off() {
    let app = TestApp::spawn().await;
    let name = format!("{}-net", app.config.instance_prefix);
    let named = || async {
        let filters = HashMap::from([("name", vec![name.clone()])]);
        let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
        let networks = docker().await.list_networks(Some(options)).await.unwrap();
        networks.into_iter().filter(|n| n.name.as_deref() == Some(name.as_str())).collect::<Vec<_>>()
    };
    assert_eq!(named().await.len(), 1, "a dbroker makes its network when it starts");
    // Four processes on one store: a store, a Docker client and a provisioner each, so that none
    // waits for another's lock. (Docker 20.10 makes two networks of one name when asked at once.)
    let config = std::sync::Arc::new(app.config.clone());
    let key = MasterKey::load(&config.master_key, &config.data_dir, false).unwrap();
    let mut processes = Vec::new();
    for _ in 0..4 {
        let store = Store::open(&config.database_url).await.unwrap();
        processes.push(Provisioner::new(
            store,
            Runtime::new(None),
            key.clone(),
            config.clone(),
            Default::default(),
            None,
        ));
    }
    for round in 0..10 {
        // No container is on it yet: as on a host where it was never made.
        remove_networks(HashMap::from([("name", vec![name.clone()])])).await;

        let made = join_all(processes.iter().map(Provisioner::prepare_network)).await;

        assert!(made.iter().all(Result::is_ok), "round {round}: {made:?}");
        let networks = named().await;
        assert_eq!(networks.len(), 1, "round {round}: one network, not one per process");
        let options = networks[0].options.clone().unwrap_or_default();
        assert_eq!(options.get("com.docker.network.bridge.enable_icc").map(String::as_str), Some("false"));
    }
}

#[tokio::test]
async fn a_container_the_reconciler_recreates_joins_dbrokers_network_with_its_profiles_capabilities() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let container = app.container_of(&instance);
    let (port, password) = port_and_password(&instance);
    // Removed behind dbroker's back: the reconciler makes it again from the instance's record, as
    // it would a container made before dbroker had a network of its own.
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    docker().await.remove_container(&container, Some(options)).await.unwrap();

    wait_until("the container to be recreated", DEADLINE, || async { redis_connect(port, &password).await.ok() }).await;

    let inspect = docker().await.inspect_container(&container, None::<InspectContainerOptions>).await.unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.network_mode, network_of(&app).await.id);
    assert_keeps_only("redis, recreated", &host, profile(Engine::Redis).capabilities);
}

#[tokio::test]
async fn a_container_starts_while_a_second_network_of_its_networks_name_exists() {
    let network = NetworkSpec { name: unique_name("dbt-duplicate-net"), labels: HashMap::new() };
    let _network_cleanup = NetworkGuard(network.name.clone());
    let container = ContainerGuard(unique_name("dbt-duplicate"));
    let runtime = Runtime::new(None);
    runtime.ensure_network(&network).await.expect("the network");
    // A second network of the name, as a process that made it at the same moment leaves for a while.
    // Docker 20.10 makes it; newer engines refuse it, and then there is nothing to test.
    let duplicate = bollard::models::NetworkCreateRequest { name: network.name.clone(), ..Default::default() };
    if docker().await.create_network(duplicate).await.is_err() {
        return;
    }
    let throwaway = redis_throwaway(&container.0, &network, profile(Engine::Redis).capabilities);

    let started = runtime.run_throwaway(throwaway).await;

    assert!(started.is_ok(), "started beside a duplicate network: {started:?}");
}
