//! No secret ever appears in a log line: dbroker's whole log, at trace level, through creates,
//! rotations, a failure and deletes, holds none of the passwords it handed out, nor a token.

use std::process::Stdio;

use serde_json::{Value, json};

use crate::helpers::{PrefixGuard, TestStore, free_port, image, unique_name, wait_for_api};

#[tokio::test]
async fn dbrokers_log_at_trace_level_holds_no_password_and_no_token() {
    let prefix = unique_name("dbt-logs");
    let _cleanup = PrefixGuard(prefix.clone());
    let data_dir = tempfile::tempdir().unwrap();
    let log_path = data_dir.path().join("dbroker.log");
    let token = "a-token-that-must-not-be-logged";
    let store = TestStore::new().await;
    let (mut command, base) = store.serve_in(&data_dir.path().join("data"), &prefix, token, free_port());
    let mut server = command
        .args(["--config", concat!(env!("CARGO_MANIFEST_DIR"), "/dbroker.offline.toml")])
        .env("DBROKER_REDIS_IMAGE", image("redis"))
        .env("DBROKER_POSTGRES_IMAGE", image("postgres"))
        .env("RUST_LOG", "trace")
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_for_api(&base).await;
    let call = |method: reqwest::Method, path: String, body: Value| {
        let request =
            client.request(method, format!("{base}{path}")).header("Authorization", format!("Bearer {token}"));
        async move { request.json(&body).send().await.unwrap().json::<Value>().await.unwrap_or(Value::Null) }
    };

    let mut secrets = vec![token.to_string()];
    // On PostgreSQL, the store's password too: dbroker gets it in DBROKER_DATABASE_URL.
    if let dbroker::store::DatabaseUrl::Postgres(url) = &store.url {
        secrets.extend(reqwest::Url::parse(url).unwrap().password().map(str::to_string));
    }
    for engine in ["mysql", "redis", "postgres"] {
        let instance = call(reqwest::Method::POST, "/v1/instances".into(), json!({"engine": engine})).await;
        let id = instance["id"].as_str().expect("created").to_string();
        secrets.push(instance["connection"]["password"].as_str().unwrap().to_string());
        let rotated = call(reqwest::Method::POST, format!("/v1/instances/{id}/rotate-password"), json!({})).await;
        secrets.push(rotated["connection"]["password"].as_str().expect("rotated").to_string());
        call(reqwest::Method::GET, format!("/v1/instances/{id}/logs"), Value::Null).await;
        call(reqwest::Method::DELETE, format!("/v1/instances/{id}"), Value::Null).await;
    }
    std::process::Command::new("kill").args(["-TERM", &server.id().unwrap().to_string()]).status().unwrap();
    server.wait().await.unwrap();

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.lines().count() > 100, "trace level logs plenty: {} lines", log.lines().count());
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret is in dbroker's log");
    }
}
