//! Schemathesis against a real dbroker on the real engine: every operation of its OpenAPI
//! document, with valid and invalid requests (phases examples, coverage, fuzzing and stateful, the
//! last following the document's links: create, then get, stop, start, resize, rotate, delete, a
//! 202's operation polled), and every check: no 5xx, and every answer as the document says
//! (status, content type, headers, body). Once as an ordinary user (v1 and the old routes), once
//! as an admin (the admin routes). Its record of the requests (HAR) shows that it chained them:
//! an instance it created was then read, stopped and deleted. Its configuration and hooks are
//! `tests/schemathesis/`: the token reaches it through the environment, never a command line.
//!
//! It creates real containers, so its cost is bounded: few examples, one worker, a time budget
//! per run, and a quota that lets the user hold four instances of 1 GiB in all (most creates it
//! draws are refused with 403, a MySQL one mostly, so Redis and PostgreSQL are the ones it makes;
//! in the stateful phase, the hooks ask for 256 MiB at most, so that its chains can begin).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{ALICE, OPERATION_DEADLINE, TestApp, docker, wait_until};

/// `tests/schemathesis/`: schemathesis.toml and hooks.py.
const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis");

/// Test cases schemathesis draws per operation and phase, and the time each run may take (the
/// fuzzing and stateful phases repeat until it is spent).
const MAX_EXAMPLES: &str = "10";
const USER_RUN: Duration = Duration::from_secs(70);
const USER_STATEFUL_RUN: Duration = Duration::from_secs(50);
/// Stateful runs, each with the quota's room of its own, until their chains have read, stopped and
/// deleted a created instance: one is enough on a quiet machine; on a busy one a run's budget may
/// end before the last link of its chains.
const MOST_STATEFUL_RUNS: usize = 3;
const LINKS: [(&str, &str); 3] = [("GET", ""), ("POST", "/stop"), ("DELETE", "")];
const ADMIN_RUN: Duration = Duration::from_secs(40);

/// Every phase but the stateful one, which runs on its own (see the test).
const STATELESS: &str = "examples,coverage,fuzzing";
const EVERY_PHASE: &str = "examples,coverage,fuzzing,stateful";

/// The `schemathesis` command beside `DBROKER_TEST_PYTHON`, the interpreter of the suite's own
/// environment (`scripts/python-env`).
fn schemathesis() -> PathBuf {
    let python = std::env::var_os("DBROKER_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "DBROKER_TEST_PYTHON is not set: run the tests with scripts/test, or set it to the interpreter \
             that scripts/python-env prints"
        )
    });
    let command = Path::new(&python).with_file_name("schemathesis");
    assert!(
        command.is_file(),
        "no schemathesis beside DBROKER_TEST_PYTHON ({}): run scripts/python-env",
        command.display()
    );
    command
}

/// What a run printed, whether it found nothing, and the requests it sent (its HAR report).
struct Run {
    passed: bool,
    report: String,
    har: Value,
}

/// Runs schemathesis's `phases` against `app` as the user of `token`, on the operations
/// `selection` picks (its filter options), for at most `budget`.
async fn run_schemathesis(app: &TestApp, token: &str, phases: &str, selection: &[&str], budget: Duration) -> Run {
    // Its working directory, where it keeps its cache and reports: nothing lands in the tree.
    let workdir = tempfile::tempdir().expect("a working directory");
    let har = workdir.path().join("requests.har");
    let output = tokio::process::Command::new(schemathesis())
        .current_dir(workdir.path())
        .env("DBROKER_SCHEMATHESIS_TOKEN", token)
        .env("SCHEMATHESIS_HOOKS", format!("{CONFIG_DIR}/hooks.py"))
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(format!("{CONFIG_DIR}/schemathesis.toml"))
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", "all", "--phases", phases])
        // One worker: with more, the threads' `ast.parse` (Hypothesis describing its strategies)
        // hits a race of CPython 3.11 ("AST constructor recursion depth mismatch") now and then.
        .args(["--max-examples", MAX_EXAMPLES, "--workers", "1"])
        .args(["--max-time", &budget.as_secs().to_string()])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .args(selection)
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis runs");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let har = std::fs::read_to_string(&har).ok().and_then(|har| serde_json::from_str(&har).ok()).unwrap_or_default();
    Run { passed: output.status.success(), report, har }
}

