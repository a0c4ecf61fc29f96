//! `/metrics`, on a listener of its own, read by the parser of Prometheus's own Python client
//! (`parse_metrics.py`) after real events: a create, a create that fails, a container removed and
//! repaired, and the Docker engine gone away.

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use bollard::query_parameters::RemoveContainerOptionsBuilder;
use dbroker::model::Engine;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::helpers::{ALICE, DockerProxy, TestApp, docker, image, wait_until};
use crate::pool::catalogue_with_pool;

const DEADLINE: Duration = Duration::from_secs(60);
const MIB: f64 = 1024.0 * 1024.0;

/// One family as `parse_metrics.py` prints it.
#[derive(Debug, Deserialize)]
struct Family {
    #[serde(rename = "type")]
    kind: String,
    help: String,
    samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// A scrape, parsed: families by name (a counter's without its `_total`, as the parser names it).
struct Scrape(HashMap<String, Family>);

impl Scrape {
    fn family(&self, name: &str) -> &Family {
        self.0.get(name).unwrap_or_else(|| panic!("no family {name}; there are {:?}", self.0.keys()))
    }

    /// The value of `family`'s sample `sample` whose labels include `labels`.
    fn value(&self, family: &str, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let has = |s: &&Sample| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v));
        self.family(family).samples.iter().filter(|s| s.name == sample).find(has).map(|s| s.value)
    }

    /// The value of a family of one sample, its name the family's.
    fn single(&self, family: &str) -> f64 {
        self.value(family, family, &[]).unwrap_or_else(|| panic!("{family} has no value"))
    }
}

/// `GET /metrics` on the app's metrics listener.
async fn scrape_text(app: &TestApp) -> String {
    let response = app.client.get(format!("{}/metrics", app.metrics_address)).send().await.expect("/metrics answers");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    response.text().await.unwrap()
}

/// `text` read by prometheus_client's parser, in the Python that `scripts/test` prepares.
fn parse(text: &str) -> Scrape {
    let python = std::env::var("DBROKER_TEST_PYTHON").expect(
        "DBROKER_TEST_PYTHON is not set: it names the Python that has prometheus_client. Run the tests with \
         scripts/test, which makes that environment (scripts/python-env) and sets it",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/parse_metrics.py");
    let mut parser = std::process::Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    // The script reads all of its input before it writes anything: no pipe fills up.
    parser.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = parser.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "prometheus_client could not parse /metrics: {stderr}\n{text}");
    Scrape(serde_json::from_slice(&output.stdout).expect("the parser prints JSON"))
}

