//! A user sees and touches only their own instances; another user's is a 404, as if it did not exist.
//! Nor can one tenant's server reach another's over the network (dbroker's own bridge network has
//! inter-container communication off), and each container keeps only the capabilities its
//! engine's entrypoint needs.

use std::collections::{BTreeSet, HashMap};

use bollard::query_parameters::{EventsOptionsBuilder, InspectContainerOptions, InspectNetworkOptions};
use dbroker::engines::profile;
use dbroker::model::Engine;
use dbroker::runtime::{NetworkSpec, Runtime, Throwaway};
use futures_util::StreamExt;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ALICE, BOB, ContainerGuard, TestApp, docker, image, remove_networks, unique_name};
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

/// The ids of the containers labelled `label` whose name starts with `prefix` that were created
/// between `since` and now, from Docker's events (they may be long gone).
async fn created_containers(label: &str, prefix: &str, since: &str) -> Vec<String> {
    let filters = HashMap::from([
        ("type", vec!["container".to_string()]),
        ("event", vec!["create".into()]),
        ("label", vec![label.to_string()]),
    ]);
    container_events(filters, since)
        .await
        .into_iter()
        .filter_map(|attributes| {
            attributes.get("name").filter(|name| name.starts_with(prefix))?;
            attributes.get("id").cloned()
        })
        .collect()
}

/// The attributes of the events `filters` matches from `since` until now, each with the actor's
/// id as `id`.
async fn container_events(filters: HashMap<&str, Vec<String>>, since: &str) -> Vec<HashMap<String, String>> {
    let until = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 1;
    let options = EventsOptionsBuilder::default().since(since).until(&until.to_string()).filters(&filters).build();
    let events: Vec<_> = docker().await.events(Some(options)).collect().await;
    events
        .into_iter()
        .filter_map(|event| {
            let actor = event.ok()?.actor?;
            let mut attributes = actor.attributes.unwrap_or_default();
            attributes.insert("id".into(), actor.id?);
            Some(attributes)
        })
        .collect()
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
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();

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

    let network =
        docker().await.inspect_network(&format!("{prefix}-net"), None::<InspectNetworkOptions>).await.unwrap();
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
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]), "{engine}");
        let kept: BTreeSet<String> = host.cap_add.unwrap_or_default().into_iter().collect();
        let wanted: BTreeSet<String> = profile(*engine).capabilities.iter().map(|c| c.to_string()).collect();
        assert_eq!(kept, wanted, "{engine}");
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_string()]), "{engine}");
        assert_eq!(host.network_mode, Some(network_id.clone()), "{engine}: on dbroker's network only");
        if *engine != Engine::Redis {
            let image = docker().await.inspect_image(&inspect.image.unwrap()).await.unwrap();
            let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
            assert!(labels.contains_key("dbroker.template-of"), "{engine} runs a template's copy");
        }
    }
    // The template builds ran on the same network.
    let joined: Vec<String> = container_events(
        HashMap::from([
            ("type", vec!["network".to_string()]),
            ("event", vec!["connect".into()]),
            ("network", vec![network_id.clone()]),
        ]),
        &since,
    )
    .await
    .into_iter()
    .filter_map(|attributes| attributes.get("container").cloned())
    .collect();
    let builds =
        created_containers(&format!("dbroker.prefix={prefix}"), &format!("{prefix}-template-build-"), &since).await;
    assert_eq!(builds.len(), 2, "MariaDB's and PostgreSQL's template builds");
    assert!(builds.iter().all(|build| joined.contains(build)), "the template builds joined {prefix}-net");
}

#[tokio::test]
async fn a_throwaway_container_joins_the_network_it_is_given_with_only_the_capabilities_it_is_given() {
    let network = NetworkSpec { name: unique_name("dbt-throwaway-net"), labels: HashMap::new() };
    let _network_cleanup = NetworkGuard(network.name.clone());
    let container = ContainerGuard(unique_name("dbt-throwaway"));
    let throwaway = Throwaway {
        name: container.0.clone(),
        image: image("redis"),
        env: Vec::new(),
        args: Vec::new(),
        container_port: 6379,
        labels: HashMap::new(),
        memory_bytes: 64 * 1024 * 1024,
        network: network.clone(),
        capabilities: &["SETGID", "SETUID"],
    };

    Runtime::new(None).run_throwaway(throwaway).await.expect("the throwaway runs");

    let inspect = docker().await.inspect_container(&container.0, None::<InspectContainerOptions>).await.unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host.cap_add, Some(vec!["SETGID".to_string(), "SETUID".to_string()]));
    let network = docker().await.inspect_network(&network.name, None::<InspectNetworkOptions>).await.unwrap();
    assert_eq!(host.network_mode, network.id);
}

/// Removes the networks named `.0` (every one, if there are several) when dropped.
struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let filters = HashMap::from([("name", vec![self.0.clone()])]);
        crate::helpers::block_on_fresh_runtime(remove_networks(filters));
    }
}

#[tokio::test]
async fn processes_that_make_the_network_at_once_all_end_up_on_one_network_with_icc_off() {
    for round in 0..3 {
        let network = NetworkSpec {
            name: unique_name(&format!("dbt-race-net-{round}")),
            labels: HashMap::from([("dbroker.prefix".to_string(), "dbt-race".to_string())]),
        };
        let _cleanup = NetworkGuard(network.name.clone());
        // A runtime each, as separate processes have: none waits for another's lock.
        let runtimes: Vec<Runtime> = (0..4).map(|_| Runtime::new(None)).collect();

        let ids = join_all(runtimes.iter().map(|runtime| runtime.ensure_network(&network))).await;

        let ids: BTreeSet<String> = ids.into_iter().map(|id| id.expect("the network is there")).collect();
        assert_eq!(ids.len(), 1, "round {round}: every process got the same network: {ids:?}");
        let filters = HashMap::from([("name", vec![network.name.clone()])]);
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::default().filters(&filters).build();
        let named: Vec<_> = docker().await.list_networks(Some(options)).await.unwrap();
        assert_eq!(named.len(), 1, "round {round}: one network of the name is left");
        assert_eq!(named[0].id.as_ref(), ids.first());
        let options = named[0].options.clone().unwrap_or_default();
        assert_eq!(options.get("com.docker.network.bridge.enable_icc").map(String::as_str), Some("false"));
        assert_eq!(named[0].labels.clone().unwrap_or_default(), network.labels);
    }
}

#[tokio::test]
async fn a_container_the_reconciler_recreates_joins_dbrokers_network_with_its_profiles_capabilities() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let container = app.container_of(&instance);
    let (port, password) = crate::helpers::port_and_password(&instance);
    // Removed behind dbroker's back: the reconciler makes it again from the instance's record, as
    // it would a container made before dbroker had a network of its own.
    let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
    docker().await.remove_container(&container, Some(options)).await.unwrap();

    crate::helpers::wait_until("the container to be recreated", std::time::Duration::from_secs(60), || async {
        crate::helpers::redis_connect(port, &password).await.ok()
    })
    .await;

    let inspect = docker().await.inspect_container(&container, None::<InspectContainerOptions>).await.unwrap();
    let host = inspect.host_config.unwrap();
    let network = docker()
        .await
        .inspect_network(&format!("{}-net", app.config.instance_prefix), None::<InspectNetworkOptions>)
        .await
        .unwrap();
    assert_eq!(host.network_mode, network.id);
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    let kept: Vec<String> = host.cap_add.unwrap_or_default();
    assert_eq!(kept, profile(Engine::Redis).capabilities.iter().map(|c| c.to_string()).collect::<Vec<_>>());
}