/// The requests of `har` on an instance that a create had answered with (its 201's id, or its
/// 202's instance_id), and that reached it (neither 401 nor 404), as (method, the path after the
/// instance's): the links the stateful phase followed.
fn chained(har: &Value) -> BTreeSet<(String, String)> {
    let entries = har["log"]["entries"].as_array().cloned().unwrap_or_default();
    let mut created = BTreeSet::new();
    let mut chained = BTreeSet::new();
    for entry in &entries {
        let method = entry["request"]["method"].as_str().unwrap_or_default();
        let url = entry["request"]["url"].as_str().unwrap_or_default();
        let path = url.splitn(4, '/').nth(3).map(|p| format!("/{}", p.split('?').next().unwrap_or_default()));
        let status = entry["response"]["status"].as_u64().unwrap_or_default();
        let body: Value = entry["response"]["content"]["text"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        let Some(path) = path else { continue };
        if method == "POST" && path == "/v1/instances" {
            let id = if status == 202 { &body["instance_id"] } else { &body["id"] };
            created.extend(id.as_str().map(String::from));
        } else if let Some(rest) = path.strip_prefix("/v1/instances/")
            && let Some((id, after)) = rest.split_at_checked(12)
            && created.contains(id)
            && ![401, 404].contains(&status)
        {
            chained.insert((method.to_string(), after.to_string()));
        }
    }
    chained
}

#[tokio::test]
async fn schemathesis_finds_nothing_as_a_user_or_as_an_admin_and_the_run_leaves_nothing_behind() {
    let started = Instant::now();
    let app = TestApp::spawn_with(|config| {
        // Not throttled into 429s (the rate-limit tests cover them); few containers at once.
        config.rate_limits = dbroker::config::RateLimits { reads: None, changes: None };
        config.quotas.instances = 4;
        config.quotas.memory_mb = 1024;
    })
    .await;
    let prefix = app.config.instance_prefix.clone();
    let admin = app.add_admin("root").await;

    let as_user = ["--exclude-path-regex", "^/v1/admin/"];
    let user = run_schemathesis(&app, ALICE, STATELESS, &as_user, USER_RUN).await;
    // The stateful phase's chains are an instance's life (create, get, stop, delete): the routes of
    // its backups, which the phases above and tests/api/backups.rs cover, would take most of its
    // budget (an instance links to eight of them), and under load its runs chained no get at all.
    let lifecycle = [
        "--exclude-path-regex",
        r"^/v1/(admin/|backups|instances/\{id\}/(backups|backup-policy|restore|clone|export|import))",
    ];
    // The stateful phase on its own, with a budget and the quota's room of its own: run last in
    // one budget, a busy machine spent all of it before, and the instances fuzzing made filled
    // the quota, so that no create of its chains got through.
    let mut stateful_runs = Vec::new();
    let mut chained = BTreeSet::new();
    while stateful_runs.len() < MOST_STATEFUL_RUNS && !LINKS.iter().all(|&(m, a)| chained.contains(&link(m, a))) {
        delete_every_instance_of(&app, ALICE).await;
        let run = run_schemathesis(&app, ALICE, "stateful", &lifecycle, USER_STATEFUL_RUN).await;
        chained.extend(self::chained(&run.har));
        stateful_runs.push(run);
    }
    let admin = run_schemathesis(&app, &admin, EVERY_PHASE, &["--include-path-regex", "^/v1/admin/"], ADMIN_RUN).await;
    drop(app);
    let left = leftovers(&prefix).await;
    eprintln!("schemathesis: both runs and the cleanup took {:?}", started.elapsed());

    let stateful_reports: Vec<_> = stateful_runs.iter().map(|run| run.report.as_str()).collect();
    assert!(
        user.passed && stateful_runs.iter().all(|run| run.passed) && admin.passed,
        "schemathesis found something.\n--- as a user ---\n{}\n--- as a user, stateful ---\n{}\n--- as an admin ---\n{}",
        user.report,
        stateful_reports.join("\n---\n"),
        admin.report
    );
    for (method, after) in LINKS {
        assert!(
            chained.contains(&link(method, after)),
            "no {method} /v1/instances/{{id}}{after} on a created instance in {} stateful runs: {chained:?}\n{}",
            stateful_runs.len(),
            stateful_reports.join("\n---\n")
        );
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A link the stateful phase follows, as `chained` records it.
fn link(method: &str, after: &str) -> (String, String) {
    (method.to_string(), after.to_string())
}

/// Deletes every instance `user` has, through the API. A create schemathesis asked to answer at
/// once may still be running: its instance is deleted once that operation has ended (409 till then).
async fn delete_every_instance_of(app: &TestApp, user: &str) {
    let token = format!("Bearer {user}");
    let (_, list) = app.get("/v1/instances", &token).await;
    for instance in list["instances"].as_array().expect("a list") {
        let id = instance["id"].as_str().expect("an id");
        let path = format!("/v1/instances/{id}");
        wait_until(&format!("{id} to be deleted once its operation has ended"), OPERATION_DEADLINE, || async {
            let (status, body) = app.delete(&path, &token).await;
            if status == StatusCode::CONFLICT {
                return None;
            }
            assert!(status.is_success(), "deleting {id}: {status} {body}");
            Some(())
        })
        .await;
    }
}

/// The containers, volumes and networks of `prefix` that exist.
async fn leftovers(prefix: &str) -> Vec<String> {
    use bollard::query_parameters::{
        ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    };
    let docker = docker().await;
    let label = std::collections::HashMap::from([("label", vec![format!("dbroker.prefix={prefix}")])]);
    let by_name = std::collections::HashMap::from([("name", vec![format!("{prefix}-")])]);
    let mut left = Vec::new();
    let containers =
        docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&label).build()));
    for container in containers.await.expect("list containers") {
        left.extend(container.names.unwrap_or_default());
    }
    for filters in [&label, &by_name] {
        let volumes = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(filters).build()));
        left.extend(volumes.await.expect("list volumes").volumes.unwrap_or_default().into_iter().map(|v| v.name));
        let networks = docker.list_networks(Some(ListNetworksOptionsBuilder::default().filters(filters).build()));
        left.extend(networks.await.expect("list networks").into_iter().filter_map(|n| n.name));
    }
    left
}
