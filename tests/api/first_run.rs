//! A newcomer's first run: `scripts/run` gives a dbroker whose creates work on this host, whether
//! or not it reaches a container registry, and a started dbroker says which images it runs and
//! whether each is here.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbroker::config::Catalogue;
use dbroker::model::Engine;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{
    ALICE, PrefixGuard, TestStore, free_port, image, port_and_password, redis_connect, unique_name, wait_for_api,
    wait_until,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/run");

/// How long a started dbroker may take to have logged its start-up.
const LOG_DEADLINE: Duration = Duration::from_secs(30);

/// How long `scripts/run` may take to be serving: on a host without the offline images it builds
/// them (about a minute and a half here).
const RUN_DEADLINE: Duration = Duration::from_secs(600);

/// The lines a child writes on stderr, collected as they come (so that its pipe never fills),
/// for a test to wait for one.
#[derive(Default)]
struct Stderr(Arc<Mutex<Vec<String>>>);

impl Stderr {
    fn collect(child: &mut tokio::process::Child) -> Stderr {
        let stderr = Stderr::default();
        let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let collected = stderr.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        stderr
    }

    /// The first line that contains `text`, once it has been written.
    async fn line_with(&self, text: &str, deadline: Duration) -> String {
        let what = format!("a line with {text:?} on stderr");
        wait_until(&what, deadline, || async { self.0.lock().unwrap().iter().find(|l| l.contains(text)).cloned() })
            .await
    }
}

#[tokio::test]
async fn a_started_dbroker_names_each_image_it_runs_and_whether_this_host_has_it() {
    let prefix = unique_name("dbt-catalogue-log");
    let _cleanup = PrefixGuard(prefix.clone());
    let store = TestStore::new().await;
    let missing = format!("dbroker-local/no-such-image:{prefix}");
    let (mut command, _base) = store.serve(&prefix, ALICE, free_port());

    let mut server =
        command.env("DBROKER_REDIS_IMAGE", &missing).env("RUST_LOG", "info").stderr(Stdio::piped()).spawn().unwrap();
    let stderr = Stderr::collect(&mut server);

    stderr.line_with("dbroker listening", LOG_DEADLINE).await;

    let present = stderr.line_with("catalogue: mysql 8.0 (default) →", LOG_DEADLINE).await;
    assert!(present.ends_with(&format!("→ {} (present)", image("mysql"))), "{present}");
    let absent = stderr.line_with("catalogue: redis 7.2 (default) →", LOG_DEADLINE).await;
    assert!(absent.ends_with(&format!("→ {missing} (not on this host: pulled on first use)")), "{absent}");
    let other = stderr.line_with("catalogue: redis 6.2 →", LOG_DEADLINE).await;
    assert!(other.contains("→ redis:6.2 ("), "every version is named, not only the default: {other}");
}

#[tokio::test]
async fn scripts_run_serves_a_dbroker_whose_creates_work_on_this_host() {
    // Redis is left to the script: its official image if this host has it or can pull it, else
    // the offline one. MySQL and PostgreSQL are set, as a caller may, so that a host that reaches a
    // registry pulls only Redis's small image for this test.
    let prefix = unique_name("dbt-run");
    let _cleanup = PrefixGuard(prefix.clone());
    let data_dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let first_port = free_port();
    let mut run = tokio::process::Command::new(SCRIPT);
    run.args(["--demo-users", ALICE, "--listen", &listen, "--instance-prefix", &prefix])
        .arg("--data-dir")
        .arg(data_dir.path())
        .arg(format!("--port-range={first_port}-{}", first_port + 9))
        .env("DBROKER_BIN", env!("CARGO_BIN_EXE_dbroker"))
        .env("DBROKER_METRICS_LISTEN", "127.0.0.1:0")
        .env("DBROKER_MYSQL_IMAGE", image("mysql"))
        .env("DBROKER_POSTGRES_IMAGE", image("postgres"))
        .env_remove("DBROKER_REDIS_IMAGE")
        .env_remove("DBROKER_CONFIG")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut server = run.spawn().expect("scripts/run starts");
    let stderr = Stderr::collect(&mut server);
    let base = format!("http://{listen}");
    stderr.line_with("dbroker listening", RUN_DEADLINE).await;
    wait_for_api(&base).await;

    let response = reqwest::Client::new()
        .post(format!("{base}/v1/instances"))
        .header("Authorization", ALICE)
        .json(&json!({"engine": "redis"}))
        .send()
        .await
        .unwrap();

    let status = response.status();
    let instance: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{instance}");
    let redis = stderr.line_with("catalogue: redis 7.2 (default) →", LOG_DEADLINE).await;
    assert!(redis.ends_with("(present)"), "the script made Redis's image available: {redis}");
    assert!(redis.contains(&format!("→ {} (", instance["image"].as_str().unwrap())), "{redis} vs {instance}");
    let (port, password) = port_and_password(&instance);
    let mut conn = redis_connect(port, &password).await.expect("the instance accepts its password");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn scripts_run_tries_the_official_images_of_the_built_in_catalogue() {
    let script = std::fs::read_to_string(SCRIPT).unwrap();
    let builtin = Catalogue::builtin();

    for engine in Engine::ALL {
        let catalogue = builtin.engine(engine);
        let image = &catalogue.versions[&catalogue.default_version].image;
        let line = format!("\n{engine} {image}\n");
        assert!(script.contains(&line), "scripts/run lists {engine}'s default image {image}");
    }
}

#[test]
fn the_scripts_parse_and_pass_shellcheck() {
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
    let mut names: Vec<_> = std::fs::read_dir(scripts).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();

    for script in &names {
        let parsed = std::process::Command::new("bash").arg("-n").arg(script).output().unwrap();
        assert!(parsed.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&parsed.stderr));
    }
    // -x -P SCRIPTDIR: follow what a script sources, as it would (scripts/images reads its recipe).
    match std::process::Command::new("shellcheck").args(["-x", "-P", "SCRIPTDIR"]).args(&names).output() {
        Ok(checked) => assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout)),
        Err(_) => eprintln!("shellcheck is not installed (apt-get install shellcheck): only bash -n was run"),
    }
}