#[tokio::test]
async fn after_a_create_a_failure_a_repair_and_the_engine_gone_metrics_parse_with_every_family_and_no_identity() {
    let mut proxy = DockerProxy::new();
    proxy.up();
    let host = proxy.host();
    // The Redis image as MySQL's: redis-server refuses MySQL's character set option and exits, so
    // a MySQL create fails. A warm pool of one PostgreSQL, which no create here claims.
    let app = TestApp::spawn_with(|c| {
        c.docker_host = Some(host);
        c.catalogue = catalogue_with_pool(&[Engine::Postgres], 1);
        c.catalogue.set_default_image(Engine::Mysql, image("redis"));
    })
    .await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let id = instance["id"].as_str().unwrap();
    let container = app.container_of(&instance);
    let (failed, body) = app.post("/v1/instances", ALICE, json!({"engine": "mysql", "charset": "latin1"})).await;
    assert_eq!(failed, StatusCode::BAD_GATEWAY, "{body}");
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    docker().await.remove_container(&container, Some(options)).await.expect("the container is removed");
    wait_until("the repair to be counted and the pool filled", DEADLINE, || async {
        let text = scrape_text(&app).await;
        let repaired = text.contains(r#"dbroker_repairs_total{repair="recreate_container"} 1"#);
        let pool = text.contains(r#"dbroker_pool_members{engine="postgres",version="15",status="running"} 1"#);
        (repaired && pool).then_some(())
    })
    .await;
    let (listed, _) = app.get("/v1/instances", ALICE).await;
    let (detail, _) = app.get(&format!("/v1/instances/{id}"), ALICE).await;
    let metrics_on_the_api = app.client.get(app.url("/metrics")).send().await.unwrap().status();
    let api_on_metrics =
        app.client.get(format!("{}/v1/instances", app.metrics_address)).bearer_auth(ALICE).send().await.unwrap();
    proxy.down();
    let (refused, body) = app.post("/v1/instances", ALICE, json!({"engine": "redis"})).await;

    // A scrape reads the store only: it answers with the engine gone.
    let text = scrape_text(&app).await;
    let scrape = parse(&text);
    proxy.up();

    assert_eq!((listed, detail), (StatusCode::OK, StatusCode::OK));
    assert_eq!(refused, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(metrics_on_the_api, StatusCode::NOT_FOUND, "/metrics is not on the API's listener");
    assert_eq!(api_on_metrics.status(), StatusCode::NOT_FOUND, "the API is not on the metrics listener");

    let http = "dbroker_http_request_duration_seconds";
    assert_eq!(scrape.family(http).kind, "histogram");
    let requests = |method, route, status| {
        scrape.value(http, &format!("{http}_count"), &[("method", method), ("route", route), ("status", status)])
    };
    assert_eq!(requests("POST", "/v1/instances", "201"), Some(1.0));
    assert_eq!(requests("POST", "/v1/instances", "502"), Some(1.0));
    assert_eq!(requests("POST", "/v1/instances", "503"), Some(1.0));
    assert_eq!(requests("GET", "/v1/instances", "200"), Some(1.0));
    assert_eq!(requests("GET", "/v1/instances/{id}", "200"), Some(1.0), "by route template, not by path");
    assert_eq!(requests("GET", "unmatched", "404"), Some(1.0));

    let operations = "dbroker_operation_duration_seconds";
    assert_eq!(scrape.family(operations).kind, "histogram");
    let ended = |kind, engine, outcome| {
        scrape.value(
            operations,
            &format!("{operations}_count"),
            &[("kind", kind), ("engine", engine), ("outcome", outcome)],
        )
    };
    assert_eq!(ended("create", "redis", "succeeded"), Some(1.0));
    assert_eq!(ended("create", "mysql", "failed"), Some(1.0), "the create that did not start");
    assert_eq!(ended("create", "redis", "failed"), Some(1.0), "the create without an engine");
    assert_eq!(ended("repair", "redis", "succeeded"), Some(1.0));
    let steps = "dbroker_create_step_duration_seconds";
    let step = |step, engine| scrape.value(steps, &format!("{steps}_count"), &[("step", step), ("engine", engine)]);
    for name in ["image ready", "container created", "started", "ready"] {
        assert_eq!(step(name, "redis"), Some(1.0), "{name}");
    }
    assert_eq!(step("started", "mysql"), Some(1.0));
    assert_eq!(step("ready", "mysql"), None, "the failed create never got there");

    let passes = "dbroker_reconciler_passes";
    assert_eq!(scrape.family(passes).kind, "counter");
    assert!(scrape.value(passes, "dbroker_reconciler_passes_total", &[("outcome", "done")]).unwrap() >= 1.0);
    let repaired = scrape.value("dbroker_repairs", "dbroker_repairs_total", &[("repair", "recreate_container")]);
    assert_eq!(repaired, Some(1.0));
    let docker_errors = ("dbroker_docker_errors", "dbroker_docker_errors_total");
    let unreachable =
        scrape.value(docker_errors.0, docker_errors.1, &[("call", "inspect_image"), ("error", "unreachable")]);
    assert!(unreachable.unwrap_or_default() >= 1.0, "{:?}", scrape.family(docker_errors.0));

    let instances = |engine, status| {
        scrape.value("dbroker_instances", "dbroker_instances", &[("engine", engine), ("status", status)])
    };
    assert_eq!(instances("redis", "running"), Some(1.0));
    assert_eq!(instances("mysql", "running"), Some(0.0), "every engine and status, zeros included");
    let pool = &[("engine", "postgres"), ("version", "15")];
    let members =
        scrape.value("dbroker_pool_members", "dbroker_pool_members", &[pool[0], pool[1], ("status", "running")]);
    assert_eq!(members, Some(1.0));
    assert_eq!(scrape.value("dbroker_pool_target_members", "dbroker_pool_target_members", pool), Some(1.0));
    assert_eq!(instances("postgres", "running"), Some(0.0), "pool members are not users' instances");
    assert_eq!(ended("create", "postgres", "succeeded"), Some(1.0), "the pool member's");
    assert_eq!(scrape.single("dbroker_instances_needing_attention"), 0.0);
    assert_eq!(scrape.single("dbroker_ports_in_range"), 30.0);
    assert_eq!(scrape.single("dbroker_ports_free"), 28.0, "the Redis and the pool member hold one each");
    assert_eq!(scrape.single("dbroker_quota_instances_held"), 1.0);
    let pool_member_mb = app.config.catalogue.engine(Engine::Postgres).memory.default.0;
    let memory_mb = instance["memory_mb"].as_f64().unwrap() + f64::from(pool_member_mb);
    assert_eq!(scrape.single("dbroker_host_memory_capped_bytes"), memory_mb * MIB, "the pool's count too");
    assert!(scrape.single("dbroker_host_memory_budget_bytes") > memory_mb * MIB);
    assert_eq!(scrape.single("dbroker_reconciler_leader"), 1.0);
    assert!(scrape.single("process_resident_memory_bytes") > MIB);
    assert!(scrape.single("process_open_fds") > 2.0);

    for (name, family) in &scrape.0 {
        assert!(name.starts_with("dbroker_") || name.starts_with("process_"), "{name}");
        assert!(!family.help.is_empty(), "{name} has help");
        for sample in &family.samples {
            for value in sample.labels.values() {
                for identity in [id, ALICE, &container, &app.config.instance_prefix] {
                    assert!(!value.contains(identity), "{} has a label naming {identity}: {value}", sample.name);
                }
            }
        }
    }
}
